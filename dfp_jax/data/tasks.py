"""Which benchmark a task name belongs to, and its environment and dataset.

`config.env.task` is either an OGBench single-task name
('cube-double-play-singletask-task2-v0') or a Robomimic task ('lift', 'can',
'square'), or a synthetic one ('synthetic-cube-double': sizes without a simulator, for
measuring the loop). The trainer calls these three functions and never asks which.
Robomimic environments are built from the dataset's own metadata, so the
dataset file must exist before the environment can.
"""

import os
import re

import gymnasium as gym
import numpy as np

from dfp_jax.data import DatasetError, ogbench_data, robomimic_data, synthetic


def sparse_rewards(rewards):
  """`env.sparse_reward`: -1 for every reward that is not 0, 0 where it is (the task is
  solved), as Q-chunking's `--sparse` does to offline and online rewards alike."""
  return -(np.asarray(rewards) != 0).astype(np.float32)


class SparseReward(gym.Wrapper):
  """An environment whose step rewards are `sparse_rewards` of its own; other attributes are
  the wrapped environment's."""

  def step(self, action):
    obs, reward, terminated, truncated, info = self.env.step(action)
    return obs, float(sparse_rewards(reward)), terminated, truncated, info

  def __getattr__(self, name):
    if name.startswith("_"):
      raise AttributeError(name)
    return getattr(self.env, name)


def noisy_dataset(data, action_space, action_sigma: float, obs_sigma: float, seed: int,
                  shard: int = 0):
  """`env.dataset_action_noise` / `env.dataset_obs_noise`: the offline data with Gaussian
  noise, drawn from (`seed`, `shard`). Actions get sigma x half the box width, clipped to the box;
  observations sigma x each dimension's std over the data, and a state keeps one noise draw
  as an observation and as the previous transition's next observation (rows are consecutive
  within an episode; `terminals` ends one). Returns a new dict; other keys are shared."""
  out = dict(data)
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(shard), 0xDA7A]))
  if action_sigma:
    low, high = action_space.low, action_space.high
    a = np.asarray(data["actions"], np.float32)
    noise = rng.standard_normal(a.shape) * (action_sigma * (high - low) / 2)
    out["actions"] = np.clip(a + noise, low, high).astype(a.dtype)
  if obs_sigma:
    obs = np.asarray(data["observations"])
    scale = obs_sigma * obs.astype(np.float64).std(axis=0)
    now = rng.standard_normal(obs.shape) * scale
    fresh = rng.standard_normal(obs.shape) * scale  # next states that start no row
    follows = np.zeros(len(obs), bool)  # row t's next observation is row t + 1's observation
    follows[:-1] = np.asarray(data["terminals"])[:-1] == 0
    nxt = np.where(follows[:, None], np.roll(now, -1, axis=0), fresh)
    out["observations"] = (obs + now).astype(obs.dtype)
    out["next_observations"] = (np.asarray(data["next_observations"]) + nxt).astype(obs.dtype)
  return out


def _rewarded(env, env_config):
  return SparseReward(env) if env_config.get("sparse_reward") else env


def is_robomimic(task: str) -> bool:
  return task in robomimic_data.TASKS


def is_synthetic(task: str) -> bool:
  return synthetic.is_synthetic(task)


def check_task(task: str):
  """Raise DatasetError unless `task` names an OGBench single task or a Robomimic task."""
  if is_robomimic(task):
    return
  if synthetic.is_synthetic(task):
    try:
      synthetic.shapes(task)
    except ValueError as e:
      raise DatasetError(str(e)) from None
    return
  try:
    ogbench_data.split_task_name(task)
  except DatasetError:
    raise DatasetError(f"task {task!r} is neither an OGBench single-task name such as "
                       f"'cube-double-play-singletask-task2-v0' nor a Robomimic task "
                       f"({', '.join(robomimic_data.TASKS)})") from None


def robomimic_path(env_config) -> str:
  return robomimic_data.default_path(env_config.task, env_config.dataset_dir)


def robomimic_file(env_config) -> str:
  """The task's Robomimic file, downloaded from the Hugging Face hub if it is missing; a
  DatasetError naming both ways to get it when it cannot be."""
  path = robomimic_path(env_config)
  if os.path.exists(path):
    return path
  why = robomimic_data.download(env_config.task, path)
  if why is None:
    return path
  task = env_config.task
  raise DatasetError(
      f"robomimic dataset {path} not found, and it could not be downloaded from the Hugging "
      f"Face hub ({why}). Download the official multi-human low-dim file there "
      f"({robomimic_data.HF_REPO}: {robomimic_data.hub_filename(task)}, or robomimic's "
      f"download_datasets.py --tasks {task} --dataset_types mh --hdf5_types low_dim), or "
      f"generate scripted demonstrations with:\n"
      f"  python -m experiments.generate_robomimic --task={task} --episodes=200 --out={path}")


