"""Environments of one task stepped together: in this process, or in worker processes.

A pool holds `num_slots` environments ("slots"). With `workers=0` they live
in this process and are stepped one after another, exactly as a list of
environments would be. Otherwise they are spread
over `min(workers, num_slots)` worker processes through gymnasium's vector
API (`gymnasium.vector.AsyncVectorEnv`, observations in shared memory, no
autoreset: every reset is an explicit, seeded one). Slot i lives in worker
i % W, so any contiguous range of slots (a member's training environments, a
member's evaluation episodes) is spread evenly over the workers.

The thin layer over the engine is `EnvGroup`: one gymnasium environment
holding a worker's slots, which steps the slots given an action and leaves
the others alone (a row of NaN), and resets the slots it is given seeds for.
Environments are made on first use, so slots that are never used cost nothing.

Workers ignore SIGINT and SIGTERM (a Ctrl-C or a cluster's TERM reaches the
whole process group; the trainer decides when to stop and closes the pool)
and die with the trainer (PR_SET_PDEATHSIG on Linux, else the closed pipes).
A worker that dies or whose environment raises is an `EnvWorkerError` naming
it and the slots it held.
"""

import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import warnings
from typing import Callable, Dict, Sequence, Tuple

import numpy as np


class EnvWorkerError(RuntimeError):
  """An environment worker died or its environment raised; `slots` are the ones it held."""

  def __init__(self, message: str, worker: int, slots: Sequence[int]):
    super().__init__(message)
    self.worker, self.slots = worker, tuple(slots)


