"""Generate OGBench play datasets to files, in parallel worker processes.

Writes the official npz layout (train file plus `-val` file) from the scripted
play episodes of `ogbench_play.EpisodeCollector`. Every episode is seeded from
(seed, split, episode index) only, so the output does not depend on the number
of workers. Command line: `python -m experiments.generate_ogbench`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings

import numpy as np

from dfp_jax.data.ogbench_play import (DEFAULT_NOISE, TRAIN_SPLIT, VAL_SPLIT, DatasetSpec,
                                       EpisodeCollector, get_spec)

_COLLECTOR: EpisodeCollector | None = None


def _limit_threads() -> None:
  for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
    os.environ.setdefault(var, '1')


def _worker_init(*args) -> None:
  """Initializer of a pool worker process (not used when running in-process)."""
  global _COLLECTOR
  _limit_threads()
  warnings.simplefilter('ignore')
  _COLLECTOR = EpisodeCollector(*args)


def _worker_collect(task: tuple[int, int]) -> tuple[tuple[int, int], dict[str, np.ndarray]]:
  assert _COLLECTOR is not None
  return task, _COLLECTOR.collect(*task)


def _atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      np.savez_compressed(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def check_arguments(dataset_name: str, spec: DatasetSpec, num_episodes: int, val_episodes: int,
                    episode_length: int, task_goal_prob: float, task_id: int | None) -> None:
  """Raise ValueError for arguments no generation can use."""
  if num_episodes < 1:
    raise ValueError('num_episodes must be >= 1.')
  if val_episodes < 1:
    raise ValueError('val_episodes must be >= 1 (the loader needs a non-empty -val.npz).')
  if episode_length < 1:
    raise ValueError('episode_length must be >= 1.')
  if not 0.0 <= task_goal_prob <= 1.0:
    raise ValueError(f'task_goal_prob must be in [0, 1], got {task_goal_prob}.')
  if task_goal_prob > 0 and spec.family != 'cube':
    raise ValueError(
        f'task_goal_prob > 0 is only supported for cube datasets, not {dataset_name!r}.')
  if task_id is not None and not 1 <= int(task_id) <= 5:
    raise ValueError(f'task_id must be in [1, 5], got {task_id}.')


def _collect(tasks, collector_args, num_workers: int, rows: int, store, bar) -> None:
  """Collects every (split, index) episode, in this process or a pool, calling `store`."""
  if num_workers == 1:
    collector = EpisodeCollector(*collector_args)
    for task in tasks:
      store(task, collector.collect(*task))
      bar.update(rows)
    return
  # 'spawn' keeps workers clean when the parent has JAX (or other threaded libraries) loaded.
  ctx = mp.get_context('spawn')
  with ctx.Pool(num_workers, initializer=_worker_init, initargs=collector_args) as pool:
    for task, data in pool.imap_unordered(_worker_collect, tasks):
      store(task, data)
      bar.update(rows)


def generate(
    dataset_name: str,
    num_episodes: int,
    out_dir: str,
    *,
    episode_length: int | None = None,
    val_episodes: int | None = None,
    num_workers: int | None = None,
    seed: int = 0,
    noise: float | None = None,
    progress: bool = True,
    task_goal_prob: float = 0.0,
    task_id: int | None = None,
) -> tuple[str, str]:
  """Generate `<out_dir>/<dataset_name>.npz` and `<out_dir>/<dataset_name>-val.npz`.

  Args:
    dataset_name: OGBench play dataset name, e.g. 'cube-double-play-v0' (see `DATASETS`).
    num_episodes: Number of training episodes.
    out_dir: Output directory (created if needed).
    episode_length: Transitions per episode (each episode stores episode_length + 1 rows).
      Defaults to the official length (1000).
    val_episodes: Number of validation episodes; defaults to max(1, num_episodes // 10) like
      the official script.
    num_workers: Number of worker processes; defaults to os.cpu_count(). 1 runs in the
      calling process.
    seed: Base seed. Episode i of a split is a deterministic function of (seed, split, i).
    noise: Oracle noise level; defaults to the official 0.1.
    progress: Whether to show a tqdm progress bar over environment steps.
    task_goal_prob: Task-biased play (cube datasets only): probability that a new oracle
      target is the goal of single task `task_id` instead of a random one, and that an
      episode starts from the task's initial cubes. 0 (default) gives the plain play data.
    task_id: Single task (1-5) of the biasing; defaults to 2, ogbench's default task.

  Returns:
    (train_path, val_path).
  """
  from tqdm import tqdm

  spec = get_spec(dataset_name)
  episode_length = spec.episode_length if episode_length is None else int(episode_length)
  val_episodes = max(1, num_episodes // 10) if val_episodes is None else int(val_episodes)
  noise = DEFAULT_NOISE if noise is None else float(noise)
  task_goal_prob = float(task_goal_prob)
  check_arguments(dataset_name, spec, num_episodes, val_episodes, episode_length, task_goal_prob, task_id)

  tasks = ([(TRAIN_SPLIT, i) for i in range(num_episodes)]
           + [(VAL_SPLIT, i) for i in range(val_episodes)])
  num_workers = (os.cpu_count() or 1) if num_workers is None else int(num_workers)
  num_workers = max(1, min(num_workers, len(tasks)))
  rows = episode_length + 1
  splits = {TRAIN_SPLIT: num_episodes, VAL_SPLIT: val_episodes}
  buffers: dict[int, dict[str, np.ndarray]] = {}

  def store(task: tuple[int, int], data: dict[str, np.ndarray]) -> None:
    split, idx = task
    if split not in buffers:  # Allocate the whole split once the per-row shapes are known.
      buffers[split] = {k: np.empty((splits[split] * rows, *v.shape[1:]), dtype=v.dtype)
                        for k, v in data.items()}
    for k, v in data.items():
      buffers[split][k][idx * rows:(idx + 1) * rows] = v

  bar = tqdm(total=len(tasks) * rows, desc=dataset_name, unit='step', disable=not progress,
             smoothing=0.05)
  try:
    _collect(tasks, (dataset_name, episode_length, noise, seed, task_goal_prob, task_id),
             num_workers, rows, store, bar)
  finally:
    bar.close()

  os.makedirs(out_dir, exist_ok=True)
  train_path = os.path.join(out_dir, f'{dataset_name}.npz')
  val_path = os.path.join(out_dir, f'{dataset_name}-val.npz')
  # Write the validation file first so that a complete train file implies a complete pair.
  _atomic_savez(val_path, buffers[VAL_SPLIT])
  _atomic_savez(train_path, buffers[TRAIN_SPLIT])
  return train_path, val_path
