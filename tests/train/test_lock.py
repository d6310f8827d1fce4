"""The workdir lock in-process: exclusive, names its holder, free again once released."""

import json
import os

import pytest

from dfp_jax.train.lock import LockedError, WorkdirLock


def test_a_held_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
  path = str(tmp_path / "run" / "checkpoints.lock")
  with WorkdirLock(path):
    holder = json.loads(open(path).read())
    assert holder["pid"] == os.getpid() and holder["host"] and holder["since"]
    with pytest.raises(LockedError, match=f"in use by another run \\(pid {os.getpid()} on "):
      WorkdirLock(path).acquire()
  with WorkdirLock(path):  # released at the end of the block: free again
    pass


def test_a_lease_holder_that_finds_another_run_holding_its_lease_stops(tmp_path):
  """The lease (an object store's lock, here on a local path through the same path layer):
  the heartbeat renews it, and if another run took it over while this one was silent, the
  holder is told to stop before it writes again."""
  import time
  from dfp_jax.train.lock import LeaseLock
  path = str(tmp_path / "checkpoints.lock")
  lost = []
  lock = LeaseLock(path, heartbeat_s=0.1, settle_s=0.05, on_lost=lost.append).acquire()
  beat = json.loads(open(path).read())["beat"]
  time.sleep(0.5)
  assert json.loads(open(path).read())["beat"] > beat and not lost
  with open(path, "w") as f:  # another run's lease, as after a takeover
    json.dump({"host": "elsewhere", "pid": 7, "since": "now", "token": "theirs",
               "beat": time.time()}, f)
  deadline = time.time() + 5
  while not lost and time.time() < deadline:
    time.sleep(0.05)
  assert lost and "taken over by another run (pid 7 on elsewhere)" in lost[0]
  lock.release()
  assert json.loads(open(path).read())["token"] == "theirs"  # not deleted: not ours
