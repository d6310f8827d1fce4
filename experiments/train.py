"""Train: `python -m experiments.train [--config=experiments/configs/<method>.py:<preset>]`.

With no flags, DFP on `quick` (its dataset generated on first use). Any config field can be
overridden (`--config.agent.top_k=2`); `dfp_jax.train.plan` plans the runs the flags ask for.
"""

import os
import sys

import jax
from absl import flags, logging
from ml_collections import config_flags

from dfp_jax import parallel
from dfp_jax.train import checkpoint, faults, lock, plan
from experiments import cli

_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def define_flags(fv=flags.FLAGS, argv=None):
  """The trainer's flags on `fv`; `argv` (default sys.argv) names the config overrides.
  A config file or override that cannot be read exits with one `error:` line."""
  try:  # config_flags reads the file and the overrides here when no --config is given
    config_flags.DEFINE_config_file(
        "config", os.path.join(_CONFIGS, "dfp.py"), "Config file, optionally ':<preset>'.",
        flag_values=fv, lock_config=True, sys_argv=argv)
  except Exception as e:  # noqa: BLE001  (several types, chained)
    sys.exit(f"error: {cli.chain_line(e)}")
  on = {"flag_values": fv}  # details of each: docs/scaling.md and docs/checkpoints.md
  flags.DEFINE_string("workdir", None, "Output directory (default "
                      "runs/<method>/<preset>/<task>/seed_<seed>).", **on)
  flags.DEFINE_list("seeds", None, "Seeds trained together, into <workdir>/<task>/seed_<k>/.", **on)
  flags.DEFINE_list("tasks", None, "Presets or the config file's TASK_GROUPS, in turn.", **on)
  flags.DEFINE_string("ablation", None, "One of the config file's ABLATIONS (the paper's "
                      "values of top_k, topk_weight or temperatures).", **on)
  flags.DEFINE_multi_string("sweep", [], "FIELD=V1;V2;...: every value (x every other --sweep "
                            "x every seed) in one population program.", **on)
  flags.DEFINE_list("mesh", None, "POP,DATA: devices along the population and along each "
                    "member's batch.", **on)
  flags.DEFINE_string("init_from", None, "WORKDIR[@STEP]: start the online phase from that run's "
                      "offline checkpoint instead of pretraining.", **on)
  flags.DEFINE_bool("share_offline", False, "Pretrain once per seed and start every run of the "
                    "sweep or ablation from it.", **on)
  flags.DEFINE_bool("overwrite", False, "Replace a run in the workdir (default: the same config "
                    "resumes, another is an error).", **on)
  flags.DEFINE_bool("distributed", False, "jax.distributed.initialize() (TPU pods, SLURM, or "
                    "the three flags below).", **on)
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0.", **on)
  flags.DEFINE_integer("num_processes", None, "Processes, with --coordinator_address.", **on)
  flags.DEFINE_integer("process_id", None, "This process's index.", **on)


define_flags()
FLAGS = flags.FLAGS


def plan_from(argv, fv=FLAGS) -> plan.Plan:
  """The runs parsed flags `fv` ask for (`argv`: what absl left over), checked."""
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {' '.join(argv[1:])}; flags are --name=value")
  return plan.plan_runs(plan.Request(
      config_flags.get_config_filename(fv["config"]), fv.config,
      config_flags.get_override_values(fv["config"]), workdir=fv.workdir, seeds=fv.seeds,
      tasks=fv.tasks, ablation=fv.ablation, sweeps=fv.sweep, mesh=fv.mesh,
      init_from=fv.init_from, share_offline=fv.share_offline, overwrite=fv.overwrite))


def main(argv):
  if not FLAGS["verbosity"].present:  # orbax logs every checkpoint step at INFO
    logging.set_verbosity(logging.WARNING)
  checkpoint.quiet_background_errors()
  if FLAGS.distributed or FLAGS.coordinator_address:
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id)
  try:
    for config, summaries in plan.execute(plan_from(argv)):
      for summary in summaries if jax.process_index() == 0 else []:
        print(f"done: {config.env.task} {summary.get('member', summary['seed'])}: " + ", ".join(
            f"{k}={v:.3f}" for k, v in summary.items() if isinstance(v, float)))
  except faults.Interrupted as e:
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(128 + int(e.signum))


# The trainer's own one-line failures, and those that exit at once (writer threads may hang).
ERRORS = (faults.NonFiniteError, lock.LockedError, faults.EnvironmentFailure)
FATAL = (checkpoint.CheckpointError, plan.WriteError)

if __name__ == "__main__":
  cli.run(main, errors=ERRORS, fatal=FATAL)
