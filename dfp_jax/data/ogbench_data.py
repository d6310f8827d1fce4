"""OGBench single-task data and environments.

Reads the official npz datasets (a directory, or a download where a network
exists), including the sharded `cube-quadruple-play-100m-v0`, relabels them
with the task's rewards through ogbench itself, and checks them against the
environment so a mismatched file is an error rather than a silent wrong run.
"""

import glob
import os
import re
from typing import Dict, Optional, Tuple

import numpy as np

from dfp_jax.data import DatasetError

DEFAULT_DATASET_DIR = "~/.ogbench/data"
REQUIRED_KEYS = ("observations", "actions", "terminals")
# Where OGBench's maintainers point users when the primary server is down (ogbench issue #49):
# the official files under the same names, at the top of this Hugging Face dataset repo.
HF_MIRROR = "zhouzypaul/ogbench_datasets"


def split_task_name(task: str) -> Tuple[str, str]:
  """'cube-double-play-singletask-task2-v0' -> (env name, dataset name).

  >>> split_task_name('cube-quadruple-play-100m-singletask-task3-v0')
  ('cube-quadruple-singletask-task3-v0', 'cube-quadruple-play-100m-v0')
  """
  m = re.fullmatch(r"(?P<env>[a-z0-9x-]+?)-(?P<kind>play|noisy)(?P<size>-\d+m)?"
                   r"-singletask(?P<task>-task\d)?-(?P<ver>v\d+)", task)
  if m is None:
    raise DatasetError(
        f"task {task!r} is not an OGBench single-task name such as "
        "'cube-double-play-singletask-task2-v0'")
  env = f"{m['env']}-singletask{m['task'] or ''}-{m['ver']}"
  dataset = f"{m['env']}-{m['kind']}{m['size'] or ''}-{m['ver']}"
  return env, dataset


def make_env(task: str, success_timing: str = "post", **kwargs):
  """The task's gymnasium env. success_timing 'post' is the paper's (ogbench 1.1.2)."""
  import gymnasium
  env_name, _ = split_task_name(task)
  if success_timing not in ("pre", "post"):
    raise ValueError(f"success_timing must be 'pre' or 'post', got {success_timing!r}")
  try:
    import ogbench  # noqa: F401  (registers the envs)
    return gymnasium.make(env_name, success_timing=success_timing, **kwargs)
  except gymnasium.error.Error as e:
    raise DatasetError(f"unknown OGBench environment {env_name!r} (from task {task!r}): {e}")


def generate_command(dataset_name: str, dataset_dir: str) -> str:
  return (f"python -m experiments.generate_ogbench --dataset={dataset_name} "
          f"--episodes=1000 --out={dataset_dir}")


def _dataset_files(dataset_name: str, dataset_dir: str, download: bool):
  """(train files, val files) for a dataset; shards for the 100M data."""
  root = os.path.expanduser(dataset_dir)
  shard_dir = os.path.join(root, dataset_name)
  if os.path.isdir(shard_dir):  # e.g. cube-quadruple-play-100m-v0/*.npz
    files = sorted(glob.glob(os.path.join(shard_dir, "*.npz")))
    train = [f for f in files if not f.endswith("-val.npz")]
    val = [f for f in files if f.endswith("-val.npz")]
    if train:
      return train, val
  train = os.path.join(root, f"{dataset_name}.npz")
  val = os.path.join(root, f"{dataset_name}-val.npz")
  why = "downloads are off for this read"
  if not (os.path.exists(train) and os.path.exists(val)) and download:
    why = _download(dataset_name, root, train, val)
  missing = [f for f in (train, val) if not os.path.exists(f)]
  if missing:
    raise DatasetError(
        f"dataset {dataset_name} not found ({', '.join(missing)} missing) and it could not "
        f"be downloaded ({why}). Generate it locally with:\n  "
        f"{generate_command(dataset_name, dataset_dir)}")
  return [train], [val]


def _download(dataset_name: str, root: str, train: str, val: str) -> str:
  """Fetch the dataset's two files from the OGBench server, else from the Hugging Face mirror
  (HF_MIRROR); says in one line which source was used. Returns why neither did."""
  import socket
  import ogbench
  previous = socket.getdefaulttimeout()
  socket.setdefaulttimeout(60)  # a firewalled network must fail, not hang
  try:
    ogbench.download_datasets([dataset_name], root)
    if os.path.exists(train) and os.path.exists(val):
      print(f"dataset {dataset_name}: downloaded from the OGBench server")
      return ""
    server = "the server's download left no files"
  except Exception as e:  # noqa: BLE001  (no network, HTTP error, ...)
    server = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
  finally:
    socket.setdefaulttimeout(previous)
  from dfp_jax.data import hub
  for path in (train, val):
    if os.path.exists(path):
      continue
    why = hub.fetch(HF_MIRROR, os.path.basename(path), path)
    if why is None:
      why = verify_npz(path)
      if why:
        os.remove(path)  # never leave a file that is not the dataset
    if why:
      return f"OGBench server: {server}; Hugging Face mirror {HF_MIRROR}: {why}"
  print(f"dataset {dataset_name}: downloaded from the Hugging Face mirror {HF_MIRROR} (the "
        f"OGBench server failed: {server})")
  return ""


