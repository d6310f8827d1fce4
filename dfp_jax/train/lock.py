"""One run per workdir: an exclusive lock held for as long as a run trains there.

The lock is `fcntl.flock` on a file beside the run's checkpoints. The kernel
drops it when the holding process dies, however it dies, so a lock left by a
killed run is stale by construction and the next run takes it over (rerunning
after `kill -9` still resumes). The file also records who holds it (host, pid,
since when), which a refused run names in its one-line error.
"""

import datetime
import fcntl
import json
import os
import socket
from typing import Optional


class LockedError(Exception):
  """The workdir is in use by another run."""


class WorkdirLock:
  """`with WorkdirLock(path):` holds the lock at `path` or raises LockedError at once."""

  def __init__(self, path: str):
    self.path = path
    self._fd: Optional[int] = None

  def acquire(self):
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _describe(os.read(fd, 4096))
      os.close(fd)
      raise LockedError(f"{os.path.dirname(self.path)} is in use by another run ({holder}); "
                        "wait for it to finish or stop it, or use another --workdir") from None
    except OSError as e:  # a filesystem without flock
      os.close(fd)
      raise LockedError(f"cannot lock {self.path} ({e.strerror or e})") from e
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                             "since": datetime.datetime.now().astimezone().isoformat(
                                 timespec="seconds")}).encode())
    os.fsync(fd)
    self._fd = fd
    return self

  def release(self):
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def _describe(raw: bytes) -> str:
  try:
    h = json.loads(raw.decode())
    return f"pid {h['pid']} on {h['host']}, since {h['since']}"
  except (ValueError, KeyError, UnicodeDecodeError):
    return "holder unknown"
