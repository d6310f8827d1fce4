"""Checks of a run's config before anything is built, so a bad value is one clear error.

Every numeric, list and choice field of every method's config has a rule here (`RULES`);
docs/checkpoints.md lists them and tests/train/test_validation.py checks every field
against its rule with bad values (NaN, infinities, negatives, zero, huge, wrong types).
A field left `None` (a placeholder) takes its documented automatic value and is not checked.
"""

import dataclasses
import math
from typing import Optional, Sequence, Tuple


# The largest seed every random number generator of a run accepts (jax's PRNGKey: int32),
# and the largest count or step of any integer field (the trainer's step counters are int32).
MAX_SEED = 2**31 - 1
MAX_INT = 2**31 - 1


class ConfigError(ValueError):
  """A config value that no run can use."""


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class Rule:
  """What one field accepts.

  kind: "int" (an integer in [lo, hi]), "number" (a finite number between lo and hi, either
  end open), "choice" (one of `options`), "widths" (a non-empty list of positive integers),
  "temperatures" (a non-empty list of positive finite numbers).
  """
  kind: str
  lo: float = -math.inf
  hi: float = math.inf
  lo_open: bool = False
  hi_open: bool = False
  options: Tuple[str, ...] = ()

  def accepts(self, v) -> bool:
    if self.kind == "int":
      return _is_int(v) and self.lo <= v <= self.hi
    if self.kind == "number":
      return (_is_number(v) and math.isfinite(v)
              and (v > self.lo if self.lo_open else v >= self.lo)
              and (v < self.hi if self.hi_open else v <= self.hi))
    if self.kind == "choice":
      return v in self.options
    if self.kind == "widths":
      return (isinstance(v, (tuple, list)) and len(v) > 0
              and all(_is_int(h) and 0 < h <= MAX_INT for h in v))
    if self.kind == "temperatures":
      return (isinstance(v, (tuple, list)) and len(v) > 0
              and all(_is_number(r) and math.isfinite(r) and r > 0 for r in v))
    raise ValueError(f"unknown rule kind {self.kind!r}")

  def text(self) -> str:
    """The rule as the error line and the docs say it."""
    if self.kind == "int":
      return f"must be an integer in [{self.lo}, {self.hi}]"
    if self.kind == "number":
      lo = "-inf" if self.lo == -math.inf else f"{self.lo:g}"
      hi = "inf" if self.hi == math.inf else f"{self.hi:g}"
      return (f"must be a finite number in {'(' if self.lo_open or self.lo == -math.inf else '['}"
              f"{lo}, {hi}{')' if self.hi_open or self.hi == math.inf else ']'}")
    if self.kind == "choice":
      return f"must be one of {', '.join(self.options)}"
    if self.kind == "widths":
      return "must be a non-empty list of positive layer widths"
    return "must be a non-empty list of positive temperatures R"


def count(minimum=1):
  return Rule("int", lo=minimum, hi=MAX_INT)


def number(lo=-math.inf, hi=math.inf, lo_open=False, hi_open=False):
  return Rule("number", lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)


def choice(*options):
  return Rule("choice", options=options)


# Field -> rule, for every method's fields (a method's config holds the agent fields it uses).
RULES = {
    "seed": Rule("int", lo=0, hi=MAX_SEED),
    # env
    "env.num_shards": count(),
    "env.shard_interval": count(0),
    "env.success_timing": choice("pre", "post"),
    "env.generate_episodes": count(0),
    "env.generate_episode_length": count(),
    "env.generate_task_goal_prob": number(0.0, 1.0),
    "env.dataset_action_noise": number(0.0),
    "env.dataset_obs_noise": number(0.0),
    "env.dataset_noise_seed": Rule("int", lo=0, hi=MAX_SEED),
    "train.offline_batch_ratio": number(0.0, 1.0),
    # train
    **{f"train.{f}": count() for f in (
        "batch_size", "log_interval", "eval_interval", "updates_per_dispatch",
        "keep_checkpoints", "replay_capacity", "eval_envs", "utd_ratio")},
    **{f"train.{f}": count(0) for f in (
        "offline_steps", "online_steps", "start_training", "eval_episodes",
        "checkpoint_interval", "video_episodes", "env_workers")},
    "train.eval_seed": Rule("int", lo=0, hi=MAX_SEED),
    "train.video_size": count(16),
    "train.on_nonfinite": choice("stop", "skip"),
    "train.matmul_precision": choice("fp32", "tf32", "bf16", "default"),
    # agent: shared
    **{f"agent.{f}": count() for f in (
        "chunk_len", "num_act_samples", "num_target_samples", "critic_ensemble", "num_gen",
        "num_candidates", "top_k", "flow_steps")},
    "agent.num_bottom_negatives": count(0),
    "agent.actor_hidden": Rule("widths"),
    "agent.critic_hidden": Rule("widths"),
    "agent.discount": number(0.0, 1.0, lo_open=True),
    "agent.tau": number(0.0, 1.0),
    "agent.ema_tau": number(0.0, 1.0),
    "agent.lr": number(0.0, lo_open=True),
    "agent.topk_weight": number(0.0),
    "agent.topk_mode": choice("hard", "soft", "soft_minmax"),
    # agent: drifting (DFP)
    "agent.temperatures": Rule("temperatures"),
    "agent.kernel": choice("laplace", "gaussian"),
    "agent.affinity_floor": number(0.0, 1.0),
    # agent: flow (FQL) and MeanFlow (MVP)
    "agent.alpha": number(0.0),
    "agent.adaptive_weight_p": number(0.0),
    "agent.time_sampler": choice("lognorm", "uniform"),
    "agent.time_mean": number(),
    "agent.time_std": number(0.0, lo_open=True),
    "agent.velocity_time": choice("r", "t"),
    "agent.velocity_weight": number(0.0),
}


def _get(config, path) -> Optional[object]:
  node = config
  for part in path.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def check_config(config):
  """Raise ConfigError naming the first field of `config` that breaks its rule."""
  for path, rule in RULES.items():
    v = _get(config, path)
    if v is not None and not rule.accepts(v):
      raise ConfigError(f"config {path}={v!r}: {rule.text()}")
  top_k, candidates = _get(config, "agent.top_k"), _get(config, "agent.num_candidates")
  if top_k is not None and candidates is not None and top_k > candidates:
    raise ConfigError(f"config agent.top_k={top_k!r}: K must not exceed the {candidates} "
                      "candidates (agent.num_candidates)")
  if _get(config, "train.bc_offline_only"):
    if _get(config, "train.offline_batch_ratio") is None:
      raise ConfigError("config train.bc_offline_only=True: needs train.offline_batch_ratio "
                        "(a separate offline buffer whose chunks are known), e.g. 0.5")
    if _get(config, "method") not in ("dfp", "dfp_no_topk"):
      raise ConfigError(f"config train.bc_offline_only=True: only DFP's agent supports it "
                        f"(method {_get(config, 'method')})")
  bottom = _get(config, "agent.num_bottom_negatives")
  if bottom and top_k is not None and candidates is not None and bottom > candidates - top_k:
    raise ConfigError(f"config agent.num_bottom_negatives={bottom!r}: at most N - K = "
                      f"{candidates - top_k} candidates are left below the top-K")


def check_members(config, members: Sequence):
  """check_config on every population member's config (its seed and swept values), naming
  the member: a swept value is checked as the same value given with --config would be."""
  for member in members:
    try:
      check_config(member.apply(config))
    except ConfigError as e:
      raise ConfigError(f"member {member.name}: {e}") from None
