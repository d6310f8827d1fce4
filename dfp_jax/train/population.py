"""Populations: seeds x values of scalar hyperparameters, trained as one program.

A member is a seed plus one value for each swept field. Only hyperparameters
that do not change array shapes can be swept this way; they become per-member
values inside the one jitted update (`AgentState.hparams`), vmapped like the
seed axis. Fields that change shapes (K, N, network sizes, chunk length) run
as separate programs (`--ablation`).
"""

import dataclasses
import itertools
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

# Config fields a population can sweep (agent hyperparameters read through base.hparam).
SWEEPABLE = ("agent.temperatures", "agent.topk_weight", "agent.ema_tau", "agent.lr",
             "agent.tau", "agent.discount")


class SweepError(ValueError):
  """A sweep that cannot run as one population."""


@dataclasses.dataclass(frozen=True)
class Member:
  """One member of a population: a seed and its swept values ((field, value), ...)."""
  seed: int
  values: Tuple[Tuple[str, Any], ...] = ()

  @property
  def name(self) -> str:
    """Its directory: `seed_<k>`, under `<field>=<value>/` per swept field."""
    seed = f"seed_{self.seed}"
    if not self.values:
      return seed
    return "/".join([f"{f.split('.')[-1]}={render(v)}" for f, v in self.values] + [seed])

  def apply(self, config):
    """A copy of `config` with this member's seed and values."""
    c = config.copy_and_resolve_references()
    c.seed = self.seed
    c.update_from_flattened_dict(dict(self.values))
    return c


def render(value) -> str:
  if isinstance(value, (tuple, list)):
    return ",".join(render(v) for v in value)
  return f"{value:g}" if isinstance(value, float) else str(value)


def parse_value(text: str):
  """'0.5' -> 0.5; '(0.005,0.05)' or '0.005,0.05' -> (0.005, 0.05)."""
  text = text.strip()
  try:
    if text.startswith("(") or "," in text:
      return tuple(float(t) for t in text.strip("()").split(",") if t.strip())
    return float(text)
  except ValueError as e:
    raise SweepError(f"--sweep value {text!r} is not a number or a tuple of numbers") from e


def parse_sweeps(specs: Sequence[str]) -> Dict[str, List[Any]]:
  """['agent.topk_weight=0.1;0.5', ...] -> {field: [values]}; refuses shape-changing fields."""
  sweep: Dict[str, List[Any]] = {}
  for spec in specs:
    field, sep, values = spec.partition("=")
    field = field.strip()
    if not sep or not values.strip():
      raise SweepError(f"--sweep={spec}: expected FIELD=V1;V2;..., e.g. "
                       "--sweep=agent.topk_weight=0.1;0.5;1;5")
    if field not in SWEEPABLE:
      raise SweepError(
          f"--sweep={field}: only {', '.join(SWEEPABLE)} can vary inside one program; "
          f"{field} changes array shapes or the program, so sweep it as separate runs "
          "(--ablation, or one command per value)")
    if field in sweep:
      raise SweepError(f"--sweep: {field} is given twice")
    sweep[field] = [parse_value(v) for v in values.split(";") if v.strip()]
  check_sweep(sweep)
  return sweep


def check_sweep(sweep: Dict[str, List[Any]]):
  for field, values in sweep.items():
    if field not in SWEEPABLE:
      raise SweepError(f"{field} cannot vary inside one program; sweep it as separate runs")
    if len(set(map(render, values))) != len(values):
      raise SweepError(f"--sweep={field}: a value is given twice")
    if field == "agent.temperatures":
      values[:] = [v if isinstance(v, tuple) else (v,) for v in values]
      if len({len(v) for v in values}) > 1:
        raise SweepError("--sweep=agent.temperatures: every set needs the same number of "
                         "temperatures in one program; sweep sets of other sizes as separate runs")


def members(seeds: Sequence[int], sweep: Dict[str, List[Any]]) -> List[Member]:
  """Every (swept values, seed) combination, values outermost."""
  fields = list(sweep)
  combos = itertools.product(*[sweep[f] for f in fields]) if fields else [()]
  return [Member(int(s), tuple(zip(fields, combo))) for combo in combos for s in seeds]


def hparams(population: Sequence[Member]) -> Dict[str, np.ndarray]:
  """The swept values as arrays with a leading member axis, keyed by agent field name."""
  if not population or not population[0].values:
    return {}
  out = {}
  for i, (field, _) in enumerate(population[0].values):
    out[field.split(".")[-1]] = np.asarray([m.values[i][1] for m in population], np.float32)
  return out
