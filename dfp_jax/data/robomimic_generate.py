"""Generate Robomimic-format low-dim datasets (lift, can, square) with scripted demonstrators,
in parallel worker processes (command line: `python -m experiments.generate_robomimic`).

The official multi-human datasets cannot be downloaded here. This runs the
varied, imperfect scripted operators of `dfp_jax.data.robomimic_scripted` in
robosuite 1.5.1, keeps the successful episodes, and writes them in
robomimic's hdf5 layout (with `train` / `valid` splits, each demo's simulator
`states` and `model_file`, and the env metadata robomimic writes under
robosuite 1.5.1: its composite controller config and version), so
`dfp_jax.data.robomimic_data.load_dataset` and the trainer read it like the real
file and check it against the env. Episode i depends on (seed, i) only, not on
the number of workers.

Needs the Robomimic extra (`pip install -e .[robomimic]`).
"""

import multiprocessing as mp
import os
from typing import Dict, List, Optional

import numpy as np

from dfp_jax.data import DatasetError, robomimic_data, robomimic_env

VALID_FRACTION = 0.1  # robomimic's train / valid split


def _check_task(task: str):
  if task not in robomimic_data.TASKS:
    raise DatasetError(f"unknown Robomimic task {task!r}; choose one of: "
                       f"{', '.join(robomimic_data.TASKS)}")


def env_meta(task: str) -> Dict:
  """The env metadata robomimic stores in `data.attrs["env_args"]` for `task` under robosuite
  1.5.1: the OSC_POSE config converted to robosuite's composite format, as robomimic does."""
  _check_task(task)
  robosuite = robomimic_env.import_robosuite()
  controller = robomimic_env.composite_controller_config(robomimic_env.OSC_POSE, "Panda")
  return {"env_name": robomimic_data.TASKS[task][0], "env_version": robosuite.__version__,
          "type": 1,
          "env_kwargs": {"has_renderer": False, "has_offscreen_renderer": False,
                         "ignore_done": True, "use_object_obs": True, "use_camera_obs": False,
                         "control_freq": 20, "controller_configs": controller,
                         "robots": ["Panda"], "camera_depths": False, "camera_heights": 84,
                         "camera_widths": 84, "reward_shaping": False}}


def episode_seed(seed: int, index: int) -> int:
  """Seed of episode `index` (env reset, operator and its noise), from (seed, index) alone."""
  return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


_WORKER = {}


def _init_worker(task: str):
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")
  _WORKER["task"] = task
  _WORKER["env"] = robomimic_env.make_env(env_meta(task), task)


def _run(job):
  from dfp_jax.data import robomimic_scripted
  index, seed = job
  demo = robomimic_scripted.rollout(_WORKER["env"], _WORKER["task"], seed)
  return index, demo


def generate(task: str, episodes: int, out: str, seed: int = 0, workers: int = 1,
             progress: bool = True) -> Dict:
  """Run `episodes` scripted episodes and write the successful ones to `out`.

  Returns a summary: attempted, kept, success_rate, mean_length, path.
  """
  _check_task(task)
  if episodes <= 0:
    raise DatasetError(f"--episodes must be positive, got {episodes}")
  if workers <= 0:
    raise DatasetError(f"--workers must be positive, got {workers}")
  robomimic_env.import_robosuite()  # a clear error without the extra
  from tqdm import tqdm

  jobs = [(i, episode_seed(seed, i)) for i in range(episodes)]
  results: List[Optional[Dict]] = [None] * episodes
  bar = tqdm(total=episodes, desc=f"{task} demos", unit="ep", disable=not progress)
  kept = 0

  def store(index, demo):
    nonlocal kept
    results[index] = demo
    kept += bool(demo["success"])
    bar.update(1)
    bar.set_postfix(success=f"{kept}/{bar.n}")

  try:
    if workers == 1:
      _init_worker(task)
      for job in jobs:
        store(*_run(job))
    else:
      # spawn: workers must not inherit the parent's threads (jax, mujoco's renderer)
      with mp.get_context("spawn").Pool(min(workers, episodes), _init_worker, (task,)) as pool:
        for index, demo in pool.imap_unordered(_run, jobs):
          store(index, demo)
  finally:
    bar.close()

  demos = [{k: d[k] for k in ("obs", "next_obs", "actions", "rewards", "dones", "states",
                              "model_file")}
           for d in results if d["success"]]
  if not demos:
    raise DatasetError(f"no scripted {task} episode of {episodes} succeeded; nothing written")
  order = np.random.default_rng(np.random.SeedSequence([seed, 2**31])).permutation(len(demos))
  n_valid = max(1, round(VALID_FRACTION * len(demos))) if len(demos) > 1 else 0
  masks = {"train": sorted(order[n_valid:].tolist()), "valid": sorted(order[:n_valid].tolist())}
  path = os.path.expanduser(out)
  # Written beside the target and renamed when complete: a killed generation leaves no
  # truncated file, and two runs generating the same (seeded) file at once both end well.
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    robomimic_data.write_dataset(tmp, demos, env_meta(task), masks)
    import h5py
    with h5py.File(tmp, "a") as f:  # where the data came from; robomimic ignores the attribute
      f["data"].attrs["source"] = (f"scripted demonstrators (experiments.generate_robomimic, "
                                   f"seed {seed}, {len(demos)} of {episodes} episodes)")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  lengths = [len(d["actions"]) for d in demos]
  return {"attempted": episodes, "kept": len(demos), "success_rate": len(demos) / episodes,
          "mean_length": float(np.mean(lengths)), "path": path}
