"""From what a command line asks for to the runs it trains, in one place.

`Request` holds the trainer's flags as plain values; `plan_runs` turns it into a `Plan`:
every run's config (tasks, ablations and sweeps expanded), its workdir (the directory
layout is decided here and nowhere else), its population and, with `share_offline`, the
pretraining it starts from; everything is checked before anything is written. `execute`
trains the plan, one run after another.
"""

import dataclasses
import errno
import importlib.util
import inspect
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import jax

from dfp_jax import agents, fileio, parallel
from dfp_jax.data import tasks
from dfp_jax.train import init_from, population, validation


@dataclasses.dataclass(frozen=True)
class Request:
  """The trainer's command line as plain values (None or empty: the flag was not given).

  `config` is the config file's config with the command line's overrides applied;
  `overrides` are those overrides alone (flattened field -> value), re-applied to every
  preset of `tasks`. `seeds` and `mesh` are the flags' raw strings.
  """
  config_path: str
  config: object
  overrides: Dict = dataclasses.field(default_factory=dict)
  workdir: Optional[str] = None
  seeds: Optional[Sequence[str]] = None
  tasks: Optional[Sequence[str]] = None
  ablation: Optional[str] = None
  sweeps: Sequence[str] = ()
  mesh: Optional[Sequence[str]] = None
  init_from: Optional[str] = None
  share_offline: bool = False
  overwrite: bool = False


@dataclasses.dataclass
class RunSpec:
  """One run of a plan: its config, workdir, swept fields (field -> values), checkpoint
  subdirectory, and the (config, workdir) of the pretraining it starts from (or None)."""
  config: object
  workdir: str
  sweep: Dict[str, List]
  checkpoint_subdir: str = "checkpoints"
  pretraining: Optional[Tuple[object, str]] = None


@dataclasses.dataclass
class Plan:
  """The runs to train, in order, and what they share: the seeds (None: each config's own
  seed), whether members write `seed_<k>/` subdirectories, the device mesh and --overwrite."""
  runs: List[RunSpec]
  seeds: Optional[List[int]]
  grouped: bool
  mesh: Optional[Tuple[int, int]]
  overwrite: bool = False


class WriteError(Exception):
  """The workdir cannot be written (missing, read-only, full, a file in the way)."""


def default_workdir(config, preset: str) -> str:
  """runs/<method>/<preset>/<task>/seed_<seed>: presets of one task never share a workdir."""
  return os.path.join("runs", config.method, preset, config.env.task, f"seed_{config.seed}")


def config_module(path: str):
  """The config file (`FILE[:PRESET]`) as a module: get_config, TASK_GROUPS, ABLATIONS."""
  spec = importlib.util.spec_from_file_location("sweep_config", path.split(":")[0])
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def preset_of(path: str) -> str:
  """The preset named in `FILE:PRESET`, else the config file's default preset."""
  if ":" in path:
    return path.split(":", 1)[1]
  return inspect.signature(config_module(path).get_config).parameters["preset"].default


def parse_seeds(seeds: Optional[Sequence[str]]) -> Optional[List[int]]:
  """--seeds as distinct integers in [0, validation.MAX_SEED] (None when not given)."""
  if seeds is None:
    return None
  try:
    values = [int(s) for s in seeds]
  except ValueError:
    values = []
  if not values or any(s < 0 for s in values):
    raise ValueError(f"--seeds={','.join(seeds)}: expected non-negative integers, "
                     "e.g. --seeds=0,1,2")
  if any(s > validation.MAX_SEED for s in values):
    raise ValueError(f"--seeds={','.join(seeds)}: seeds must be at most "
                     f"{validation.MAX_SEED} (what the random number generators accept)")
  twice = sorted({s for s in values if values.count(s) > 1})
  if twice:
    raise ValueError(f"--seeds: seed {twice[0]} is given twice; each seed trains once")
  return values


def parse_mesh(mesh: Optional[Sequence[str]]) -> Optional[Tuple[int, int]]:
  """--mesh=POP,DATA as two integers (None when not given)."""
  if not mesh:
    return None
  try:
    pop, data = (int(x) for x in mesh)
  except ValueError:
    raise ValueError(f"--mesh={','.join(mesh)}: expected POP,DATA, e.g. --mesh=8,1") from None
  return pop, data


def sweep_configs(path: str, task_names: Sequence[str], overrides: Dict) -> List[Tuple[str, object]]:
  """(preset, config) per preset in `task_names` (the config file's TASK_GROUPS expanded),
  with the flat `overrides` applied."""
  module = config_module(path)
  groups = getattr(module, "TASK_GROUPS", {})
  configs = []
  for preset in [p for t in task_names for p in groups.get(t, [t])]:
    config = module.get_config(preset)
    config.update_from_flattened_dict(overrides)
    configs.append((preset, config))
  return configs


