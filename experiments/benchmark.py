"""Training-step and action latency of every method, and seeds vectorised, as tables.

  python -m experiments.benchmark [--presets=cube-double-task2,quick] [--iters=20]
                                  [--methods=dfp,qc_fql,mvp,...] [--seed_counts=1,5,10]
  python -m experiments.benchmark --suite=accelerator --out=DIR [--smoke]
  python -m experiments.benchmark --suite=protocol --out=DIR [--smoke] [--protocol_quick]

The third table is the cost of a checkpoint (dfp_jax/train/checkpoint.py) when the
online replay data is largest. The first table measures every method side by side at each preset's (equal)
network sizes: ms per offline and online training step and ms per acting call
(the paper's Table 9). The second compares S DFP seeds trained as one vmapped
update with the same S seeds run one after another (S single updates).

Times one jitted call at a time (block_until_ready after each), after a
warm-up call that compiles; inputs are random arrays of the task's sizes.
"""

import os
import platform
import sys
import tempfile

import jax
from absl import flags, logging

from dfp_jax import agents
from experiments.configs import common
from experiments.measure import (get_config, measure, measure_checkpoint, measure_population,
                                 measure_seeds)

flags.DEFINE_list("presets", ["cube-double-task2", "quick"], "Config presets to measure.")
flags.DEFINE_integer("iters", 20, "Timed calls per measurement.")
flags.DEFINE_list("methods", list(agents.METHODS), "Methods for the first table.")
flags.DEFINE_list("seed_counts", ["1", "5", "10"], "Seed counts S for the vectorised table.")
flags.DEFINE_list("population_sizes", [], "Population sizes M for the population table (members "
                  "on a (pop, data) mesh over every device; empty: skip it).")
flags.DEFINE_integer("checkpoint_seeds", 1, "Seeds in the checkpoint-cost table (0: skip it).")
flags.DEFINE_enum("suite", "tables", ["tables", "accelerator", "protocol"], "tables: the tables "
                  "below on stdout; accelerator: experiments/accelerator_suite.py into --out; "
                  "protocol: environment stepping, evaluation and the quick run "
                  "(experiments/protocol_suite.py) into --out.")
flags.DEFINE_list("protocol_members", ["1", "2", "4", "8", "16"], "Protocol suite: member counts "
                  "of the environment-stepping table.")
flags.DEFINE_list("protocol_episodes", ["20", "50", "100"], "Protocol suite: episodes per "
                  "evaluation in the evaluation table.")
flags.DEFINE_bool("protocol_quick", False, "Protocol suite: also train the quick run twice "
                  "(serial protocol and defaults), about 25 minutes on 2 cores.")
flags.DEFINE_string("out", "accelerator", "Directory for the accelerator suite's files.")
flags.DEFINE_bool("smoke", False, "The accelerator suite at tiny sizes (CPU, the test suite).")
flags.DEFINE_integer("obs_dim", 40, "Observation size of the random inputs (40, as every figure "
                     "in the README; the cube-double environment's is 37).")
flags.DEFINE_integer("action_dim", 5, "Action size (OGBench manipulation: 5).")
flags.DEFINE_multi_string("overrides", [], "A config field set in every measured config, "
                          "field=value, repeatable: --overrides=train.batch_size=256 "
                          "--overrides=agent.actor_hidden=(256,256) (values as Python literals; "
                          "anything else is a string).")
FLAGS = flags.FLAGS


def check_flags():
  """ValueError naming the first unknown method or preset of the flags."""
  for method in FLAGS.methods:
    agents.get(method)  # unknown method: one line naming the choices
  for preset in FLAGS.presets:
    if preset not in common.PRESET_OVERRIDES:
      raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(common.PRESETS)}")
  for name in ("seed_counts", "population_sizes", "protocol_members", "protocol_episodes"):
    for v in FLAGS[name].value:
      if not v.strip().isdigit() or int(v) < 1:
        raise ValueError(f"--{name}={','.join(FLAGS[name].value)}: expected positive integers")


def main(argv):
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {' '.join(argv[1:])}; flags are --name=value")
  try:
    check_flags()
    run_suites()
  except ValueError as e:
    sys.exit(f"error: {e}")


