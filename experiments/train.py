"""Train a method: `python -m experiments.train [--config=experiments/configs/<method>.py:<preset>] [--workdir=DIR]`.

With no flags it runs DFP on the `quick` preset, generating its small dataset
on first use. Presets: the paper's OGBench and Robomimic tasks (`lift`, `can`,
`square`), the offline-RL tasks, `quick`, `quick-lift` / `-can` / `-square`
(scripted Robomimic demonstrations generated on first use) and `smoke`. Methods: one config file each (dfp, dfp_no_topk, qc_fql, fql,
qc_bfn, bfn, mvp, mvp_topk), all with the same presets. Any config field can
be overridden, e.g. `--config.agent.top_k=2`.

Sweeps: `--seeds=0,1,2,3,4` trains the seeds together as one vmapped program
and writes `<workdir>/<task>/seed_<k>/`; `--tasks=cube-triple` (a group from
the config file's TASK_GROUPS, or a comma list of presets) runs the tasks one
after another, each with every seed and the same command-line overrides.
`--ablation=top_k` (or `topk_weight`, `temperatures`: the config file's
ABLATIONS) runs every value of that field and writes
`<workdir>/<task>/<field>=<value>/seed_<k>/`; `python -m experiments.report
<workdir> --out=DIR --label_key=agent.top_k` makes its table.

Populations: `--sweep=agent.topk_weight=0.1;0.5;1;5` (repeatable; fields that
do not change array shapes: temperatures, topk_weight, ema_tau, lr, tau,
discount) trains every combination of the swept values with every seed as one
program, each member writing `<workdir>/<task>/<field>=<value>/.../seed_<k>/`.
An ablation of such a field runs as a population too (K, N and network sizes
run one value after another). `--mesh=POP,DATA` lays the population over the
devices: members along POP, each member's batch along DATA.
"""

import errno
import importlib.util
import inspect
import json
import logging as pylogging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from dfp_jax import agents, fileio, parallel
from dfp_jax.data import ogbench_data, tasks
from dfp_jax.train import checkpoint, init_from, population, validation


def one_line(e: BaseException) -> str:
  """An exception chain (config_flags chains several, some with tracebacks inside) as one line."""
  parts = []
  while e is not None:
    text = str(e).split("Traceback")[0].strip().strip("\"'")
    if isinstance(e, (KeyError, AttributeError)) and text:
      text = f"no config field {text.strip(chr(39))}"
    text = " ".join(text.split())
    if text and not any(text in p for p in parts):
      parts.append(text)
    e = e.__cause__ or e.__context__
  return " ".join(parts) or "invalid flags"


_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
try:  # config_flags reads the file and the overrides in sys.argv here, at definition
  config_flags.DEFINE_config_file(
      "config", os.path.join(_CONFIGS, "dfp.py"), "Config file, optionally ':<preset>'.",
      lock_config=True)
except Exception as e:  # noqa: BLE001  (several types, chained)
  sys.exit(f"error: {one_line(e)}")
flags.DEFINE_string("workdir", None, "Output directory (default runs/<method>/<task>/seed_<seed>).")
flags.DEFINE_list("seeds", None, "Seeds trained together, vectorised (default: config.seed alone).")
flags.DEFINE_list("tasks", None, "Presets or preset groups to sweep, one after another.")
flags.DEFINE_string("ablation", None, "Sweep one hyperparameter over the paper's values "
                    "(the config file's ABLATIONS: top_k, topk_weight, temperatures).")
flags.DEFINE_multi_string("sweep", [], "FIELD=V1;V2;... : train every value of FIELD (and of "
                          "every other --sweep) with every seed as one population program.")
flags.DEFINE_list("mesh", None, "POP,DATA: devices along the population and along each "
                  "member's batch (default: every device on POP when the population is large "
                  "enough).")
flags.DEFINE_string("init_from", None, "WORKDIR[@STEP]: start the online phase from that run's "
                    "checkpoint at the end of its offline phase (or at offline step STEP) "
                    "instead of pretraining; only online-phase fields may differ.")
flags.DEFINE_bool("share_offline", False, "Pretrain once per seed into <workdir>/<task>/offline "
                  "and start every run of the sweep or ablation from it (online-phase fields "
                  "only: top-K's K, N, lambda, tau_EMA, the online budget).")
flags.DEFINE_bool("overwrite", False, "Replace a run already in the workdir (by default a run "
                  "with the same config resumes from its latest checkpoint, another config is an error).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (auto-detects TPU pods "
                  "and SLURM; or give the three flags below).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for explicit multi-process.")
flags.DEFINE_integer("num_processes", None, "Number of processes, with --coordinator_address.")
flags.DEFINE_integer("process_id", None, "This process's index, with --coordinator_address.")
FLAGS = flags.FLAGS


def default_workdir(config, preset):
  """runs/<method>/<preset>/<task>/seed_<seed>: presets of one task never share a workdir."""
  return os.path.join("runs", config.method, preset, config.env.task, f"seed_{config.seed}")