def ablation_runs(path: str, configs, name: str, sweep: Dict) -> List[Tuple]:
  """[(preset, config, run subdir, sweep, checkpoint subdir)] of the config file's ablation
  `name` on every (preset, config).

  A field a population can sweep runs as populations (temperature sets grouped by size);
  others run one value after another into `<field>=<value>/`.
  """
  ablations = getattr(config_module(path), "ABLATIONS", {})
  if name not in ablations:
    raise ValueError(f"unknown ablation {name!r} for {os.path.basename(path.split(':')[0])}; "
                     f"choose one of: {', '.join(ablations) or 'none'}")
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


def pretraining_config(config):
  """The offline phase alone of `config`: the run --share_offline starts others from."""
  pre = config.copy_and_resolve_references()
  pre.train.online_steps, pre.train.init_from = 0, ""
  return pre


def _resolved(config):
  return json.loads(config.to_json_best_effort())


def plan_runs(request: Request) -> Plan:
  """The runs `request` asks for, each config, member, task and workdir checked (ValueError
  with one line otherwise); nothing is written."""
  path = request.config_path
  configs = [(preset_of(path), request.config)]
  if request.tasks is not None:
    if not any(t.strip() for t in request.tasks):
      raise ValueError("--tasks is empty; give presets or groups, e.g. --tasks=cube-double")
    configs = sweep_configs(path, request.tasks, request.overrides)
  sweep = population.parse_sweeps(request.sweeps)
  seeds = parse_seeds(request.seeds)
  mesh = parse_mesh(request.mesh)
  runs = [(preset, config, "", sweep, "checkpoints") for preset, config in configs]
  if request.ablation:
    runs = ablation_runs(path, configs, request.ablation, sweep)
  grouped = bool(request.tasks or request.seeds or request.ablation or sweep)
  if request.share_offline and (request.init_from or not grouped):
    raise ValueError("--share_offline shares one pretraining among the runs of --seeds, "
                     "--sweep or --ablation (and replaces --init_from)")
  bases = dict(configs)
  planned = []
  for preset, config, subdir, run_sweep, ckpt in runs:
    agents.get(config.method)
    validation.check_config(config)
    members = population.members(seeds or [config.seed], run_sweep)
    validation.check_members(config, members)
    tasks.check_task(config.env.task)
    if grouped:
      root = fileio.normpath(os.path.join(
          request.workdir or os.path.join("runs", config.method, preset), config.env.task))
      workdir = fileio.normpath(os.path.join(root, subdir))
    else:
      workdir = request.workdir or default_workdir(config, preset)
    fileio.check_reachable(workdir)
    pretraining = None
    if request.init_from:
      config.train.init_from = request.init_from
    elif request.share_offline:
      pretraining = (pretraining_config(bases[preset]), os.path.join(root, "offline"))
      init_from.check_shareable(_resolved(pretraining[0]),
                                [_resolved(m.apply(config)) for m in members])
      config.train.init_from = pretraining[1]
    planned.append(RunSpec(config, workdir, run_sweep, ckpt, pretraining))
  return Plan(planned, seeds, grouped, mesh, request.overwrite)


def write_error(e: OSError, workdir: str) -> WriteError:
  """An OSError while writing a run as one line naming the file and the cause."""
  what = e.strerror or type(e).__name__
  where = str(e.filename or workdir)
  if e.errno in (errno.EEXIST, errno.ENOTDIR):
    what = "a file is in the way of a directory"
  hint = ""
  if fileio.absolute(where).startswith(fileio.absolute(workdir).split(os.sep + "seed_")[0]):
    hint = "; --workdir must be a writable directory with free space"
  return WriteError(f"cannot write {where}: {what}{hint}")


def execute(plan: Plan):
  """Train every run of `plan` in order (its pretraining first, once per task: a finished
  one returns at once); yields (config, summaries of the members this process holds).

  An OSError while writing is raised as WriteError; the trainer's own errors pass through.
  """
  from dfp_jax.train import loop
  for spec in plan.runs:
    config = spec.config
    try:
      if config.train.video_episodes > 0:  # a missing renderer fails now, not at the first eval
        from dfp_jax import video
        video.check_renderer()
      if jax.process_index() == 0:
        tasks.ensure_dataset(config.env)
      parallel.sync("dataset ready")  # the other processes wait until process 0 has the data
      if spec.pretraining is not None:
        loop.train_and_evaluate(spec.pretraining[0], spec.pretraining[1],
                                seeds=plan.seeds or [config.seed], seed_dirs=True,
                                overwrite=False, mesh=plan.mesh)
      summaries = loop.train_and_evaluate(
          config, spec.workdir, seeds=plan.seeds if plan.grouped else None,
          seed_dirs=plan.grouped, overwrite=plan.overwrite, sweep=spec.sweep, mesh=plan.mesh,
          checkpoint_subdir=spec.checkpoint_subdir)
    except OSError as e:
      raise write_error(e, spec.workdir) from e
    yield config, summaries
