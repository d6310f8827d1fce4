"""The one path layer every file of a run goes through: a local directory or an object store.

A workdir is a local path or a URL such as `gs://bucket/runs/x` (what TPU pods use: their
hosts share no disk). Local paths go to `os`/`shutil` as before; URLs go to etils `epath`
(which orbax uses for its own files), backed by fsspec (`gcsfs` for `gs://`). Checkpoint arrays
are orbax's (tensorstore reads and writes `gs://` itself), TensorBoard events tensorboardX's
(it uploads to `gs://` itself).

Object stores have no append and no atomic rename: `append_text` rewrites the object (metrics
files are small), `replace` copies then deletes.
"""

import builtins
import contextlib
import io
import os
import re
import shutil
import tempfile
from typing import IO, List

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://")


def is_remote(path: str) -> bool:
  return bool(_URL.match(str(path)))


def _epath(path: str):
  from etils import epath
  _no_listing_cache()
  return epath.Path(path)


_configured = False


def _no_listing_cache():
  """fsspec caches directory listings per filesystem instance; a run must see its own and
  other processes' writes (a checkpoint directory deleted under it, a new step), so object
  store filesystems are made without that cache (before epath creates them)."""
  global _configured
  if not _configured:
    import fsspec
    for scheme in BACKENDS:
      fsspec.config.conf.setdefault(scheme, {}).setdefault("use_listings_cache", False)
    _configured = True


# The object stores a workdir may be on, and the package that gives fsspec each. (etils epath
# also takes s3:// and az://, but orbax writes checkpoint arrays to object stores only for gs://.)
BACKENDS = {"gs": "gcsfs"}


def check_reachable(path: str):
  """For a URL: raises ValueError (one line) when its filesystem package is missing or the
  store cannot be reached; nothing for a local path (its errors come when it is written)."""
  if not is_remote(path):
    return
  scheme, rest = str(path).split("://", 1)
  if scheme not in BACKENDS:
    raise ValueError(f"workdir {path}: {scheme}:// is not supported; use a local path or "
                     f"{' or '.join(s + '://' for s in BACKENDS)}")
  try:
    import fsspec
    fsspec.get_filesystem_class(scheme)
  except (ImportError, ValueError):
    package = BACKENDS.get(scheme)
    hint = f": pip install {package}" if package else " (no filesystem package known for it)"
    raise ValueError(f"workdir {path} needs a filesystem for {scheme}://{hint}") from None
  bucket = f"{scheme}://{rest.split('/', 1)[0]}"
  try:
    found = exists(bucket)  # a new run's own path does not exist yet; its bucket must
  except Exception as e:  # noqa: BLE001  (credentials, network: many types)
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise ValueError(f"cannot reach workdir {path} ({type(e).__name__}: {first})") from None
  if not found:
    raise ValueError(f"workdir {path}: bucket {bucket} does not exist (or is not visible "
                     "with these credentials)")


def normpath(path: str) -> str:
  """os.path.normpath that keeps a URL's `scheme://`."""
  if not is_remote(path):
    return os.path.normpath(path)
  scheme, rest = str(path).split("://", 1)
  return f"{scheme}://{os.path.normpath('/' + rest).lstrip('/')}"


def absolute(path: str) -> str:
  return normpath(path) if is_remote(path) else os.path.abspath(path)