def _preset(path):
  """The preset named in `--config=FILE:PRESET`, else the config file's default preset."""
  if ":" in path:
    return path.split(":", 1)[1]
  return inspect.signature(_config_module(path).get_config).parameters["preset"].default


def _config_module(path):
  path = path.split(":")[0]  # drop a ':<preset>'
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def ablation_runs(path, configs, name, sweep):
  """[(preset, config, run subdir, sweep, checkpoint subdir)] of ablation `name` on every
  (preset, config).

  A field a population can sweep runs as populations (temperature sets grouped by size);
  others run one value after another into `<field>=<value>/`.
  """
  ablations = getattr(_config_module(path), "ABLATIONS", {})
  if name not in ablations:
    raise ValueError(f"unknown ablation {name!r} for {os.path.basename(path)}; choose one of: "
                     f"{', '.join(ablations) or 'none'}")
  field, values = ablations[name]
  out = []
  for preset, config in configs:
    if field in population.SWEEPABLE and field not in sweep:
      groups = {}
      for value in values:  # one program per temperature-set size
        groups.setdefault(len(value) if isinstance(value, tuple) else 1, []).append(value)
      for i, group in enumerate(groups.values()):
        out.append((preset, config, "", {**sweep, field: list(group)},
                    "checkpoints" if i == 0 else f"checkpoints-{i}"))
      continue
    for value in values:
      variant = config.copy_and_resolve_references()
      variant.update_from_flattened_dict({field: value})
      out.append((preset, variant, f"{field.split('.')[-1]}={population.render(value)}", sweep,
                  "checkpoints"))
  return out


def sweep_configs(path, tasks, overrides):
  """(preset, config) per preset in `tasks` (groups expanded), with the flat `overrides`
  applied."""
  module = _config_module(path)
  groups = getattr(module, "TASK_GROUPS", {})
  presets = [p for t in tasks for p in groups.get(t, [t])]
  configs = []
  for preset in presets:
    config = module.get_config(preset)
    config.update_from_flattened_dict(overrides)
    configs.append((preset, config))
  return configs


def plan_runs():
  """[(config, workdir, sweep, checkpoint subdir, pretraining or None)] the flags ask for,
  checked; the pretraining, with --share_offline, is (config, workdir) of the offline phase
  the run starts from."""
  path = config_flags.get_config_filename(FLAGS["config"])
  configs = [(_preset(path), FLAGS.config)]
  if FLAGS.tasks is not None:
    if not any(t.strip() for t in FLAGS.tasks):
      raise ValueError("--tasks is empty; give presets or groups, e.g. --tasks=cube-double")
    configs = sweep_configs(path, FLAGS.tasks, config_flags.get_override_values(FLAGS["config"]))
  sweep = population.parse_sweeps(FLAGS.sweep)
  runs = [(preset, config, "", sweep, "checkpoints") for preset, config in configs]
  if FLAGS.ablation:
    runs = ablation_runs(path, configs, FLAGS.ablation, sweep)
  grouped = bool(FLAGS.tasks or FLAGS.seeds or FLAGS.ablation or sweep)
  if FLAGS.share_offline and (FLAGS.init_from or not grouped):
    raise ValueError("--share_offline shares one pretraining among the runs of --seeds, "
                     "--sweep or --ablation (and replaces --init_from)")
  bases = dict(configs)
  planned = []
  for preset, config, subdir, run_sweep, ckpt in runs:
    agents.get(config.method)
    validation.check_config(config)
    validation.check_members(config, population.members(_seeds() or [config.seed], run_sweep))
    tasks.check_task(config.env.task)
    if grouped:
      root = fileio.normpath(os.path.join(
          FLAGS.workdir or os.path.join("runs", config.method, preset), config.env.task))
      workdir = fileio.normpath(os.path.join(root, subdir))
    else:
      workdir = FLAGS.workdir or default_workdir(config, preset)
    fileio.check_reachable(workdir)
    pretraining = None
    if FLAGS.init_from:
      config.train.init_from = FLAGS.init_from
    elif FLAGS.share_offline:
      pretraining = (_pretraining_config(bases[preset]), os.path.join(root, "offline"))
      seeds = _seeds() or [config.seed]
      init_from.check_shareable(_resolved(pretraining[0]), [
          _resolved(m.apply(config)) for m in population.members(seeds, run_sweep)])
      config.train.init_from = pretraining[1]
    planned.append((config, workdir, run_sweep, ckpt, pretraining))
  return planned, grouped


def _pretraining_config(config):
  """The offline phase alone of `config`: the run --share_offline starts others from."""
  pre = config.copy_and_resolve_references()
  pre.train.online_steps, pre.train.init_from = 0, ""
  return pre


def _resolved(config):
  return json.loads(config.to_json_best_effort())


