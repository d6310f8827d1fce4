"""The DFP agent: one-step drifting actor, chunked critic ensemble, EMA anchor.

An immutable pytree with pure `create / update / act` functions. `update` is
one XLA program per call: critic TD with a best-of-M next-chunk target, the
drift losses (L_BC, plus lambda * L_topK with the N anchor candidates, their
Q-scores and the top-K all in the same graph), target-network and EMA updates.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from dfp_jax import drifting
from dfp_jax.agents import base
from dfp_jax.agents.base import hparam, top_k_positives, uses_topk  # noqa: F401 (re-exported)
from dfp_jax.networks import Actor
from dfp_jax.per_example import fold, normal, repeat_obs


def get_config():
  """Agent hyperparameters; defaults are the paper's OGBench values (Table 5)."""
  c = base.base_config()
  c.num_gen = 8                           # N_gen: policy samples per state (negatives)
  c.num_candidates = 16                   # N: anchor candidates per state
  c.top_k = 4                             # K: best candidates kept as positives
  c.topk_weight = 0.5                     # lambda in L_BC + lambda * L_topK
  c.ema_tau = 1e-4                        # tau_EMA of the anchor pi_old
  c.temperatures = (0.05,)                # kernel temperatures R ("bandwidth")
  c.kernel = "laplace"                    # "laplace" (impl) or "gaussian" (paper prose)
  c.affinity_floor = drifting.AFFINITY_FLOOR  # floor on the softmax product (impl; 0: none)
  c.relative_floor = False                # scale the floor by 8x9 / (N_gen x targets)
  c.clip_samples = True                   # clip policy samples to [-1, 1] before the drift (impl)
  c.bc_mask_invalid = False               # mask chunks that cross an episode end out of L_BC
  c.topk_mode = "hard"                    # "hard": equal weights; "soft" / "soft_minmax": by Q (base.TOPK_MODES)
  c.topk_offline = False                  # pure offline-RL variant: top-K term from step 0
  c.num_bottom_negatives = 0              # the lowest-Q candidates as fixed negatives of L_topK (impl)
  c.use_topk = True                       # False: DFP without top-K (best-of-N' only)
  return c


class DFPAgent(base.AgentState):

  @property
  def actor(self):
    return Actor(tuple(self.config.actor_hidden), self.chunk_size)


def create(config, obs_dim: int, action_dim: int, key) -> DFPAgent:
  """A fresh agent. `config` is `get_config()`-shaped; it is frozen here."""
  def init_actor(shell, key):
    return shell.actor.init(key, jnp.zeros((1, obs_dim)), jnp.zeros((1, shell.chunk_size)))["params"]
  return base.create(DFPAgent, config, obs_dim, action_dim, key, init_actor)


def sample_chunks(agent, params, obs, keys, num):
  """`num` clipped one-step samples per state. obs: [B, O], keys: [B, 2] -> [B, num, S]."""
  noise = normal(keys, num, agent.chunk_size)
  return jnp.clip(agent.actor.apply({"params": params}, repeat_obs(obs, num), noise), -1.0, 1.0)


def _policy_samples(agent, obs, keys, num):
  return sample_chunks(agent, agent.actor_params, obs, keys, num)


def temperatures(agent):
  """The kernel temperatures R: the config's tuple, or a member's [n] array in a population."""
  return agent.hparams["temperatures"] if "temperatures" in agent.hparams else tuple(
      agent.config.temperatures)


def actor_loss(agent, actor_params, batch, keys, axis_name=None, *, use_topk: bool):
  """L_BC (+ lambda * L_topK), both drifting the same generated samples. keys: [B, 2]."""
  c = agent.config
  obs = batch["observations"]
  noise = normal(fold(keys, 0), c.num_gen, agent.chunk_size)
  gen = agent.actor.apply({"params": actor_params}, repeat_obs(obs, c.num_gen),
                          noise)  # [B, N_gen, S]
  if c.clip_samples:  # as the released code: a coordinate outside the box gets no gradient
    gen = jnp.clip(gen, -1.0, 1.0)
  drift = functools.partial(
      drifting.drift_loss, temperatures=temperatures(agent), kernel=c.kernel,
      affinity_floor=c.affinity_floor, relative_floor=c.relative_floor, axis_name=axis_name)
  bc_loss, bc_info = drift(gen, batch["actions"][:, None], sample_mask=_bc_mask(c, batch))
  info = {f"actor/bc_{k}": v for k, v in bc_info.items()}
  loss = bc_loss
  if use_topk:
    positives, weights, candidates, q = base.anchor_topk(agent, sample_chunks, obs,
                                                         fold(keys, 1), c.topk_mode)
    negatives = bottom_candidates(q, candidates, c.num_bottom_negatives)
    topk_loss, topk_info = drift(gen, jax.lax.stop_gradient(positives),
                                 None if negatives is None else jax.lax.stop_gradient(negatives),
                                 pos_weights=jax.lax.stop_gradient(weights))
    loss = loss + hparam(agent, "topk_weight") * topk_loss
    info.update({f"actor/topk_{k}": v for k, v in topk_info.items()})
    info["actor/candidate_q_mean"] = q.mean()
    info["actor/topk_q_mean"] = jax.lax.top_k(q, c.top_k)[0].mean()
  info["actor/loss"] = loss
  info["actor/sample_abs"] = jnp.abs(gen).mean()
  return loss, info


def bottom_candidates(q, candidates, num: int):
  """The `num` lowest-Q candidates [B, num, S] (None for 0): the released agent's optional
  fixed negatives of the top-K term, repelling the policy from the worst candidates as well
  as from its own samples. q: [B, N], candidates: [B, N, S]."""
  if not num:
    return None
  _, idx = jax.lax.top_k(-q, num)
  return jnp.take_along_axis(candidates, idx[..., None], axis=1)


def _bc_mask(config, batch):
  """The states L_BC averages over: all (the released default), valid chunks only
  (`bc_mask_invalid`), offline chunks only (`train.bc_offline_only` marks them), or both."""
  masks = ([batch["valid"]] if config.bc_mask_invalid else []) + (
      [batch["offline"]] if "offline" in batch else [])
  if not masks:
    return None
  return masks[0] if len(masks) == 1 else masks[0] * masks[1]


def update(agent: DFPAgent, batch, key, *, online: bool, axis_name: Optional[str] = None):
  """One gradient step on actor and critic; target and EMA updates.

  batch: observations [B, O], actions [B, S] (flattened chunk), rewards [B]
  (discounted h-step sums), masks [B] (0 after a true terminal), valid [B]
  (chunk stays in one episode), next_observations [B, O] (s_{t+h}).
  `online` selects the phase: the top-K term runs online (or from step 0 with
  `topk_offline`). `key` is one PRNG key or per-example keys [B, 2].
  """
  c = agent.config
  return base.apply_update(
      agent, batch, base.per_example_keys(key, batch),
      actor_loss=functools.partial(actor_loss, use_topk=uses_topk(c, online)),
      sample=_policy_samples,
      ema_tau=hparam(agent, "ema_tau"), axis_name=axis_name)


def act(agent: DFPAgent, obs, key, num_samples: Optional[int] = None):
  """Best-of-N' action chunks. obs: [O] or [B, O] -> [S] or [B, S], in [-1, 1]."""
  return base.act(agent, _policy_samples, obs, key, num_samples)


start_online = base.reset_anchor
