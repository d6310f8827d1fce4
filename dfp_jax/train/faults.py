"""Stopping a run cleanly: stop signals, and NaN/inf caught in the updates."""

import signal
import threading
from typing import Callable, List, Optional, Tuple

import numpy as np

from dfp_jax import parallel


class Interrupted(Exception):
  """SIGTERM/SIGINT arrived; the run saved a checkpoint and stopped."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.signum = signum


class NonFiniteError(Exception):
  """A loss or the parameters became NaN/inf (train.on_nonfinite='stop')."""


class EnvironmentFailure(Exception):
  """An environment worker died or an environment raised; the run stopped (its last
  checkpoint is intact)."""


class StopSignals:
  """Context manager: SIGTERM/SIGINT set `.signum` so the loop can save and stop cleanly.

  A second SIGINT interrupts at once. Installed only in the main thread.
  """

  def __init__(self):
    self.signum = None
    self._old = {}

  def _handle(self, signum, frame):
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


class FaultWatch:
  """Checks the 'nonfinite' flags of each dispatch one dispatch late, so the host never waits.

  With `skip`, bad updates (already undone on the device) are counted into `skipped`
  per member; otherwise `on_fault(first_step, last_step, bad_member_positions)` is called.
  """

  def __init__(self, skip: bool, on_fault: Callable[[int, int, List[int]], None],
               read: Callable = parallel.to_host):
    self.skip, self.on_fault, self.read = skip, on_fault, read  # read: flags -> this process's
    self.skipped: Optional[List[int]] = None  # the run state's counters, set by the loop
    self._pending: Optional[Tuple] = None

  def push(self, flags, steps: Tuple[int, int]):
    self.flush()
    self._pending = (flags, steps)

  def flush(self):
    if self._pending is None:
      return
    flags, (first, last) = self._pending
    self._pending = None
    bad = np.asarray(self.read(flags))
    if not bad.any():
      return
    if self.skip:
      for s in np.flatnonzero(bad):
        self.skipped[s] += int(bad[s])
    else:
      self.on_fault(first, last, [int(s) for s in np.flatnonzero(bad)])