def count_shards(env_config) -> int:
  """Number of training files of the task's dataset (1 unless it is a sharded OGBench one)."""
  check_task(env_config.task)
  if is_robomimic(env_config.task) or synthetic.is_synthetic(env_config.task):
    return 1
  return ogbench_data.count_shards(env_config.task, env_config.dataset_dir)


def make_env(env_config):
  """A fresh environment of the task, with the gymnasium interface (sparse rewards with
  `env.sparse_reward`)."""
  return _rewarded(_make_env(env_config), env_config)


def _make_env(env_config):
  if synthetic.is_synthetic(env_config.task):
    return synthetic.make_env(env_config.task)
  if is_robomimic(env_config.task):
    from dfp_jax.data import robomimic_env
    path = robomimic_file(env_config)
    return robomimic_env.make_env(robomimic_data.read_env_meta(path), env_config.task)
  return ogbench_data.make_env(env_config.task, success_timing=env_config.success_timing)


def load_task(env_config, *, num_shards=None, shard=None):
  """(env, train dataset, validation dataset or None) of the task; see ogbench_data.load_task.

  A Robomimic file is read whole (or its `env.dataset_filter` split) and has
  no validation part here. With `env.sparse_reward` the datasets' rewards and the
  environment's are `sparse_rewards`; with `env.dataset_action_noise` or
  `env.dataset_obs_noise` the training data is `noisy_dataset` (the validation data, which
  only measures, stays clean).
  """
  env, train, val = _load_task(env_config, num_shards=num_shards, shard=shard)
  if env_config.get("sparse_reward"):
    for data in (train, val):
      if data is not None:
        data["rewards"] = sparse_rewards(data["rewards"])
  action_sigma = env_config.get("dataset_action_noise") or 0.0
  obs_sigma = env_config.get("dataset_obs_noise") or 0.0
  if action_sigma or obs_sigma:
    train = noisy_dataset(train, env.action_space, action_sigma, obs_sigma,
                          env_config.get("dataset_noise_seed") or 0, shard or 0)
  return _rewarded(env, env_config), train, val


def _load_task(env_config, *, num_shards=None, shard=None):
  if synthetic.is_synthetic(env_config.task):
    return synthetic.make_env(env_config.task), synthetic.dataset(env_config.task), None
  if not is_robomimic(env_config.task):
    return ogbench_data.load_task(env_config.task, env_config.dataset_dir, num_shards=num_shards,
                                  shard=shard, success_timing=env_config.success_timing)
  path = robomimic_file(env_config)
  data = robomimic_data.load_dataset(path, env_config.get("dataset_filter"))
  env = _make_env(env_config)
  data.pop("env_meta")
  ogbench_data.check_dataset(data, env.observation_space.shape[0], env.action_space.shape[0],
                             os.path.basename(path))
  from dfp_jax.data import robomimic_env
  robomimic_env.check_layout(env, path)  # the file's observation layout is this robosuite's
  return env, data, None


def ensure_dataset(env_config):
  """Generate the dataset of a preset that asks for it (quick, smoke) if it is missing."""
  if env_config.generate_episodes <= 0 or is_synthetic(env_config.task):
    return
  if is_robomimic(env_config.task):
    path = robomimic_path(env_config)
    if not os.path.exists(path):
      from dfp_jax.data import robomimic_generate
      print(f"generating {env_config.generate_episodes} scripted {env_config.task} "
            f"demonstrations into {path} (first use only)")
      summary = robomimic_generate.generate(env_config.task, env_config.generate_episodes, path,
                                            workers=os.cpu_count() or 1)
      print(f"kept {summary['kept']} of {summary['attempted']} scripted episodes "
            f"(success rate {summary['success_rate']:.0%})")
    return
  _, dataset_name = ogbench_data.split_task_name(env_config.task)
  root = os.path.expanduser(env_config.dataset_dir)
  if all(os.path.exists(os.path.join(root, f"{dataset_name}{s}.npz")) for s in ("", "-val")):
    return
  from dfp_jax.data import ogbench_generate
  print(f"generating {env_config.generate_episodes} play episodes of {dataset_name} "
        f"into {root} (first use only)")
  task_id = re.search(r"-task(\d+)-", env_config.task)
  ogbench_generate.generate(dataset_name, env_config.generate_episodes, root,
                            episode_length=env_config.generate_episode_length,
                            task_goal_prob=env_config.generate_task_goal_prob,
                            task_id=int(task_id[1]) if task_id else None)
