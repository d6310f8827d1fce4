"""Generate Robomimic-format low-dim datasets (lift, can, square) with scripted demonstrators.

    python -m experiments.generate_robomimic --task=square --episodes=300 \\
        --out=~/.robomimic/square/mh/low_dim_v15.hdf5

Runs the varied, imperfect scripted operators (`dfp_jax/data/robomimic_scripted.py`) in
robosuite 1.5.1 and writes the successful episodes in robomimic's hdf5 layout
(`dfp_jax/data/robomimic_generate.py`). Needs the Robomimic extra.
"""

import os
import sys
import time

from absl import app, flags

from dfp_jax.data import DatasetError, robomimic_data
from dfp_jax.data.robomimic_generate import generate

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
  from experiments import cli
  cli.run(main)