def exists(path: str) -> bool:
  return _epath(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _epath(path).is_dir() if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> List[str]:
  if is_remote(path):
    return [p.name for p in _epath(path).iterdir()]
  return os.listdir(path)


def makedirs(path: str):
  """Create `path` and its parents (object stores have no directories: nothing to do)."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def open(path: str, mode: str = "r", **kwargs) -> IO:  # noqa: A001  (the builtin, for paths)
  if is_remote(path):
    kwargs.pop("newline", None)  # fsspec text files do not translate newlines
    return _epath(path).open(mode, **kwargs)
  return builtins.open(path, mode, **kwargs)


def read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  with open(path) as f:
    return f.read()


def write_text(path: str, text: str):
  with open(path, "w") as f:
    f.write(text)


def write_bytes(path: str, data: bytes):
  with open(path, "wb") as f:
    f.write(data)


def append_text(path: str, text: str):
  """Append to a file; on an object store the object is rewritten with `text` added."""
  if is_remote(path):  # in bytes: fsspec's text mode would turn earlier rows' \r\n into \n
    old = read_bytes(path) if exists(path) else b""
    write_bytes(path, old + text.encode())
  else:
    with open(path, "a", newline="") as f:
      f.write(text)


def replace(src: str, dst: str):
  """Rename `src` to `dst` (atomic on a local filesystem; copy and delete on an object store)."""
  if is_remote(src) or is_remote(dst):
    write_bytes(dst, read_bytes(src))
    remove(src)
  else:
    os.replace(src, dst)


def move_tree(src: str, dst: str):
  """Rename a directory tree (one rename locally; copy every file, then delete, on an object
  store)."""
  if not (is_remote(src) or is_remote(dst)):
    os.replace(src, dst)
    return
  for name in listdir(src):
    if isdir(f"{src}/{name}"):
      move_tree(f"{src}/{name}", f"{dst}/{name}")
    else:
      makedirs(dst)
      write_bytes(f"{dst}/{name}", read_bytes(f"{src}/{name}"))
  rmtree(src, ignore_errors=True)


def write_atomic(path: str, data, suffix: str = ".tmp"):
  """Write `data` (str or bytes) so that `path` is either the old or the whole new file: a
  temporary file renamed over it locally; one upload on an object store (an object appears
  only once its upload is complete)."""
  mode = "w" if isinstance(data, str) else "wb"
  if is_remote(path):
    with open(path, mode) as f:
      f.write(data)
    return
  tmp = path + suffix
  try:
    with builtins.open(tmp, mode) as f:
      f.write(data)
    os.replace(tmp, path)
  except OSError:
    with contextlib.suppress(OSError):  # the original error is the one to report
      os.remove(tmp)
    raise


def remove(path: str):
  if is_remote(path):
    _epath(path).unlink()
  else:
    os.remove(path)


def rmtree(path: str, ignore_errors: bool = False):
  if is_remote(path):
    try:
      if exists(path):
        _epath(path).rmtree()
    except Exception:  # noqa: BLE001  (every backend has its own errors)
      if not ignore_errors:
        raise
  else:
    shutil.rmtree(path, ignore_errors=ignore_errors)


def remove_any(path: str):
  """Delete a file or a directory tree if it exists."""
  if isdir(path):
    rmtree(path)
  elif exists(path):
    remove(path)


def upload(local_path: str, path: str):
  """Copy a local file to `path` (a local path or a URL)."""
  if is_remote(path):
    with builtins.open(local_path, "rb") as f:
      write_bytes(path, f.read())
  elif os.path.abspath(local_path) != os.path.abspath(path):
    makedirs(os.path.dirname(os.path.abspath(path)))
    shutil.copyfile(local_path, path)


def savefig(fig, path: str, **kwargs):
  """matplotlib's savefig to a local path or a URL."""
  if not is_remote(path):
    fig.savefig(path, **kwargs)
    return
  buf = io.BytesIO()
  fig.savefig(buf, format=os.path.splitext(path)[1].lstrip(".") or "png", **kwargs)
  write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def staged(path: str):
  """A local directory whose files end up under `path` (for writers that need a local file,
  such as ffmpeg): `path` itself when local; for a URL, a temporary directory uploaded when
  the block ends."""
  if not is_remote(path):
    makedirs(path)
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="dfp_jax-") as local:
    yield local
    for name in sorted(os.listdir(local)):
      upload(os.path.join(local, name), os.path.join(path, name))