def usable_cores() -> int:
  """CPU cores this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


# (obs, reward, terminated, truncated, success) of one slot after a step.
StepResult = Tuple[np.ndarray, float, bool, bool, float]


def _box(space, size: int):
  import gymnasium
  low = np.broadcast_to(space.low, (size,) + space.shape)
  high = np.broadcast_to(space.high, (size,) + space.shape)
  return gymnasium.spaces.Box(low, high, dtype=space.dtype)


def _make_group_class():
  import gymnasium

  class EnvGroup(gymnasium.Env):
    """`size` environments of one task as one gymnasium environment (one worker's slots).

    step(actions [size, A]) steps the positions whose action row is not NaN; reset takes
    `options["seeds"][index]`, a list of (position, seed), and resets those positions.
    Observations [size, O] (untouched positions keep their last one), rewards, terminated,
    truncated [size] and info {"success": [size]}.
    """

    def __init__(self, make_env: Callable, size: int, index: int, obs_space, action_space):
      self._make_env, self.size, self.index = make_env, size, index
      self.observation_space = _box(obs_space, size)
      self.action_space = _box(action_space, size)
      self._envs = [None] * size
      self._obs = np.zeros(self.observation_space.shape, self.observation_space.dtype)

    def env(self, position: int):
      if self._envs[position] is None:
        self._envs[position] = self._make_env()
      return self._envs[position]

    def reset(self, *, seed=None, options=None):
      for position, s in (options or {}).get("seeds", {}).get(self.index, ()):
        self._obs[position] = self.env(position).reset(seed=int(s))[0]
      return self._obs.copy(), {}

    def step(self, actions):
      reward = np.zeros(self.size)
      terminated = np.zeros(self.size, bool)
      truncated = np.zeros(self.size, bool)
      success = np.zeros(self.size)
      for p in range(self.size):
        if np.isnan(actions[p, 0]):
          continue
        obs, r, te, tr, info = self.env(p).step(actions[p])
        self._obs[p] = obs
        reward[p], terminated[p], truncated[p] = r, te, tr
        success[p] = float(info.get("success", 0.0))
      return self._obs.copy(), reward, terminated, truncated, {"success": success}

    def close(self):
      for env in self._envs:
        if env is not None:
          env.close()
      self._envs = [None] * self.size

  return EnvGroup


def _worker_group(owner_pid: int, make_env, size, index, obs_space, action_space):
  """Builds a worker's EnvGroup. In the worker (not the owner, where gymnasium also calls it
  once to read the spaces), first leave stopping to the trainer and die with it."""
  if os.getpid() != owner_pid:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
      with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
      if os.getppid() != owner_pid:  # the owner died before prctl
        os._exit(1)
  return _make_group_class()(make_env, size, index, obs_space, action_space)


@contextlib.contextmanager
def _quiet_gymnasium():
  """gymnasium logs a worker's traceback on several lines; the error reaches the caller as
  one EnvWorkerError instead."""
  from gymnasium import logger
  level = logger.min_level
  logger.min_level = logger.ERROR + 10
  try:
    yield
  finally:
    logger.min_level = level


class EnvPool:
  """`num_slots` environments made by `make_env()`, stepped together (module docstring).

  `first`, if given, is an already made environment used as slot 0 of a pool without
  workers (and closed by a pool with workers, which makes its own).
  """

  def __init__(self, make_env: Callable, num_slots: int, workers: int, obs_space, action_space,
               first=None, first_slot: int = 0):
    self.num_slots, self.obs_space, self.action_space = num_slots, obs_space, action_space
    self.first_slot = first_slot  # errors name slots from here (a pool that is part of a larger set)
    self.workers = min(max(workers, 0), num_slots)
    self._vector = None
    if self.workers == 0:
      self._envs = [first] + [None] * (num_slots - 1)
      self._make_env = make_env
      return
    if first is not None:
      first.close()
    self._envs = None
    import gymnasium
    from gymnasium.vector import AutoresetMode
    self.group_size = -(-num_slots // self.workers)
    self._nan = np.full((self.workers, self.group_size) + action_space.shape, np.nan,
                        action_space.dtype)
    owner = os.getpid()
    fns = [functools.partial(_worker_group, owner, make_env, self.group_size, i, obs_space,
                             action_space) for i in range(self.workers)]
    context = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with warnings.catch_warnings():  # jax warns at every fork; the workers never use jax
      warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
      self._vector = gymnasium.vector.AsyncVectorEnv(
          fns, shared_memory=True, context=context, daemon=True,
          autoreset_mode=AutoresetMode.DISABLED)

  def where(self, slot: int) -> Tuple[int, int]:
    """(worker, position in its group) of a slot."""
    if self.workers == 0:
      return 0, slot
    return slot % self.workers, slot // self.workers

  def env(self, slot: int):
    """The environment of a slot (a pool without workers only: e.g. to render it)."""
    if self._envs is None:
      raise ValueError("the environments of a pool with workers live in other processes")
    if self._envs[slot] is None:
      self._envs[slot] = self._make_env()
    return self._envs[slot]

  def reset(self, seeds: Dict[int, int]) -> Dict[int, np.ndarray]:
    """Reset the given slots with the given seeds; their first observations."""
    if not seeds:
      return {}
    if self._envs is not None:
      return {slot: self.env(slot).reset(seed=int(seed))[0] for slot, seed in seeds.items()}
    per_group: Dict[int, list] = {}
    for slot, seed in seeds.items():
      g, p = self.where(slot)
      per_group.setdefault(g, []).append((p, int(seed)))
    mask = np.zeros(self.workers, bool)
    mask[list(per_group)] = True
    obs = self._call(lambda: self._vector.reset(
        options={"seeds": per_group, "reset_mask": mask})[0])
    return {slot: obs[self.where(slot)].copy() for slot in seeds}

  def step(self, actions: Dict[int, np.ndarray]) -> Dict[int, StepResult]:
    """Step the given slots with the given actions; the others stay as they are."""
    if not actions:
      return {}
    if self._envs is not None:
      results = {}
      for slot, a in actions.items():
        obs, reward, terminated, truncated, info = self.env(slot).step(a)
        results[slot] = (obs, float(reward), bool(terminated), bool(truncated),
                         float(info.get("success", 0.0)))
      return results
    batch = self._nan.copy()
    for slot, a in actions.items():
      batch[self.where(slot)] = a
    obs, reward, terminated, truncated, info = self._call(lambda: self._vector.step(batch))
    results = {}
    for slot in actions:
      i = self.where(slot)
      results[slot] = (obs[i].copy(), float(reward[i]), bool(terminated[i]),
                       bool(truncated[i]), float(info["success"][i]))
    return results

  def _call(self, fn):
    if self._vector is None:
      raise EnvWorkerError("the environment workers were stopped", -1, ())
    try:
      with _quiet_gymnasium():
        return fn()
    except Exception as e:  # noqa: BLE001  (a dead worker: EOFError, OSError; an env's own error)
      raise self._worker_error(e) from e

  def _worker_error(self, e: BaseException) -> EnvWorkerError:
    processes = self._vector.processes
    dead = []
    for i, process in enumerate(processes):
      process.join(timeout=1.0)
      if not process.is_alive():
        dead.append(i)
    worker = dead[0] if dead else -1
    code = processes[worker].exitcode if dead else None
    lost = isinstance(e, (EOFError, ConnectionError, BrokenPipeError))
    if lost and code is not None and code < 0:
      cause = f"killed by {signal.Signals(-code).name}"
    elif lost:
      cause = f"exited with code {code}" if code is not None else "lost its pipe"
    else:
      text = (str(e).strip().splitlines() or [""])[0][:200]
      cause = f"{type(e).__name__}: {text}" if text else type(e).__name__
    slots = ([self.first_slot + s for s in range(self.num_slots) if self.where(s)[0] == worker]
             if dead else [])
    self.close()
    name = f"environment worker {worker}" if dead else "an environment worker"
    return EnvWorkerError(f"{name} stopped ({cause})", worker, slots)

  def close(self):
    """Close every environment and stop the workers (killing any that does not stop)."""
    if self._envs is not None:
      for env in self._envs:
        if env is not None:
          env.close()
      self._envs = [None] * self.num_slots
      return
    vector, self._vector = self._vector, None
    if vector is None:
      return
    for pipe in vector.parent_pipes:
      with contextlib.suppress(Exception):
        if pipe is not None and not pipe.closed:
          pipe.send(("close", None))
    for process in vector.processes:
      process.join(timeout=5.0)
      if process.is_alive():
        process.kill()
        process.join()
    for pipe in vector.parent_pipes:
      with contextlib.suppress(Exception):
        if pipe is not None:
          pipe.close()
    vector.closed = True  # so its __del__ does not try to close it again

  @property
  def processes(self):
    """The worker processes (empty without workers)."""
    return [] if self._vector is None else list(self._vector.processes)
