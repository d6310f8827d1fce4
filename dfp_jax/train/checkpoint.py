"""Checkpoints of a whole training run with orbax, and the checks that make resuming safe.

A checkpoint holds:
  device:  the agent states (parameters, optimiser states, target and EMA
           parameters, step counters) and the update / evaluation keys, as jax
           arrays (orbax, written collectively by every process); restored onto
           whatever devices and shardings the resuming run has, so a run can
           resume on a different device count or mesh.
  meta:    JSON (orbax): the step, the population's members, the config and the
           dataset fingerprint that a resume must match, the wall time.
  members: one file per population member, `members/<step>/member_<i>.npz`,
           written by the process that owns the member: its host arrays (online
           replay data, open action-chunk queue, the current episode's actions)
           and its counters and host RNG state. Any process can read any
           member's file, so a population resumes onto another mesh.
Member files are written before orbax starts the checkpoint of the same step,
so the latest finished checkpoint always has them. Orbax saves are
asynchronous; an interrupted save leaves a temporary directory that orbax
ignores.
"""

import hashlib
import io
import json
import logging
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from dfp_jax import fileio, parallel

# Config fields that do not change results: a run may resume with other values.
RESUMABLE_FIELDS = ("train.progress_bar", "train.tensorboard", "train.checkpoint_interval",
                    "train.keep_checkpoints", "train.async_checkpointing",
                    "train.video_episodes", "train.video_size", "train.wandb_project",
                    "train.env_workers", "train.eval_envs")


class CheckpointError(Exception):
  """A checkpoint or workdir that cannot be resumed from."""


class UnreadableCheckpoint(CheckpointError):
  """One checkpoint that cannot be restored (truncated, files missing, unreadable metadata);
  `cause` says why in a few words, `step` which."""

  def __init__(self, message: str, step: int, cause: str):
    super().__init__(message)
    self.step, self.cause = step, cause


class _QuietOrbaxErrors(logging.Filter):
  """Drops orbax's ERROR logs (each with a traceback) from its background save threads: the
  same error reaches the run as a CheckpointError, printed as one line; and its warning that a
  checkpoint directory opened read-only (another run's, read by --init_from) is read-only."""

  def filter(self, record):
    if str(record.msg).startswith("Given directory is read only"):  # --init_from's source
      return False
    return not (record.levelno >= logging.ERROR and str(record.msg).startswith("[process="))


def _quiet_closed_loops(unraisable, default=sys.unraisablehook):
  """After a failed asynchronous save, orbax's coroutines are collected with their event loop
  closed; Python would print each as a traceback. Anything else is printed as usual."""
  if not (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == "Event loop is closed"):
    default(unraisable)


def quiet_background_errors():
  """For a command line: orbax's background-thread errors and their closed event loops are
  not printed as tracebacks (the run raises the same failure as one CheckpointError)."""
  logging.getLogger("absl").addFilter(_QuietOrbaxErrors())
  sys.unraisablehook = _quiet_closed_loops


def _flatten(tree, prefix="") -> Dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


# Fields added after runs were written, with the value those runs had in effect: a saved
# config without one of them compares as having it at this value. (Before matmul_precision
# existed, matmuls ran at the backend's default: float32 on a CPU, which is bit-identical to
# fp32 there, but TF32 or bf16 passes on GPUs and TPUs.)
ADDED_FIELDS = {"train.matmul_precision": "default", "train.init_from": ""}


# Fields renamed after runs were written: old name -> new name (same values).
RENAMED_FIELDS = {"train.data_parallel": "train.use_mesh"}


def _current_names(flat: Dict[str, Any]) -> Dict[str, Any]:
  return {RENAMED_FIELDS.get(k, k): v for k, v in flat.items()}


def config_differences(old: Dict, new: Dict, ignore: Sequence[str] = RESUMABLE_FIELDS) -> List[str]:
  """'field: old -> new' for every field that differs between two config dicts (a saved
  config's renamed fields compared under their current names)."""
  a = {**ADDED_FIELDS, **_current_names(_flatten(old))}
  b = {**ADDED_FIELDS, **_current_names(_flatten(new))}
  return [f"{k}: {a.get(k, '<absent>')} -> {b.get(k, '<absent>')}"
          for k in sorted(set(a) | set(b)) if k not in ignore and a.get(k) != b.get(k)]


def check_same_config(where: str, old: Dict, new: Dict):
  """Raise CheckpointError naming the fields where a saved run's config differs from `new`."""
  diffs = config_differences(old, new)
  if diffs:
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    saved, differing = _flatten(old), {d.split(":")[0] for d in diffs}
    added = [f"--config.{k}={v}" for k, v in ADDED_FIELDS.items()
             if k not in saved and k in differing]
    hint = (f"; it was saved before {', '.join(a.split('=')[0][9:] for a in added)} existed: "
            f"pass {' '.join(added)} to resume it as it ran" if added else "")
    raise CheckpointError(f"{where} holds a run with a different config "
                          f"({'; '.join(diffs[:3])}{more}){hint}; or use another --workdir, "
                          "or pass --overwrite to replace it")


