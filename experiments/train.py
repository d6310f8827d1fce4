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
ABLATIONS) runs every value of that field one after another and writes
`<workdir>/<task>/<field>=<value>/seed_<k>/`; `python -m experiments.report
<workdir> --out=DIR --label_key=agent.top_k` makes its table.
"""

import importlib.util
import os
import re
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from dfp_jax import agents
from dfp_jax.data import ogbench_data, tasks
from dfp_jax.train import checkpoint, validation


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
flags.DEFINE_bool("overwrite", False, "Replace a run already in the workdir (by default a run "
                  "with the same config resumes from its latest checkpoint, another config is an error).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (auto-detects TPU pods "
                  "and SLURM; or give the three flags below).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for explicit multi-process.")
flags.DEFINE_integer("num_processes", None, "Number of processes, with --coordinator_address.")
flags.DEFINE_integer("process_id", None, "This process's index, with --coordinator_address.")
FLAGS = flags.FLAGS


def ensure_dataset(env_config):
  """Generate the dataset of a preset that asks for it (quick, smoke) if it is missing."""
  if env_config.generate_episodes <= 0:
    return
  if tasks.is_robomimic(env_config.task):
    path = tasks.robomimic_path(env_config)
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


def default_workdir(config):
  return os.path.join("runs", config.method, config.env.task, f"seed_{config.seed}")


def _config_module(path):
  path = path.split(":")[0]  # drop a ':<preset>'
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def ablation_configs(path, configs, name):
  """[(config, run subdir)] for every value of ablation `name` applied to every config."""
  ablations = getattr(_config_module(path), "ABLATIONS", {})
  if name not in ablations:
    raise ValueError(f"unknown ablation {name!r} for {os.path.basename(path)}; choose one of: "
                     f"{', '.join(ablations) or 'none'}")
  field, values = ablations[name]
  out = []
  for config in configs:
    for value in values:
      variant = config.copy_and_resolve_references()
      variant.update_from_flattened_dict({field: value})
      shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
      out.append((variant, f"{field.split('.')[-1]}={shown}"))
  return out


def sweep_configs(path, tasks, overrides):
  """One config per preset in `tasks` (groups expanded), with the flat `overrides` applied."""
  module = _config_module(path)
  groups = getattr(module, "TASK_GROUPS", {})
  presets = [p for t in tasks for p in groups.get(t, [t])]
  configs = []
  for preset in presets:
    config = module.get_config(preset)
    config.update_from_flattened_dict(overrides)
    configs.append(config)
  return configs


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # orbax logs every checkpoint step at INFO
    logging.set_verbosity(logging.WARNING)
  if FLAGS.distributed or FLAGS.coordinator_address:
    from dfp_jax import parallel
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id)
  from dfp_jax.train import loop as trainer
  try:
    configs = [FLAGS.config]
    if FLAGS.tasks:
      configs = sweep_configs(config_flags.get_config_filename(FLAGS["config"]), FLAGS.tasks,
                              config_flags.get_override_values(FLAGS["config"]))
    runs = [(config, "") for config in configs]
    if FLAGS.ablation:
      runs = ablation_configs(config_flags.get_config_filename(FLAGS["config"]), configs,
                              FLAGS.ablation)
    for config, _ in runs:
      agents.get(config.method)
      validation.check_config(config)
      tasks.check_task(config.env.task)
  except (ValueError, ogbench_data.DatasetError) as e:
    sys.exit(f"error: {e}")
  seeds = [int(s) for s in FLAGS.seeds] if FLAGS.seeds else None
  sweep = bool(FLAGS.tasks or FLAGS.seeds or FLAGS.ablation)
  for config, subdir in runs:
    if sweep:
      workdir = os.path.normpath(os.path.join(
          FLAGS.workdir or os.path.join("runs", config.method), config.env.task, subdir))
    else:
      workdir = FLAGS.workdir or default_workdir(config)
    try:
      if jax.process_index() == 0:
        ensure_dataset(config.env)
      if jax.process_count() > 1:  # the others wait until process 0 has the data
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("dataset ready")
      summaries = trainer.train_and_evaluate(config, workdir,
                                             seeds=seeds if sweep else None,
                                             seed_dirs=sweep, overwrite=FLAGS.overwrite)
    except (ogbench_data.DatasetError, checkpoint.CheckpointError, validation.ConfigError,
            trainer.NonFiniteError) as e:
      sys.exit(f"error: {e}")
    except trainer.Interrupted as e:
      print(f"stopped: {e}", file=sys.stderr)
      sys.exit(128 + int(e.signum))
    for summary in summaries if jax.process_index() == 0 else []:
      print(f"done: {config.env.task} seed {summary['seed']}: " + ", ".join(
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