def verify_npz(path: str) -> str:
  """'' when `path` reads as an OGBench dataset file (its keys, as many rows in each, some
  rows, a plausible size), else what is wrong."""
  if os.path.getsize(path) < 1024:
    return f"{os.path.basename(path)} is {os.path.getsize(path)} bytes, not a dataset"
  try:
    with np.load(path) as raw:
      missing = [k for k in REQUIRED_KEYS + ("qpos",) if k not in raw.files]
      if missing:
        return f"{os.path.basename(path)} lacks keys {missing}"
      rows = {k: raw[k].shape[0] for k in REQUIRED_KEYS + ("qpos",)}
  except Exception as e:  # noqa: BLE001  (truncated zip, not a zip, bad pickle)
    return f"{os.path.basename(path)} cannot be read ({type(e).__name__}: {e})"
  if len(set(rows.values())) != 1 or not rows["observations"]:
    return f"{os.path.basename(path)} has inconsistent or no rows {rows}"
  return ""


def _load_files(files, env_name: str, env, obs_dim: int, action_dim: int) -> Dict[str, np.ndarray]:
  from ogbench.relabel_utils import relabel_dataset
  from ogbench.utils import load_dataset
  parts = []
  for f in files:
    try:
      with np.load(f) as raw:
        missing = [k for k in REQUIRED_KEYS + ("qpos",) if k not in raw.files]
      if missing:
        raise DatasetError(f"{f}: missing keys {missing} (has {sorted(raw.files)})")
      part = load_dataset(f, add_info=True)
    except DatasetError:
      raise
    except Exception as e:  # truncated zip, bad pickle, ...
      raise DatasetError(f"{f}: cannot be read as an OGBench dataset ({type(e).__name__}: {e})")
    # Sizes are checked before relabelling, which indexes qpos by the task's layout.
    for k, size in (("observations", obs_dim), ("actions", action_dim)):
      if part[k].shape[1:] != (size,):
        raise DatasetError(f"{f}: {k} have shape {part[k].shape[1:]}, the environment's are "
                           f"({size},): wrong dataset for this task?")
    parts.append(part)
  data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  try:
    relabel_dataset(env_name, env.unwrapped, data)
  except Exception as e:
    raise DatasetError(f"{files[0]}: cannot relabel for {env_name} ({type(e).__name__}: {e})")
  return data


def check_dataset(data: Dict[str, np.ndarray], obs_dim: int, action_dim: int, name: str):
  """Raise DatasetError unless `data` fits an env with these sizes."""
  n = len(data["observations"])
  if n == 0:
    raise DatasetError(f"{name}: dataset is empty")
  if data["observations"].shape[1:] != (obs_dim,):
    raise DatasetError(f"{name}: observations have shape {data['observations'].shape[1:]}, "
                       f"the environment's are ({obs_dim},): wrong dataset for this task?")
  if data["actions"].shape[1:] != (action_dim,):
    raise DatasetError(f"{name}: actions have shape {data['actions'].shape[1:]}, "
                       f"the environment's are ({action_dim},)")
  for k in ("observations", "actions", "rewards", "masks", "next_observations"):
    if len(data[k]) != n:
      raise DatasetError(f"{name}: '{k}' has {len(data[k])} rows, observations have {n}")
    if not np.all(np.isfinite(data[k])):
      raise DatasetError(f"{name}: '{k}' holds NaN or inf")
  if np.abs(data["actions"]).max() > 1.0 + 1e-5:
    raise DatasetError(f"{name}: actions outside [-1, 1] (max |a| = {np.abs(data['actions']).max():.3f})")


def count_shards(task: str, dataset_dir: str = DEFAULT_DATASET_DIR) -> int:
  """Number of training files of the task's dataset (1 unless it is sharded)."""
  return len(_dataset_files(split_task_name(task)[1], dataset_dir, download=False)[0])


def load_task(task: str, dataset_dir: str = DEFAULT_DATASET_DIR, *, num_shards: Optional[int] = None,
              shard: Optional[int] = None, success_timing: str = "post", download: bool = True):
  """Env and relabelled (train, val) datasets of an OGBench single-task name.

  Datasets hold observations, actions, rewards, masks, terminals and
  next_observations, float32, with the task's rewards. For a sharded dataset
  (the 100M one), `num_shards` reads the first shards and `shard` reads one
  shard (modulo their number); by default all are read.
  """
  env_name, dataset_name = split_task_name(task)
  env = make_env(task, success_timing=success_timing)
  train_files, val_files = _dataset_files(dataset_name, dataset_dir, download)
  if shard is not None:
    i = shard % len(train_files)
    train_files, val_files = train_files[i:i + 1], val_files[i:i + 1] or val_files[:1]
  elif num_shards is not None:
    train_files = train_files[:num_shards]
    val_files = val_files[:max(1, num_shards)]
  obs_dim = env.observation_space.shape[0]
  action_dim = env.action_space.shape[0]
  datasets = []
  for files in (train_files, val_files):
    data = _load_files(files, env_name, env, obs_dim, action_dim) if files else None
    if data is not None:
      data = {k: data[k] for k in ("observations", "actions", "rewards", "masks", "terminals",
                                   "next_observations")}
      check_dataset(data, obs_dim, action_dim, os.path.basename(files[0]))
    datasets.append(data)
  return env, datasets[0], datasets[1]