def dataset_fingerprint(data: Dict[str, np.ndarray]) -> str:
  """A short hash of a dataset's size and a strided sample of its arrays."""
  h = hashlib.sha256()
  n = len(data["observations"])
  h.update(str(n).encode())
  stride = max(1, n // 4096)
  for k in sorted(data):
    h.update(np.ascontiguousarray(data[k][::stride]).tobytes())
  return h.hexdigest()[:16]


def _pack(tree) -> Tuple[Dict[str, np.ndarray], List]:
  """Host tree -> ({index: array} without empty arrays, which orbax cannot save; [path, shape, dtype])."""
  flat = _flatten(tree)
  spec = [[k, list(np.shape(v)), np.asarray(v).dtype.str] for k, v in flat.items()]
  arrays = {str(i): np.array(v, copy=True) for i, v in enumerate(flat.values()) if np.size(v) > 0}
  return arrays, spec


def _unpack(arrays: Dict[str, np.ndarray], spec: List):
  out: Dict[str, Any] = {}
  for i, (path, shape, dtype) in enumerate(spec):
    value = arrays.get(str(i))
    value = np.zeros(shape, np.dtype(dtype)) if value is None else np.asarray(value)
    node = out
    *parents, leaf = path.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out


class Checkpointer:
  """Saves and restores a run's (device tree, member files, meta) under `directory`; keeps the
  last few, and the steps in `keep_steps` (the end of the offline phase, which other runs can
  start their online phase from: `train.init_from`)."""

  def __init__(self, directory: str, max_to_keep: int = 2, async_save: bool = True,
               read_only: bool = False, keep_steps: Sequence[int] = ()):
    self.directory = fileio.absolute(directory)
    self._last_saved: Optional[int] = None
    # The items' handlers are registered by name (the current API; no legacy item_names),
    # LatestN replaces max_to_keep.
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item, handler, save, restore in (
        ("device", ocp.StandardCheckpointHandler(), ocp.args.StandardSave,
         ocp.args.StandardRestore),
        ("meta", ocp.JsonCheckpointHandler(), ocp.args.JsonSave, ocp.args.JsonRestore)):
      registry.add(item, save, handler)
      registry.add(item, restore, handler)
    if read_only:  # evaluation of someone's run: nothing is created or deleted there
      options = ocp.CheckpointManagerOptions(read_only=True, create=False,
                                             save_interval_steps=0)
    else:
      options = ocp.CheckpointManagerOptions(
          preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy([
              ocp.checkpoint_managers.LatestN(max(1, max_to_keep)),
              ocp.checkpoint_managers.CustomSteps(list(keep_steps))]),
          enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          handler_registry=registry)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> List[int]:
    return sorted(self._manager.all_steps())

  def device_metadata(self, step: int):
    """The saved device tree's array metadata (shapes, dtypes), without reading the arrays
    (a read-only Checkpointer only)."""
    try:
      return self._manager.item_metadata(step)["device"]
    except Exception as e:  # noqa: BLE001
      raise self._unreadable(step, e) from e

  def _member_path(self, step: int, index: int) -> str:
    return os.path.join(self.directory, "members", str(step), f"member_{index}.npz")

  def save(self, step: int, device_tree, members: Dict[int, Tuple[Dict, Dict]], meta: Dict):
    """`members`: {population index: (host tree of arrays, JSON-ready dict)} of the members
    this process writes; every process calls save (the device tree is collective).

    Raises CheckpointError when the directory lost the checkpoint this run saved last (it was
    deleted while the run was going): the run stops rather than write into a workdir that
    someone is clearing.
    """
    self.wait()  # orbax waits for the previous save here anyway
    if self._last_saved is not None and not fileio.isdir(
        os.path.join(self.directory, str(self._last_saved))):
      raise CheckpointError(
          f"checkpoint {self._last_saved} in {self.directory} was deleted while the run was "
          "going, so the run stopped. Rerun the same command to resume from the newest "
          "checkpoint left, or pass --overwrite to start again")
    for index, (tree, info) in members.items():
      path = self._member_path(step, index)
      arrays, spec = _pack(tree)
      buf = io.BytesIO()
      np.savez(buf, **arrays, __meta__=np.array(json.dumps({"info": info, "spec": spec})))
      try:
        fileio.makedirs(os.path.dirname(path))
        fileio.write_atomic(path, buf.getvalue(), suffix=f".tmp-{os.getpid()}.npz")
      except OSError as e:
        raise CheckpointError(self._unwritable(e)) from e
    parallel.sync(f"members of checkpoint {step} written")
    try:
      self._manager.save(step, args=ocp.args.Composite(
          device=ocp.args.StandardSave(device_tree), meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # noqa: BLE001  (an earlier asynchronous save's error surfaces here too)
      raise CheckpointError(self._unwritable(e)) from e
    self._last_saved = step
    if jax.process_index() == 0:
      self._forget_old_members(step)

  def _forget_old_members(self, step: int):
    root = os.path.join(self.directory, "members")
    kept = set(self._manager.all_steps()) | {step}
    for name in fileio.listdir(root) if fileio.isdir(root) else []:
      if name.isdigit() and int(name) < step and int(name) not in kept:
        fileio.rmtree(os.path.join(root, name), ignore_errors=True)

  def read_meta(self, step: int) -> Dict:
    try:
      return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many types for a damaged directory
      raise self._unreadable(step, e) from e

  def restore(self, step: int, device_like, members: Sequence[int],
              meta: Optional[Dict] = None) -> Tuple[Any, Dict[int, Tuple[Dict, Dict]], Dict]:
    """(device tree laid out like `device_like`, {index: (host tree, info)} of `members`,
    meta) of checkpoint `step`. `meta`, if the caller has already read it, is not read again."""
    meta = dict(self.read_meta(step) if meta is None else meta)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, device_like)
    try:
      device = self._manager.restore(step, args=ocp.args.Composite(
          device=ocp.args.StandardRestore(target)))["device"]
    except Exception as e:
      raise self._unreadable(step, e) from e
    return device, self.read_members(step, members), meta

  def read_members(self, step: int, members: Sequence[int]) -> Dict[int, Tuple[Dict, Dict]]:
    """{index: (host tree, info)} of `members` in checkpoint `step`."""
    loaded = {}
    for index in members:
      path = self._member_path(step, index)
      try:
        with np.load(io.BytesIO(fileio.read_bytes(path))) as f:
          header = json.loads(str(f["__meta__"]))
          arrays = {k: f[k] for k in f.files if k != "__meta__"}
      except (OSError, ValueError, KeyError) as e:
        raise self._unreadable(step, e) from e
      loaded[index] = (_unpack(arrays, header["spec"]), header["info"])
    return loaded

  def restore_saved(self, step: int, meta: Optional[Dict] = None):
    """The device tree of checkpoint `step` in the layout it was saved in (nested dicts of
    arrays), read onto this process's first device whatever mesh saved it."""
    saved = self.device_metadata(step).tree
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    device, _, _ = self.restore(step, jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), saved), [], meta)
    return device

  def restore_raw(self, step: int):
    """The device item of checkpoint `step` as saved (nested dicts of arrays), for inspection."""
    return self._manager.restore(step, args=ocp.args.Composite(
        device=ocp.args.StandardRestore()))["device"]

  def _unreadable(self, step, e) -> UnreadableCheckpoint:
    msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    cause = f"{type(e).__name__}: {msg}"
    return UnreadableCheckpoint(
        f"checkpoint {os.path.join(self.directory, str(step))} cannot be restored ({cause}); "
        "pass --overwrite to start again", step, cause)

  def move_aside(self, step: int) -> str:
    """Rename checkpoint `step` (and its member files) to `damaged-<step>` beside it, so a
    resumed run neither reads nor deletes it; returns the new path."""
    name = f"damaged-{step}"
    while fileio.exists(os.path.join(self.directory, name)):
      name += "x"
    for parent in (self.directory, os.path.join(self.directory, "members")):
      if fileio.exists(os.path.join(parent, str(step))):
        fileio.move_tree(os.path.join(parent, str(step)), os.path.join(parent, name))
    self.reload()
    return os.path.join(self.directory, name)

  def reload(self):
    """See the directory as it is now (after another process moved a checkpoint aside)."""
    self._manager.reload()

  def _unwritable(self, e):
    text = str(e)
    cause = re.search(r"Failed to write [^:]*: ([^\[]+)", text)
    cause = (cause[1].strip() if cause else getattr(e, "strerror", None)
             or (text.strip().splitlines() or [type(e).__name__])[0][:200])
    return (f"a checkpoint could not be written to {self.directory} ({cause}); fix that "
            "(free space, permissions, the directory), then rerun the same command to resume "
            "from the last complete checkpoint")

  def wait(self):
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001  (orbax re-raises the background save's error)
      raise CheckpointError(self._unwritable(e)) from e

  def close(self):
    self._manager.close()


def path_name(path) -> str:
  """A pytree key path as 'a/b/0'."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def by_path(tree) -> Dict[str, Any]:
  return {path_name(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def fill(template, saved: Dict[str, Any], where: str, what: str):
  """`template` with each leaf replaced by the leaf of `saved` (a `by_path` dict) at its path;
  CheckpointError naming the first path `saved` lacks."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
  missing = [p for p, _ in leaves if path_name(p) not in saved]
  if missing:
    raise CheckpointError(f"{where} holds no {path_name(missing[0])} for {what} "
                          "(written by another version of this code?)")
  return jax.tree_util.tree_unflatten(treedef, [saved[path_name(p)] for p, _ in leaves])


def read_json(path: str) -> Dict:
  try:
    return json.loads(fileio.read_text(path))
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {e}); "
                          "pass --overwrite to start again") from e