def _seeds():
  """--seeds as distinct non-negative integers (None when not given)."""
  if FLAGS.seeds is None:
    return None
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    seeds = []
  if not seeds or any(s < 0 for s in seeds):
    raise ValueError(f"--seeds={','.join(FLAGS.seeds)}: expected non-negative integers, "
                     "e.g. --seeds=0,1,2")
  if any(s > validation.MAX_SEED for s in seeds):
    raise ValueError(f"--seeds={','.join(FLAGS.seeds)}: seeds must be at most "
                     f"{validation.MAX_SEED} (what the random number generators accept)")
  twice = sorted({s for s in seeds if seeds.count(s) > 1})
  if twice:
    raise ValueError(f"--seeds: seed {twice[0]} is given twice; each seed trains once")
  return seeds


class _QuietOrbaxErrors(pylogging.Filter):
  """Drops orbax's ERROR logs (each with a traceback) from its background save threads: the
  same error reaches the run as a CheckpointError, printed as one line; and its warning that a
  checkpoint directory opened read-only (another run's, read by --init_from) is read-only."""

  def filter(self, record):
    if str(record.msg).startswith("Given directory is read only"):  # --init_from's source
      return False
    return not (record.levelno >= pylogging.ERROR and str(record.msg).startswith("[process="))


def _quiet_closed_loops(unraisable, default=sys.unraisablehook):
  """After a failed asynchronous save, orbax's coroutines are collected with their event loop
  closed; Python would print each as a traceback. Anything else is printed as usual."""
  if not (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == "Event loop is closed"):
    default(unraisable)


def write_failed(message: str):
  """Exit with one error line, skipping the exit handlers: when the disk is full or the
  workdir is gone, the TensorBoard and orbax writer threads would each add a traceback."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(1)


def os_error(e: OSError, workdir: str) -> str:
  """An OSError while writing a run as one line naming the file and the cause."""
  what = e.strerror or type(e).__name__
  where = str(e.filename or workdir)
  if e.errno in (errno.EEXIST, errno.ENOTDIR):
    what = "a file is in the way of a directory"
  hint = ""
  if fileio.absolute(where).startswith(fileio.absolute(workdir).split(os.sep + "seed_")[0]):
    hint = "; --workdir must be a writable directory with free space"
  return f"cannot write {where}: {what}{hint}"


def _mesh():
  if not FLAGS.mesh:
    return None
  try:
    pop, data = (int(x) for x in FLAGS.mesh)
  except ValueError:
    raise ValueError(f"--mesh={','.join(FLAGS.mesh)}: expected POP,DATA, e.g. --mesh=8,1")
  return pop, data


def main(argv):
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {' '.join(argv[1:])}; flags are --name=value")
  if not FLAGS["verbosity"].present:  # orbax logs every checkpoint step at INFO
    logging.set_verbosity(logging.WARNING)
  pylogging.getLogger("absl").addFilter(_QuietOrbaxErrors())
  sys.unraisablehook = _quiet_closed_loops
  if FLAGS.distributed or FLAGS.coordinator_address:
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id)
  from dfp_jax.train import loop as trainer
  try:
    planned, grouped = plan_runs()
    mesh = _mesh()
    seeds = _seeds()
  except (ValueError, ogbench_data.DatasetError) as e:
    sys.exit(f"error: {e}")
  for config, workdir, sweep, ckpt, pretraining in planned:
    try:
      if config.train.video_episodes > 0:  # a missing renderer fails now, not at the first eval
        from dfp_jax import video
        video.check_renderer()
      if jax.process_index() == 0:
        tasks.ensure_dataset(config.env)
      parallel.sync("dataset ready")  # the other processes wait until process 0 has the data
      if pretraining is not None:  # once per task: a finished pretraining returns at once
        trainer.train_and_evaluate(pretraining[0], pretraining[1], seeds=seeds or
                                   [config.seed], seed_dirs=True, overwrite=False, mesh=mesh)
      summaries = trainer.train_and_evaluate(config, workdir, seeds=seeds if grouped else None,
                                             seed_dirs=grouped, overwrite=FLAGS.overwrite,
                                             sweep=sweep, mesh=mesh, checkpoint_subdir=ckpt)
    except (ValueError, ogbench_data.DatasetError, trainer.NonFiniteError,
            trainer.LockedError, trainer.EnvironmentFailure) as e:
      sys.exit(f"error: {e}")
    except checkpoint.CheckpointError as e:
      write_failed(str(e))
    except OSError as e:  # the workdir cannot be written: missing, read-only, full, a file
      write_failed(os_error(e, workdir))
    except trainer.Interrupted as e:
      print(f"stopped: {e}", file=sys.stderr)
      sys.exit(128 + int(e.signum))
    for summary in summaries if jax.process_index() == 0 else []:
      print(f"done: {config.env.task} {summary.get('member', summary['seed'])}: " + ", ".join(
          f"{k}={v:.3f}" for k, v in summary.items() if isinstance(v, float)))


def parse_flags(argv):
  """absl's flag parsing, with any error (a bad override, preset or config file) as one line."""
  try:
    argv = FLAGS(argv)
    FLAGS.config.get("method")  # a config file that failed to load raises on first use
  except Exception as e:  # config_flags raises several types, often chained
    sys.exit(f"error: {one_line(e)}")
  return argv


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