def run_suites():
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  if FLAGS.suite == "accelerator":
    from experiments import accelerator_suite
    accelerator_suite.run(FLAGS.out, FLAGS.smoke, 2 if FLAGS.smoke else FLAGS.iters,
                          FLAGS.obs_dim, FLAGS.action_dim, FLAGS.overrides)
    print(open(os.path.join(FLAGS.out, "accelerator.md")).read())
    return
  if FLAGS.suite == "protocol":
    from experiments import protocol_suite
    print(protocol_suite.run(FLAGS.out if FLAGS["out"].present else "protocol",
                             [int(m) for m in FLAGS.protocol_members],
                             [int(e) for e in FLAGS.protocol_episodes], FLAGS.protocol_quick,
                             FLAGS.smoke))
    return
  dev = jax.devices()[0]
  print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, "
        f"host: {platform.processor() or platform.machine()}, jax {jax.__version__}")
  cols = ["preset", "method", "hidden", "batch", "h", "samples (act/target)", "offline ms/step",
          "online ms/step", "online/offline", "online steps/s", "act ms/call"]
  print("| " + " | ".join(cols) + " |")
  print("|" + "---|" * len(cols))
  for preset in FLAGS.presets:
    for method in FLAGS.methods:
      row = measure(get_config(method, preset, FLAGS.overrides), FLAGS.obs_dim,
                    FLAGS.action_dim, FLAGS.iters)
      row["preset"], row["method"] = preset, method
      row["online steps/s"] = 1e3 / row["online ms/step"]
      print("| " + " | ".join(f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c])
                              for c in cols) + " |", flush=True)
  print("\nS seeds, online update: one vmapped call vs S sequential single-seed calls")
  print("| preset | S | vmapped ms/call | sequential ms (S x single) | seed-steps/s vmapped | "
        "speed-up |")
  print("|---|---|---|---|---|---|")
  for preset in FLAGS.presets:
    config = get_config("dfp", preset, FLAGS.overrides)
    single = measure_seeds(config, FLAGS.obs_dim, FLAGS.action_dim, 1, FLAGS.iters)
    for n in (int(x) for x in FLAGS.seed_counts):
      vec = single if n == 1 else measure_seeds(config, FLAGS.obs_dim, FLAGS.action_dim, n,
                                                FLAGS.iters)
      print(f"| {preset} | {n} | {vec:.1f} | {n * single:.1f} | {1e3 * n / vec:.1f} | "
            f"{n * single / vec:.2f}x |", flush=True)
  if FLAGS.population_sizes:
    print(f"\nPopulation of M DFP members, online update on a (pop, data) mesh over the "
          f"{jax.device_count()} devices (members padded to a multiple of pop)")
    print("| preset | M | mesh (pop, data) | ms/update | member-updates/s |")
    print("|---|---|---|---|---|")
    for preset in FLAGS.presets:
      config = get_config("dfp", preset, FLAGS.overrides)
      for m in (int(x) for x in FLAGS.population_sizes):
        pop, data, ms = measure_population(config, FLAGS.obs_dim, FLAGS.action_dim, m,
                                           FLAGS.iters)
        print(f"| {preset} | {m} | ({pop}, {data}) | {ms:.1f} | {1e3 * m / ms:.1f} |",
              flush=True)
  if FLAGS.checkpoint_seeds > 0:
    print(f"\nCheckpoint of a DFP run with {FLAGS.checkpoint_seeds} seed(s), online buffers full "
          "(the largest it gets), asynchronous save")
    print("| preset | online transitions per seed | MB on disk | save returns (s) | "
          "written (s) |")
    print("|---|---|---|---|---|")
    for preset in FLAGS.presets:
      config = get_config("dfp", preset, FLAGS.overrides)
      with tempfile.TemporaryDirectory() as d:
        mb, returned, written = measure_checkpoint(config, FLAGS.obs_dim, FLAGS.action_dim,
                                                   FLAGS.checkpoint_seeds, d)
      print(f"| {preset} | {config.train.online_steps} | {mb:.0f} | {returned:.2f} | "
            f"{written:.2f} |", flush=True)


if __name__ == "__main__":
  from experiments import cli
  cli.run(main)
