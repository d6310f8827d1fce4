"""One offline pretraining, many online runs: `train.init_from=WORKDIR[@STEP]`.

A run with `train.init_from` does not pretrain: it starts from the checkpoint at
the end of another run's offline phase (or at an earlier offline step STEP, with
`train.offline_steps=STEP`) and goes straight to the online phase. Its members
take the agents, keys, minibatch RNG and counters of the source member with the
same seed, so with nothing online changed it continues exactly as the source run
did (tested). Only online-phase fields may differ from the source
(`online_fields`): the online budget, `start_training`, the replay capacity, the
evaluation settings, and the top-K term's settings where top-K runs online only
(`dfp` and `dfp_no_topk` share an offline phase, as do `mvp` and `mvp_topk`).
The source's offline rows of train.csv / eval.csv are copied into the new run's
files, and its config.json and summary.json record where it came from.
"""

import copy
import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from dfp_jax import agents, fileio, parallel
from dfp_jax.train import checkpoint, population
from dfp_jax.train import state as state_lib
from dfp_jax.train.metrics import truncate_csv

# Fields that act only after the online switch (or never change results).
# (The buffer fields too: before the switch it holds the offline data alone, so they do not
# change the offline phase's batches.)
ONLINE_FIELDS = ("method", "seed", "train.init_from", "train.online_steps",
                 "train.start_training", "train.utd_ratio", "train.replay_capacity",
                 "train.replay_keep_offline", "train.offline_batch_ratio",
                 "train.bc_offline_only", "train.eval_interval", "train.eval_episodes",
                 "train.eval_seed")
# The top-K term's fields, online-phase fields when top-K runs online only (the anchor is
# reset to the actor at the switch, so its offline EMA is discarded).
TOPK_FIELDS = ("agent.use_topk", "agent.top_k", "agent.topk_weight", "agent.num_candidates",
               "agent.ema_tau", "agent.topk_mode", "agent.num_bottom_negatives")


class InitFromError(ValueError):
  """A `train.init_from` source this run cannot start from."""


def online_fields(a: Dict, b: Dict) -> Tuple[str, ...]:
  """The fields that may differ between source config `a` and config `b` (JSON dicts)."""
  offline_topk = a.get("agent", {}).get("topk_offline") or b.get("agent", {}).get("topk_offline")
  return (ONLINE_FIELDS + checkpoint.RESUMABLE_FIELDS
          + (() if offline_topk else TOPK_FIELDS))


def offline_differences(a: Dict, b: Dict) -> List[str]:
  """'field: a -> b' for every offline-phase field where configs `a` and `b` differ (the
  method counts as the same when both names train the same agent module)."""
  diffs = checkpoint.config_differences(a, b, ignore=online_fields(a, b))
  same_agent = agents.METHODS.get(a.get("method")) is agents.METHODS.get(b.get("method"))
  if not same_agent:
    diffs.insert(0, f"method: {a.get('method')} -> {b.get('method')} (another agent)")
  return diffs


def check_shareable(pretraining: Dict, configs: Sequence[Dict]):
  """InitFromError unless every config (JSON dicts, one per member) can start from the
  pretraining run's config (`--share_offline`)."""
  for config in configs:
    diffs = offline_differences(pretraining, dict(config, seed=pretraining["seed"]))
    if diffs:
      raise InitFromError(
          f"--share_offline: {diffs[0].split(' ->')[0].split(':')[0]} changes the offline "
          "phase, so these runs cannot share one; share only sweeps and ablations of "
          "online-phase fields (top-K's K, N, lambda, tau_EMA, the online budget)")


def parse(text: str) -> Tuple[str, Optional[int]]:
  """'DIR' -> (DIR, None); 'DIR@STEP' -> (DIR, STEP)."""
  path, sep, step = text.rpartition("@")
  if sep and step.isdigit():
    return path, int(step)
  if sep and not os.path.exists(text):
    raise InitFromError(f"--init_from={text}: expected WORKDIR or WORKDIR@STEP with STEP a "
                        "checkpoint step, e.g. runs/dfp/quick/cube-single@20000")
  return text, None


def _member_config(base: Dict, name: str) -> Dict:
  """Member `name` ('field=v/.../seed_k') of a population whose member 0 has config `base`."""
  config = copy.deepcopy(base)
  *values, seed = name.split("/")
  config["seed"] = int(seed.rsplit("_", 1)[1])
  for item in values:
    field, _, text = item.partition("=")
    value = population.parse_value(text)
    config["agent"][field] = list(value) if isinstance(value, tuple) else value
  return config


@dataclasses.dataclass
class Source:
  """The checkpoint a run starts its online phase from."""
  text: str            # as given
  workdir: str         # the directory holding its checkpoints/
  step: int
  members: List[str]   # its population's member names
  configs: List[Dict]  # and their configs
  meta: Dict

  def member_dir(self, index: int) -> str:
    name = self.members[index]
    nested = os.path.join(self.workdir, name)
    return nested if fileio.isdir(nested) else self.workdir

  def match(self, configs: Sequence[Dict]) -> List[int]:
    """The source member each config (one per member of the new run) starts from; raises
    InitFromError naming the first offline-phase field that differs."""
    out = []
    for config in configs:
      same_seed = [i for i, c in enumerate(self.configs) if c["seed"] == config["seed"]]
      if not same_seed:
        raise InitFromError(
            f"--init_from={self.text}: it has no member with seed {config['seed']} (it has "
            f"{', '.join(self.members)}); pretrain that seed too, or give --seeds it has")
      found = [i for i in same_seed if not offline_differences(self.configs[i], config)]
      if not found:
        diff = offline_differences(self.configs[same_seed[0]], config)[0]
        raise InitFromError(
            f"--init_from={self.text}: {diff} differs from the source's offline phase "
            f"({self.members[same_seed[0]]}); only online-phase fields may differ "
            "(train.online_steps, train.start_training, evaluation, top-K's K, N, lambda, "
            "tau_EMA)")
      out.append(found[0])
    return out


