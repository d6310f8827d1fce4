"""Generate Robomimic-format low-dim datasets (lift, can, square) with scripted demonstrators.

The official multi-human datasets cannot be downloaded here. This runs the
varied, imperfect scripted operators of `dfp_jax.robomimic_scripted` in
robosuite 1.5.1, keeps the successful episodes, and writes them in
robomimic's hdf5 layout (with `train` / `valid` splits, each demo's simulator
`states` and `model_file`, and the env metadata robomimic writes under
robosuite 1.5.1: its composite controller config and version), so
`dfp_jax.robomimic_data.load_dataset` and the trainer read it like the real
file and check it against the env. Episode i depends on (seed, i) only, not on
the number of workers.

    python -m experiments.generate_robomimic --task=square --episodes=300 \\
        --out=~/.robomimic/square/mh/low_dim_v15.hdf5

Needs the Robomimic extra (`pip install -e .[robomimic]`).
"""

import multiprocessing as mp
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np
from absl import app, flags

from dfp_jax import robomimic_data, robomimic_env
from dfp_jax.ogbench_data import DatasetError

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
  from dfp_jax import robomimic_scripted
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
  robomimic_data.write_dataset(path, demos, env_meta(task), masks)
  import h5py
  with h5py.File(path, "a") as f:  # say where the data came from; robomimic ignores the attribute
    f["data"].attrs["source"] = (f"scripted demonstrators (experiments.generate_robomimic, "
                                 f"seed {seed}, {len(demos)} of {episodes} episodes)")
  lengths = [len(d["actions"]) for d in demos]
  return {"attempted": episodes, "kept": len(demos), "success_rate": len(demos) / episodes,
          "mean_length": float(np.mean(lengths)), "path": path}


FLAGS = flags.FLAGS


def _define_flags():
  """The command's flags; defined only when it runs, so importing this module (the trainer,
  the tests) does not clash with other modules' flags of the same names."""
  flags.DEFINE_string("task", None, f"Robomimic task: {', '.join(robomimic_data.TASKS)}.")
  flags.DEFINE_integer("episodes", 200, "Scripted episodes to run; the successful ones are kept.")
  flags.DEFINE_string("out", None, "Output hdf5 file. The trainer reads <dataset_dir>/<task>/mh/"
                      "low_dim_v15.hdf5 (robomimic's layout; --config.env.dataset_dir).")
  flags.DEFINE_integer("seed", 0, "Base seed; episode i depends on (seed, i) only.")
  flags.DEFINE_integer("workers", min(2, os.cpu_count() or 1), "Worker processes.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.task is None:
    sys.exit(f"error: --task is required (one of: {', '.join(robomimic_data.TASKS)})")
  if not FLAGS.out:
    sys.exit("error: --out is required, e.g. --out=~/.robomimic-scripted/"
             f"{FLAGS.task}/mh/low_dim_v15.hdf5")
  out = FLAGS.out
  start = time.time()
  try:
    summary = generate(FLAGS.task, FLAGS.episodes, out, FLAGS.seed, FLAGS.workers)
  except DatasetError as e:
    sys.exit(f"error: {e}")
  print(f"{summary['path']}: kept {summary['kept']} of {summary['attempted']} episodes "
        f"(success rate {summary['success_rate']:.1%}), mean demo length "
        f"{summary['mean_length']:.1f} steps, {time.time() - start:.1f}s")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
