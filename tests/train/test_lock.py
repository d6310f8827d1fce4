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
