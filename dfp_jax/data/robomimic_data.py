"""Robomimic low-dim hdf5 datasets (lift, can, square): reading and writing the official format.

A robomimic file holds `data/demo_<i>/{obs,next_obs}/<key>`, `actions`,
`rewards`, `dones`, `states` (the flattened MuJoCo state before each action)
and the `model_file` attribute (the episode's MJCF), the environment metadata
as the JSON attribute `data.attrs["env_args"]`, and optional splits
`mask/<filter>` (arrays of demo names). The low-dim observation is the
concatenation of `robot0_eef_pos, robot0_eef_quat, robot0_gripper_qpos,
object`, in that order (docs/datasets.md); its `object` part is robosuite 1.5.1's in
the official `low_dim_v15.hdf5` files (see `robomimic_env`).

Demos are kept whole. Official files come from robomimic's documented
extraction, `dataset_states_to_obs.py --done_mode 2`: `rewards` is 1 at each
step whose next state is a success (usually the demo's last few steps), and
`dones` is 1 there and at the demo's last step. The replay buffer gets
rewards shifted by -1 (0 at success), masks = 1 - dones (bootstrapping stops
at success) and terminals = dones, with terminals also 1 at each demo's last
step whatever its `dones` says (done_mode 0 leaves dones = 0 at the end of a
demo that ends unsuccessfully), so chunks never run from one demo into the
next.

Needs h5py (`pip install -e .[robomimic]`).
"""

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dfp_jax.data import DatasetError, hub

OBS_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")
# Task -> (robosuite env name, episode step limit).
TASKS = {"lift": ("Lift", 300), "can": ("PickPlaceCan", 300), "square": ("NutAssemblySquare", 400)}
DEFAULT_DATASET_DIR = "~/.robomimic"
# robomimic's v1.5 files on the Hugging Face hub (a dataset repo): v1.5/<task>/mh/low_dim_v15.hdf5.
HF_REPO = "robomimic/robomimic_datasets"
# Dataset actions are clipped to +-ACTION_LIMIT: robomimic's human actions reach +-1
# exactly, where anything that inverts a tanh squashing (atanh) of a dataset action is infinite.
ACTION_LIMIT = 1.0 - 1e-5


def default_path(task: str, dataset_dir: str = DEFAULT_DATASET_DIR) -> str:
  """Where robomimic's download script puts a task's multi-human low-dim file."""
  return os.path.join(os.path.expanduser(dataset_dir), task, "mh", "low_dim_v15.hdf5")


def hub_filename(task: str) -> str:
  """The task's multi-human low-dim file in robomimic's Hugging Face dataset repo (HF_REPO)."""
  return f"v1.5/{task}/mh/low_dim_v15.hdf5"


def download(task: str, path: str, timeout: float = 30.0) -> Optional[str]:
  """Fetch the official file of `task` from the Hugging Face hub to `path`: None when it is
  there, else why not (`hub.fetch`)."""
  return hub.fetch(HF_REPO, hub_filename(task), path, timeout)


def _h5py():
  try:
    import h5py
  except ImportError as e:
    raise DatasetError("reading robomimic datasets needs h5py: pip install -e .[robomimic]") from e
  return h5py


def _demo_names(f, filter_key: Optional[str]) -> List[str]:
  if filter_key is None:
    names = list(f["data"].keys())
  else:
    if f"mask/{filter_key}" not in f:
      have = sorted(f["mask"].keys()) if "mask" in f else []
      raise DatasetError(f"{f.filename}: no split mask/{filter_key} (has {have})")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in f[f"mask/{filter_key}"][()]]
  return sorted(names, key=lambda n: int(n.split("_")[-1]))


def _open(path: str):
  """The robomimic file at `path`, opened for reading, or a one-line DatasetError."""
  h5py = _h5py()
  if not os.path.exists(path):
    raise DatasetError(f"robomimic dataset {path} not found")
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise DatasetError(f"{path}: cannot be read as hdf5 ({e})") from e
  if "data" not in f or "env_args" not in f["data"].attrs:
    f.close()
    raise DatasetError(f"{path}: not a robomimic dataset (no data group with env_args)")
  return f


def read_env_meta(path: str) -> Dict:
  """The environment metadata (`data.attrs["env_args"]`) of a robomimic file."""
  with _open(path) as f:
    return json.loads(f["data"].attrs["env_args"])