def open_source(text: str, config) -> Source:
  """The checkpoint `text` ('WORKDIR[@STEP]') names, checked against this run's config:
  WORKDIR holds checkpoints/ (or WORKDIR/<task> does), the step exists and is in its
  offline phase, and this run's offline_steps ends there."""
  path, step = parse(text)
  workdir = path
  if not fileio.isdir(os.path.join(workdir, "checkpoints")):
    nested = os.path.join(path, config.env.task)
    if not fileio.isdir(os.path.join(nested, "checkpoints")):
      raise InitFromError(f"--init_from={text}: {path} holds no checkpoints/ (nor does "
                          f"{nested}); give the --workdir of the pretraining run")
    workdir = nested
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise InitFromError(f"--init_from={text}: {workdir} holds no finished checkpoint yet")
    meta = ckpt.read_meta(steps[-1])
    offline_steps = int(meta["config"]["train"]["offline_steps"])
    if step is None:
      if offline_steps not in steps:
        where = (f"it is still in its offline phase (latest checkpoint {steps[-1]} of "
                 f"{offline_steps} offline steps)" if steps[-1] < offline_steps else
                 f"its checkpoint at the end of the offline phase ({offline_steps}) is gone; "
                 f"it has {steps}")
        raise InitFromError(f"--init_from={text}: {where}")
      step = offline_steps
    elif step not in steps:
      raise InitFromError(f"--init_from={text}: no checkpoint at step {step}; it has {steps}")
    if step > offline_steps:
      raise InitFromError(f"--init_from={text}: step {step} is in its online phase (its offline "
                          f"phase ends at {offline_steps}); start from an offline checkpoint")
    meta = ckpt.read_meta(step)
  finally:
    ckpt.close()
  if config.train.offline_steps != step:
    raise InitFromError(f"--init_from={text}: this run's train.offline_steps="
                        f"{config.train.offline_steps} must equal the step it starts from "
                        f"({step})")
  members = meta.get("members") or [f"seed_{s}" for s in meta["seeds"]]
  base = dict(meta["config"])
  base["train"] = dict(base["train"], offline_steps=step)
  return Source(text, workdir, step, members, [_member_config(base, m) for m in members], meta)


def start(source: Source, state, rows: Sequence[int], sources: Sequence[int], place):
  """`state` (a fresh state of the new run) with the source's offline-phase state: member i of
  the population takes source member `sources[i]`. `rows`: the population indices of the
  state's host lists (this process's members)."""
  ckpt = checkpoint.Checkpointer(os.path.join(source.workdir, "checkpoints"), read_only=True)
  try:
    saved = ckpt.restore_saved(source.step, source.meta)
    loaded = ckpt.read_members(source.step, sorted({sources[i] for i in rows}))
  finally:
    ckpt.close()
  take = np.asarray([sources[min(i, len(sources) - 1)] for i in range(place.padded)])
  flat = {k: np.asarray(v)[take] for k, v in checkpoint.by_path(saved["agent"]).items()}
  template = state.agents
  hparams = template.hparams  # this run's swept values, not the source's
  agents_ = checkpoint.fill(template.replace(hparams={}), flat, source.workdir,
                            "this run's agent").replace(hparams=jax.device_get(hparams))
  keys, eval_keys = (np.asarray(saved[k])[take] for k in ("keys", "eval_keys"))
  device = jax.device_get((agents_, keys, eval_keys))
  if place.mesh is not None:
    device = parallel.to_global(device, place.mesh, parallel.P(parallel.POP_AXIS))
  else:
    device = jax.device_put(device)
  members = {i: copy.deepcopy(loaded[sources[i]]) for i in rows}
  meta = dict(source.meta, step=source.step)
  state, _ = state_lib.restore(state, dict(zip(("agent", "keys", "eval_keys"), device)), members,
                               rows, meta)
  for summary in state.summaries:
    summary["init_from"] = {"workdir": fileio.absolute(source.workdir), "step": source.step}
  return state


def copy_offline_rows(source: Source, sources: Sequence[int], run_dirs: Sequence[str],
                      indices: Sequence[int]):
  """Member `indices[j]`'s train.csv / eval.csv in `run_dirs[j]` start as its source
  member's rows up to the source step (the offline phase this run did not repeat)."""
  for index, run_dir in zip(indices, run_dirs):
    fileio.makedirs(run_dir)
    for name in ("train.csv", "eval.csv"):
      src = os.path.join(source.member_dir(sources[index]), name)
      dst = os.path.join(run_dir, name)
      if fileio.exists(src):
        fileio.write_text(dst, fileio.read_text(src))
        truncate_csv(dst, source.step)
