"""One run per workdir: an exclusive lock held for as long as a run trains there.

The lock is `fcntl.flock` on a file beside the run's checkpoints. The kernel
drops it when the holding process dies, however it dies, so a lock left by a
killed run is stale by construction and the next run takes it over (rerunning
after `kill -9` still resumes). The file also records who holds it (host, pid,
since when), which a refused run names in its one-line error.

An object store (a `gs://` workdir) has no flock: there the lock is a lease, a small object
that its holder rewrites every `HEARTBEAT_S` seconds. A lease not renewed for `STALE_S`
seconds is stale (its holder died) and the next run takes it over; one whose holder ran on
this host and is gone is stale at once, so a rerun after `kill -9` on the same machine resumes
straight away.
"""

import datetime
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from typing import Optional

from dfp_jax import fileio

HEARTBEAT_S = 20.0
STALE_S = 90.0


class LockedError(Exception):
  """The workdir is in use by another run."""


class _Held:
  """`with lock:` acquires it (or raises LockedError) and releases it at the end."""

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


class WorkdirLock(_Held):
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
    os.write(fd, json.dumps(_holder()).encode())
    os.fsync(fd)
    self._fd = fd
    return self

  def release(self):
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def workdir_lock(path: str):
  """The lock for a run whose lock file is `path`: flock locally, a lease on an object store."""
  return LeaseLock(path) if fileio.is_remote(path) else WorkdirLock(path)


def _holder() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


class LeaseLock(_Held):
  """A lock on any path of the path layer: `{holder, token, beat}` rewritten by a heartbeat
  thread. Two runs that start within the same instant can both see no lease; each writes its
  own token and reads it back after a pause, and the one whose token was overwritten backs
  off (object stores give the last writer the object)."""

  def __init__(self, path: str, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S,
               settle_s: float = 1.0, on_lost=None):
    self.path, self.heartbeat_s, self.stale_s, self.settle_s = path, heartbeat_s, stale_s, settle_s
    self.on_lost = on_lost or _stop_now  # called (from the heartbeat thread) with one line
    self._record: Optional[dict] = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def _read(self) -> Optional[dict]:
    try:
      return json.loads(fileio.read_text(self.path))
    except FileNotFoundError:
      return None
    except ValueError:  # a lease cut short: nobody can hold it
      return None

  def _stale(self, lease: dict) -> bool:
    if time.time() - float(lease.get("beat", 0)) > self.stale_s:
      return True
    if lease.get("host") == socket.gethostname():  # same machine: is the holder alive?
      try:
        os.kill(int(lease["pid"]), 0)
      except ProcessLookupError:
        return True
      except (PermissionError, KeyError, ValueError):
        pass
    return False

  def _refuse(self, lease: dict):
    age = time.time() - float(lease.get("beat", 0))
    holder = f"pid {lease.get('pid')} on {lease.get('host')}, since {lease.get('since')}"
    raise LockedError(
        f"{fileio.normpath(os.path.dirname(self.path))} is in use by another run ({holder}; "
        f"its lease was renewed {age:.0f} s ago and is taken over after {self.stale_s:.0f} s "
        "without renewal); wait for it to finish or stop it, or use another --workdir")

  def acquire(self):
    lease = self._read()
    if lease is not None and not self._stale(lease):
      self._refuse(lease)
    self._record = {**_holder(), "token": uuid.uuid4().hex, "beat": time.time()}
    self._write()
    time.sleep(self.settle_s)
    lease = self._read()
    if lease is None or lease.get("token") != self._record["token"]:
      self._record = None
      self._refuse(lease or {})
    self._stop.clear()
    self._thread = threading.Thread(target=self._beat, name="workdir-lease", daemon=True)
    self._thread.start()
    return self

  def _write(self):
    fileio.write_text(self.path, json.dumps(self._record))

  def _beat(self):
    """Renew the lease while it is ours. One that another run holds now (this one went
    silent past STALE_S: a network outage, a paused process) means two runs on one workdir:
    this one stops at once, before it writes again."""
    warned = False
    while not self._stop.wait(self.heartbeat_s):
      try:
        lease = self._read()
        if lease is not None and lease.get("token") != self._record["token"]:
          self.on_lost(f"{fileio.normpath(os.path.dirname(self.path))}: this run's lease was "
                       f"taken over by another run (pid {lease.get('pid')} on "
                       f"{lease.get('host')}) while it could not renew it; stopping")
          return
        self._record["beat"] = time.time()
        self._write()
        warned = False
      except Exception as e:  # noqa: BLE001  (a missed beat; the next one may get through)
        if not warned:
          print(f"warning: could not renew the workdir lease {self.path} "
                f"({type(e).__name__}: {e}); retrying", flush=True)
          warned = True

  def release(self):
    if self._record is None:
      return
    self._stop.set()
    if self._thread is not None and self._thread is not threading.current_thread():
      self._thread.join(self.heartbeat_s + 5)
    try:
      lease = self._read()
      if lease is not None and lease.get("token") == self._record["token"]:
        fileio.remove(self.path)
    except Exception:  # noqa: BLE001  (the lease then expires by itself)
      pass
    self._record = None


def _stop_now(message: str):
  """A run that lost its workdir exits at once with one line (no checkpoint: the workdir is
  another run's now)."""
  import sys
  print(f"error: {message}", file=sys.stderr, flush=True)
  os._exit(1)


def _describe(raw: bytes) -> str:
  try:
    h = json.loads(raw.decode())
    return f"pid {h['pid']} on {h['host']}, since {h['since']}"
  except (ValueError, KeyError, UnicodeDecodeError):
    return "holder unknown"
