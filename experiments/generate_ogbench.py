"""Generate OGBench play datasets locally, in the official npz layout (train + `-val` file).

    python -m experiments.generate_ogbench --dataset=cube-double-play-v0 --episodes=1000 --out=DIR

The official datasets cannot be downloaded everywhere; this drives the scripted
play oracles shipped with ogbench (`dfp_jax/data/ogbench_play.py`), one process
per core. `--task_goal_prob` makes the task-biased play of the `quick` preset.
"""

import sys
import time

import numpy as np

from dfp_jax.data.ogbench_generate import generate
from dfp_jax.data.ogbench_play import DATASETS, DEFAULT_NOISE, DEFAULT_TASK_ID


def _main(_argv) -> None:
  from absl import flags

  flags_ = flags.FLAGS
  if flags_.dataset not in DATASETS:
    sys.exit(f'error: unknown dataset {flags_.dataset!r}; choose one of: '
             f'{", ".join(sorted(DATASETS))}')
  if flags_.episodes < 1:
    sys.exit(f'error: --episodes={flags_.episodes}: must be >= 1')
  t0 = time.time()
  train_path, val_path = generate(
      flags_.dataset,
      flags_.episodes,
      flags_.out,
      episode_length=flags_.episode_length,
      val_episodes=flags_.val_episodes,
      num_workers=flags_.workers,
      seed=flags_.seed,
      noise=flags_.noise,
      task_goal_prob=flags_.task_goal_prob,
      task_id=flags_.task_id,
  )
  elapsed = time.time() - t0
  num_steps = 0
  for path in (train_path, val_path):
    with np.load(path) as f:
      terminals = f['terminals']
      rows, episodes = len(terminals), int(terminals.sum())
    num_steps += rows
    print(f'{path}: {episodes} episodes, {rows - episodes} transitions ({rows} rows)')
  print(f'Done in {elapsed:.1f}s ({num_steps / elapsed:.0f} env steps/s incl. startup and saving).')


def _define_flags() -> None:
  from absl import flags

  flags.DEFINE_string(
      'dataset', 'cube-double-play-v0', f'Dataset name, one of: {", ".join(sorted(DATASETS))}.'
  )
  flags.DEFINE_integer('episodes', 1000, 'Number of training episodes.')
  flags.DEFINE_string('out', None, 'Output directory.', required=True)
  flags.DEFINE_integer(
      'episode_length', None, 'Transitions per episode (default: official length).'
  )
  flags.DEFINE_integer(
      'val_episodes', None, 'Validation episodes (default: max(1, episodes // 10)).'
  )
  flags.DEFINE_integer('workers', None, 'Worker processes (default: os.cpu_count()).')
  flags.DEFINE_integer('seed', 0, 'Base random seed.')
  flags.DEFINE_float('noise', None, f'Oracle noise level (default: {DEFAULT_NOISE}).')
  flags.DEFINE_float(
      'task_goal_prob',
      0.0,
      'Task-biased play (cube only): probability of task-goal targets/starts.',
  )
  flags.DEFINE_integer('task_id', None, f'Single task of the biasing (default: {DEFAULT_TASK_ID}).')


if __name__ == '__main__':
  from experiments import cli

  _define_flags()
  cli.run(_main)
