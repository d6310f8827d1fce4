"""Checks of a run's config before anything is built, so a bad value is one clear error."""

from typing import Sequence


# The largest seed every random number generator of a run accepts (jax's PRNGKey: int32).
MAX_SEED = 2**31 - 1


class ConfigError(ValueError):
  """A config value that no run can use."""


def _get(config, path):
  node = config
  for part in path.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def check_config(config):
  """Raise ConfigError naming the first field of `config` that is out of range."""
  def need(ok, path, rule):
    if not ok:
      raise ConfigError(f"config {path}={_get(config, path)!r}: {rule}")

  def positive_int(path, minimum=1):
    v = _get(config, path)
    if v is not None:
      need(isinstance(v, int) and not isinstance(v, bool) and v >= minimum, path,
           f"must be an integer >= {minimum}")

  def number_in(path, lo, hi, lo_open=False):
    v = _get(config, path)
    if v is not None:
      ok = isinstance(v, (int, float)) and not isinstance(v, bool)
      ok = ok and (v > lo if lo_open else v >= lo) and v <= hi
      need(ok, path, f"must be in {'(' if lo_open else '['}{lo}, {hi}]")

  def choice(path, options: Sequence[str]):
    v = _get(config, path)
    if v is not None:
      need(v in options, path, f"must be one of {', '.join(options)}")

  seed = _get(config, "seed")
  if seed is not None:
    need(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED, "seed",
         f"must be an integer in [0, {MAX_SEED}]")
  for path in ("train.batch_size", "train.log_interval", "train.eval_interval",
               "train.updates_per_dispatch", "train.keep_checkpoints", "agent.chunk_len",
               "agent.num_act_samples", "agent.num_target_samples", "agent.critic_ensemble",
               "agent.num_gen", "agent.num_candidates", "agent.top_k", "agent.flow_steps",
               "train.replay_capacity"):
    positive_int(path)
  for path in ("train.offline_steps", "train.online_steps", "train.start_training",
               "train.eval_episodes", "train.checkpoint_interval", "train.video_episodes"):
    positive_int(path, minimum=0)
  positive_int("train.video_size", minimum=16)
  positive_int("train.env_workers", minimum=0)
  positive_int("train.eval_envs")
  number_in("agent.discount", 0.0, 1.0, lo_open=True)
  number_in("agent.tau", 0.0, 1.0)
  number_in("agent.ema_tau", 0.0, 1.0)
  number_in("agent.lr", 0.0, float("inf"), lo_open=True)
  number_in("agent.topk_weight", 0.0, float("inf"))
  for path in ("agent.actor_hidden", "agent.critic_hidden"):
    v = _get(config, path)
    if v is not None:
      need(len(v) > 0 and all(isinstance(h, int) and h > 0 for h in v), path,
           "must be a non-empty list of positive layer widths")
  temps = _get(config, "agent.temperatures")
  if temps is not None:
    need(len(temps) > 0 and all(isinstance(r, (int, float)) and r > 0 for r in temps),
         "agent.temperatures", "must be a non-empty list of positive temperatures R")
  if _get(config, "agent.top_k") is not None and _get(config, "agent.num_candidates") is not None:
    need(config.agent.top_k <= config.agent.num_candidates, "agent.top_k",
         f"K must not exceed the {config.agent.num_candidates} candidates (agent.num_candidates)")
  choice("agent.kernel", ("laplace", "gaussian"))
  choice("agent.topk_mode", ("hard", "soft"))
  choice("agent.time_sampler", ("lognorm", "uniform"))
  choice("agent.velocity_time", ("r", "t"))
  number_in("agent.affinity_floor", 0.0, 1.0)
  choice("env.success_timing", ("pre", "post"))
  choice("train.on_nonfinite", ("stop", "skip"))
  choice("train.matmul_precision", ("fp32", "tf32", "bf16", "default"))


def check_members(config, members):
  """check_config on every population member's config (its seed and swept values), naming
  the member: a swept value is checked as the same value given with --config would be."""
  for member in members:
    try:
      check_config(member.apply(config))
    except ConfigError as e:
      raise ConfigError(f"member {member.name}: {e}") from None
