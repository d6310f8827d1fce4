"""Checkpoints of a whole training run with orbax, and the checks that make resuming safe.

A checkpoint holds three items:
  device: the agent states (parameters, optimiser states, target and EMA
          parameters, step counters) and the update / evaluation keys, as jax
          arrays; restored onto whatever devices and shardings the resuming
          run has, so a run can resume on a different device count.
  host:   numpy arrays of the loop (online replay data, open action-chunk
          queues, the current episode's actions).
  meta:   JSON: the step and phase, host RNG states, counters, the config and
          the dataset fingerprint that a resume must match.
Saves are asynchronous (orbax copies device arrays before `save` returns;
host arrays are passed as copies). An interrupted save leaves a temporary
directory that orbax ignores, so the latest finished checkpoint is always a
consistent one.
"""

import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

# Config fields that do not change results: a run may resume with other values.
RESUMABLE_FIELDS = ("train.progress_bar", "train.tensorboard", "train.checkpoint_interval",
                    "train.keep_checkpoints", "train.async_checkpointing")


class CheckpointError(Exception):
  """A checkpoint or workdir that cannot be resumed from."""


def _flatten(tree, prefix="") -> Dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def config_differences(old: Dict, new: Dict, ignore: Sequence[str] = RESUMABLE_FIELDS) -> List[str]:
  """'field: old -> new' for every field that differs between two config dicts."""
  a, b = _flatten(old), _flatten(new)
  return [f"{k}: {a.get(k, '<absent>')} -> {b.get(k, '<absent>')}"
          for k in sorted(set(a) | set(b)) if k not in ignore and a.get(k) != b.get(k)]


def check_same_config(where: str, old: Dict, new: Dict):
  """Raise CheckpointError naming the fields where a saved run's config differs from `new`."""
  diffs = config_differences(old, new)
  if diffs:
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    raise CheckpointError(f"{where} holds a run with a different config "
                          f"({'; '.join(diffs[:3])}{more}); use another --workdir, "
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
  """Saves and restores `(device tree, host tree, meta)` under `directory`; keeps the last few."""

  def __init__(self, directory: str, max_to_keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory, item_names=("device", "host", "meta"),
        options=ocp.CheckpointManagerOptions(max_to_keep=max(1, max_to_keep),
                                             enable_async_checkpointing=async_save,
                                             create=True))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, device_tree, host_tree, meta: Dict):
    arrays, spec = _pack(host_tree)
    meta = dict(meta, host_spec=spec)
    self._manager.save(step, args=ocp.args.Composite(
        device=ocp.args.StandardSave(device_tree),
        host=ocp.args.StandardSave(arrays),
        meta=ocp.args.JsonSave(meta)), force=True)

  def read_meta(self, step: int) -> Dict:
    try:
      return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many types for a damaged directory
      raise CheckpointError(self._unreadable(step, e)) from e

  def restore(self, step: int, device_like, meta: Optional[Dict] = None) -> Tuple[Any, Dict, Dict]:
    """(device tree laid out like `device_like`, host tree, meta) of checkpoint `step`.

    `meta`, if the caller has already read it (`read_meta`), is not read again.
    """
    meta = dict(self.read_meta(step) if meta is None else meta)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, device_like)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          device=ocp.args.StandardRestore(target),
          host=ocp.args.StandardRestore()))
    except Exception as e:
      raise CheckpointError(self._unreadable(step, e)) from e
    host = _unpack(restored["host"] or {}, meta.pop("host_spec"))
    return restored["device"], host, meta

  def restore_raw(self, step: int):
    """The device item of checkpoint `step` as saved (nested dicts of arrays), for inspection."""
    return self._manager.restore(step, args=ocp.args.Composite(
        device=ocp.args.StandardRestore()))["device"]

  def _unreadable(self, step, e):
    msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    return (f"checkpoint {os.path.join(self.directory, str(step))} cannot be restored "
            f"({type(e).__name__}: {msg}); delete it to resume from an earlier one, "
            "or pass --overwrite to start again")

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()


def read_json(path: str) -> Dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {e}); "
                          "pass --overwrite to start again") from e
