"""Where a run writes, and what a workdir already holds (a run to resume, a finished run)."""

import contextlib
import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from dfp_jax import fileio
from dfp_jax.parallel import any_process, sync
from dfp_jax.train import checkpoint, population
from dfp_jax.train.lock import LockedError, workdir_lock
from dfp_jax.train.population import Member

# What a run writes into each seed's directory.
RUN_FILES = ("config.json", "train.csv", "eval.csv", "summary.json", "learning_curve.png", "tb",
             "videos", "wandb", "wandb.json")


@contextlib.contextmanager
def locked(layout: "Layout", is_main: bool):
  """Hold the run's workdir lock (process 0 holds it for all) for the `with` block; raises
  LockedError on every process when another run holds it."""
  lock = workdir_lock(layout.ckpt_dir + ".lock")
  problem, error = None, None
  if is_main:
    try:
      lock.acquire()
    except LockedError as e:
      problem = str(e)
    except Exception as e:  # noqa: BLE001  (unwritable, unreachable: every process must stop)
      problem, error = f"cannot lock {layout.workdir} ({type(e).__name__}: {e})", e
  try:
    failed = any_process(problem is not None)
  except BaseException:
    lock.release()
    raise
  if failed:
    if error is not None:
      raise error  # process 0: the error itself (an OSError is reported as the workdir's)
    raise LockedError(problem or f"{layout.workdir} is in use by another run")
  try:
    yield
  finally:
    lock.release()


@dataclasses.dataclass(frozen=True)
class Layout:
  """A run's directories: one per population member, one checkpoint directory for all."""
  workdir: str
  members: Tuple[Member, ...]
  run_dirs: Tuple[str, ...]
  ckpt_dir: str
  config: object  # the run's ConfigDict

  @classmethod
  def create(cls, config, workdir: str, seeds: Optional[Sequence[int]],
             seed_dirs: Optional[bool], sweep: Optional[Dict[str, List]] = None,
             checkpoint_subdir: str = "checkpoints") -> "Layout":
    """Member (seed k, swept values v) writes to `<workdir>/<field>=<v>/.../seed_<k>/` when
    `seed_dirs` (default: when `seeds` or `sweep` is given), else to `workdir`; `seeds`
    defaults to [config.seed]."""
    seed_dirs = (seeds is not None or bool(sweep)) if seed_dirs is None else seed_dirs
    seeds = [config.seed] if seeds is None else [int(s) for s in seeds]
    bad = sorted({s for s in seeds if seeds.count(s) > 1})
    if bad:
      raise ValueError(f"seed {bad[0]} is given twice; each seed trains once")
    members = tuple(population.members(seeds, sweep or {}))
    if not seed_dirs and len(members) > 1:
      raise ValueError("several seeds need seed_dirs")
    run_dirs = (tuple(os.path.join(workdir, m.name) for m in members) if seed_dirs
                else (workdir,))
    return cls(workdir, members, run_dirs, os.path.join(workdir, checkpoint_subdir), config)

  @property
  def seeds(self) -> Tuple[int, ...]:
    return tuple(m.seed for m in self.members)

  def member_config(self, index: int):
    return self.members[index].apply(self.config)

  def resolved(self, index: int) -> Dict:
    """The config of member `index` as JSON-ready dicts (config.json, checkpoint checks)."""
    return json.loads(self.member_config(index).to_json_best_effort())

  def write_configs(self, indices: Sequence[int]):
    for i in indices:
      fileio.makedirs(self.run_dirs[i])
      fileio.write_text(os.path.join(self.run_dirs[i], "config.json"),
                        json.dumps(self.resolved(i), indent=2))


def has_checkpoint(layout: Layout) -> bool:
  """Whether the run's checkpoint directory holds a checkpoint to resume from."""
  ckpt_dir = layout.ckpt_dir
  return fileio.isdir(ckpt_dir) and any(n.isdigit() for n in fileio.listdir(ckpt_dir))


def prepare(layout: Layout, overwrite: bool, is_main: bool) -> Tuple[str, Optional[List[Dict]]]:
  """What to do with what the run dirs already hold.

  Returns ('fresh', None), ('resume', None) or ('complete', summaries). Raises
  CheckpointError for a workdir whose run has another config; with `overwrite`
  the run's files are cleared instead. The same run killed before its first
  checkpoint starts again from step 0.
  """
  run_dirs, ckpt_dir = layout.run_dirs, layout.ckpt_dir
  existing = [d for d in run_dirs if any(fileio.exists(os.path.join(d, f)) for f in RUN_FILES)]
  has_ckpt = has_checkpoint(layout)
  mode, found = "fresh", None
  if not overwrite and (existing or has_ckpt):
    for i, d in enumerate(run_dirs):
      path = os.path.join(d, "config.json")
      if fileio.exists(path):
        checkpoint.check_same_config(d, checkpoint.read_json(path), layout.resolved(i))
    summaries = [os.path.join(d, "summary.json") for d in run_dirs]
    if has_ckpt:
      mode = "resume"
    elif all(fileio.exists(p) for p in summaries):
      mode, found = "complete", [checkpoint.read_json(p) for p in summaries]
    elif is_main:
      print(f"{existing[0]}: this run stopped before its first checkpoint; starting it again")
  sync("workdir checked")  # every process has decided before anything is deleted
  if mode == "fresh" and (existing or has_ckpt) and is_main:
    for d in run_dirs:
      for f in RUN_FILES:
        fileio.remove_any(os.path.join(d, f))
    fileio.rmtree(ckpt_dir, ignore_errors=True)
  sync("workdir ready")
  return mode, found
