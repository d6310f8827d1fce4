"""MVP: a one-step MeanFlow policy, improved by best-of-N acting; optionally with top-K
(docs/methods.md).

The network is the average velocity u(z, r, t | s) of MeanFlow. Convention:
z_t = (1 - t) x + t e with data x, noise e and v = e - x; one step from
t = 1 to r = 0 gives the chunk x = e - u(e, 0, 1). Training regresses u onto
the MeanFlow identity

  u(z_t, r, t) = v - (t - r) (v . d_z u + d_t u)      (a jax.jvp of u)

with a stop-gradient target, plus the instantaneous-velocity constraint (IVC).
The defaults are the recipe of the authors' MVP, behind the paper's MVP
numbers (docs/methods.md): (t, r) the larger and smaller of two sigmoid(N(-0.4, 1))
draws, plain squared errors, the IVC ||u(z_r, r, r) - v||^2 at the smaller
time with weight 1. The earlier recipe (uniform times, MeanFlow's adaptive
loss weight, IVC at t) stays reachable through the config.

`use_topk` adds the backbone ablation: DFP's top-K positives from the EMA
anchor, fitted with the same MeanFlow loss (weight lambda), online only by
default; `topk_offline=True` runs it in both phases with the anchor tracking
the actor from step 0 and reset to it at the online switch, as the released MVP code does.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from dfp_jax.agents import base
from dfp_jax.agents.base import hparam
from dfp_jax.networks import MeanVelocity
from dfp_jax.per_example import fold, masked_mean, normal, repeat_obs, uniform


def get_config():
  c = base.base_config()
  c.time_sampler = "lognorm"      # (t, r) from two sigmoid(N(mean, std)) draws, or "uniform"
  c.time_mean = -0.4              # lognorm sampler: mean of the normal
  c.time_std = 1.0                # lognorm sampler: std of the normal
  c.velocity_weight = 1.0         # weight of the instantaneous-velocity constraint (IVC)
  c.velocity_time = "r"           # IVC at (z_r, r, r) (authors' MVP) or "t": (z_t, t, t)
  c.adaptive_weight_p = 0.0       # MeanFlow's adaptive loss weight 1 / sg(err + 1e-3)^p (0: off)
  c.num_act_samples = 16          # N: best-of-N when acting (our choice: DFP's N')
  c.num_target_samples = 16       # best-of-N next chunk in the critic target
  c.use_topk = False              # True: MVP + top-K (the backbone ablation)
  c.topk_offline = False          # top-K: also offline, anchor EMA from step 0, reset online (released)
  c.num_candidates = 16           # top-K: N anchor candidates per state
  c.top_k = 4                     # top-K: K positives
  c.topk_weight = 0.5             # top-K: lambda
  c.ema_tau = 1e-4                # top-K: tau_EMA of the anchor
  return c


class MVPAgent(base.AgentState):

  @property
  def net(self):
    return MeanVelocity(tuple(self.config.actor_hidden), self.chunk_size)


def create(config, obs_dim: int, action_dim: int, key) -> MVPAgent:
  def init_actor(shell, key):
    zeros = jnp.zeros((1,))
    return shell.net.init(key, jnp.zeros((1, obs_dim)), jnp.zeros((1, shell.chunk_size)),
                          zeros, zeros)["params"]
  return base.create(MVPAgent, config, obs_dim, action_dim, key, init_actor)


def one_step(agent, params, obs, noise):
  """x = e - u(e, 0, 1 | s), unclipped. obs: [..., O], noise: [..., S]."""
  ones = jnp.ones(noise.shape[:-1], noise.dtype)
  return noise - agent.net.apply({"params": params}, obs, noise, 0.0 * ones, ones)


def sample_chunks(agent, params, obs, keys, num):
  """`num` clipped one-step samples per state. obs: [B, O], keys: [B, 2] -> [B, num, S]."""
  noise = normal(keys, num, agent.chunk_size)
  return jnp.clip(one_step(agent, params, repeat_obs(obs, num), noise), -1.0, 1.0)


def _policy_samples(agent, obs, keys, num):
  return sample_chunks(agent, agent.actor_params, obs, keys, num)


def mean_flow_loss(agent, params, obs, x, keys):
  """Per-state MeanFlow + instantaneous-velocity loss. obs: [B, O], x: [B, C, S].

  Returns (weighted loss [B], unweighted squared error [B]); the second is for logging,
  since the adaptive weight makes the first about constant.
  """
  c = agent.config
  b, n, s = x.shape
  e = normal(fold(keys, 0), n, s)
  times = sample_times(fold(keys, 1), 2 * n, c).reshape(b, n, 2)
  r, t = times.min(-1), times.max(-1)
  v = e - x
  z = x + t[..., None] * v  # (1 - t) x + t e
  o = repeat_obs(obs, n)
  u_fn = lambda z, r, t: agent.net.apply({"params": params}, o, z, r, t)
  # d/dt u(z_t, r, t) along the flow: tangent (dz/dt, dr/dt, dt/dt) = (v, 0, 1).
  u, dudt = jax.jvp(u_fn, (z, r, t), (v, jnp.zeros_like(r), jnp.ones_like(t)))
  target = jax.lax.stop_gradient(v - (t - r)[..., None] * dudt)
  w = c.velocity_weight
  mean_flow = jnp.mean(jnp.square(u - target), axis=-1)
  loss, error = _adaptive(mean_flow, c), mean_flow
  if w:
    s_ivc = r if c.velocity_time == "r" else t
    z_ivc = x + s_ivc[..., None] * v
    velocity = jnp.mean(jnp.square(u_fn(z_ivc, s_ivc, s_ivc) - v), axis=-1)
    loss, error = loss + w * _adaptive(velocity, c), error + w * velocity
  return jnp.mean(loss, axis=-1), jnp.mean(error, axis=-1)


def sample_times(keys, num, config):
  """Per-example times in (0, 1). keys: [B, 2] -> [B, num].

  "lognorm": sigmoid(n), n ~ N(time_mean, time_std), clipped to [1e-6, 1 - 1e-6]
  (the authors' MVP); "uniform": U(0, 1).
  """
  if config.time_sampler == "uniform":
    return uniform(keys, num)
  n = config.time_mean + config.time_std * normal(keys, num, 1)[..., 0]
  return jnp.clip(jax.nn.sigmoid(n), 1e-6, 1.0 - 1e-6)


def _adaptive(err, config):
  """MeanFlow's adaptive weighting: per-sample errors scaled by 1 / sg(err + c)^p.

  With p = 1 every sample's loss is about 1, so the large errors of the early
  identity targets do not swamp training.
  """
  if not config.adaptive_weight_p:
    return err
  return err / jax.lax.stop_gradient(err + 1e-3) ** config.adaptive_weight_p


def actor_loss(agent, params, batch, keys, axis_name=None, *, use_topk: bool):
  obs = batch["observations"]
  bc_loss, bc_err = mean_flow_loss(agent, params, obs, batch["actions"][:, None], fold(keys, 0))
  bc_loss = masked_mean(bc_loss, batch["valid"], axis_name)
  info = {"actor/bc_loss": bc_loss, "actor/bc_error": masked_mean(bc_err, batch["valid"], axis_name)}
  loss = bc_loss
  if use_topk:
    positives, _, _, q = base.anchor_topk(agent, sample_chunks, obs, fold(keys, 1))
    positives = jax.lax.stop_gradient(positives)
    topk_loss = jnp.mean(mean_flow_loss(agent, params, obs, positives, fold(keys, 2))[0])
    loss = loss + hparam(agent, "topk_weight") * topk_loss
    info.update({"actor/topk_loss": topk_loss, "actor/candidate_q_mean": q.mean()})
  info["actor/loss"] = loss
  return loss, info


def update(agent: MVPAgent, batch, key, *, online: bool, axis_name: Optional[str] = None):
  """MeanFlow BC (+ lambda * top-K MeanFlow when use_topk) and chunked TD."""
  c = agent.config
  return base.apply_update(
      agent, batch, base.per_example_keys(key, batch),
      actor_loss=functools.partial(actor_loss, use_topk=base.uses_topk(c, online)),
      sample=_policy_samples,
      ema_tau=hparam(agent, "ema_tau") if c.use_topk else None, axis_name=axis_name)


def act(agent: MVPAgent, obs, key, num_samples: Optional[int] = None):
  """Best of N one-step samples. obs: [O] or [B, O] -> [S] or [B, S], in [-1, 1]."""
  return base.act(agent, _policy_samples, obs, key, num_samples)


def start_online(agent: MVPAgent):
  """pi_old <- pi_theta at the online phase, also after a both-phase top-K offline phase
  (`topk_offline`), whose anchor the released code resets to the actor at the switch."""
  return base.reset_anchor(agent)