def load_dataset(path: str, filter_key: Optional[str] = None) -> Dict[str, np.ndarray]:
  """Transitions of a robomimic low-dim file, in the replay buffer's layout.

  Returns observations / next_observations [T, O], actions [T, A] (clipped to
  +-ACTION_LIMIT), rewards [T] (robomimic's minus 1: 0 at success, -1 before),
  masks [T] (1 - dones), terminals [T] (dones, and 1 at each demo's last step)
  and env_meta (a dict). Every step of every demo is kept.
  """
  with _open(path) as f:
    env_meta = json.loads(f["data"].attrs["env_args"])
    parts = {k: [] for k in ("observations", "next_observations", "actions", "rewards", "masks",
                             "terminals")}
    for name in _demo_names(f, filter_key):
      demo = f[f"data/{name}"]
      missing = [f"{g}/{k}" for g in ("obs", "next_obs") for k in OBS_KEYS if k not in demo[g]]
      if missing:
        raise DatasetError(f"{path}: {name} lacks {', '.join(missing)}")
      parts["observations"].append(np.concatenate([demo[f"obs/{k}"][()] for k in OBS_KEYS], -1))
      parts["next_observations"].append(
          np.concatenate([demo[f"next_obs/{k}"][()] for k in OBS_KEYS], -1))
      parts["actions"].append(np.clip(demo["actions"][()], -ACTION_LIMIT, ACTION_LIMIT))
      parts["rewards"].append(demo["rewards"][()].astype(np.float32) - 1.0)
      dones = demo["dones"][()].astype(np.float32)
      parts["masks"].append(1.0 - dones)
      terminals = dones.copy()
      terminals[-1] = 1.0
      parts["terminals"].append(terminals)
  if not parts["observations"]:
    raise DatasetError(f"{path}: no demos" + (f" in split {filter_key}" if filter_key else ""))
  data = {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()}
  for k, v in data.items():
    if not np.all(np.isfinite(v)):
      raise DatasetError(f"{path}: '{k}' holds NaN or inf")
  data["env_meta"] = env_meta
  return data


def read_first_step(path: str) -> Optional[Tuple[np.ndarray, np.ndarray, Dict, str]]:
  """The first demo's first simulator state and observation, to check the file against an env.

  Returns (state [S], obs [O], env_meta, demo name), or None when the file
  stores no `states` (robomimic's own files do).
  """
  with _open(path) as f:
    names = _demo_names(f, None)
    if not names:
      return None
    demo = f[f"data/{names[0]}"]
    if "states" not in demo or any(k not in demo["obs"] for k in OBS_KEYS):
      return None
    obs = np.concatenate([demo[f"obs/{k}"][0] for k in OBS_KEYS], -1)
    return (np.asarray(demo["states"][0], np.float64), obs,
            json.loads(f["data"].attrs["env_args"]), names[0])


def write_dataset(path: str, demos: Sequence[Dict[str, np.ndarray]], env_meta: Dict,
                  masks: Optional[Dict[str, Sequence[int]]] = None):
  """Write demos in robomimic's hdf5 format.

  Each demo is a dict with `obs` and `next_obs` (dicts of key -> [T, d]),
  `actions` [T, A], `rewards` [T] (robomimic's: 1 at success) and `dones` [T],
  and optionally `states` [T, S] (flattened MuJoCo state before each action)
  and `model_file` (the MJCF string). `masks` maps a split name to demo
  indices (written as mask/<name>).
  """
  h5py = _h5py()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with h5py.File(path, "w") as f:
    data = f.create_group("data")
    total = 0
    for i, demo in enumerate(demos):
      g = data.create_group(f"demo_{i}")
      for group in ("obs", "next_obs"):
        for k, v in demo[group].items():
          g.create_dataset(f"{group}/{k}", data=np.asarray(v))
      for k in ("actions", "rewards", "dones", "states"):
        if k in demo:
          g.create_dataset(k, data=np.asarray(demo[k]))
      if "model_file" in demo:
        g.attrs["model_file"] = demo["model_file"]
      g.attrs["num_samples"] = len(demo["actions"])
      total += len(demo["actions"])
    data.attrs["total"] = total
    data.attrs["env_args"] = json.dumps(env_meta)
    for name, idx in (masks or {}).items():
      f.create_dataset(f"mask/{name}", data=np.array([f"demo_{i}" for i in idx], dtype="S"))
