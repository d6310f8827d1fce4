"""The DFP agent: one-step drifting actor, chunked critic ensemble, EMA anchor.

An immutable pytree with pure `create / update / act` functions. `update` is
one XLA program per call: critic TD with a best-of-M next-chunk target, the
drift losses (L_BC, plus lambda * L_topK with the N anchor candidates, their
Q-scores and the top-K all in the same graph), target-network and EMA updates.
"""

import functools
from typing import Any, Optional

import chex
import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from dfp_jax import drifting
from dfp_jax.networks import Actor, Critic
from dfp_jax.parallel import example_keys


def get_config():
  """Agent hyperparameters; defaults are the paper's OGBench values (Table 5)."""
  c = ml_collections.ConfigDict()
  c.actor_hidden = (512, 512, 512, 512)   # actor MLP, GELU, no LayerNorm
  c.critic_hidden = (512, 512, 512, 512)  # each critic MLP, GELU + LayerNorm
  c.critic_ensemble = 2                   # Q ensemble size, aggregated by the mean
  c.lr = 3e-4                             # Adam, actor and critic
  c.discount = 0.99                       # gamma
  c.tau = 5e-3                            # target-critic Polyak rate
  c.chunk_len = 5                         # h: steps per action chunk
  c.num_gen = 8                           # N_gen: policy samples per state (negatives)
  c.num_candidates = 16                   # N: anchor candidates per state
  c.top_k = 4                             # K: best candidates kept as positives
  c.num_act_samples = 16                  # N': best-of-N' when acting
  c.num_target_samples = 16               # best-of-M next chunk in the critic target
  c.topk_weight = 0.5                     # lambda in L_BC + lambda * L_topK
  c.ema_tau = 1e-4                        # tau_EMA of the anchor pi_old
  c.temperatures = (0.05,)                # kernel temperatures R ("bandwidth")
  c.kernel = "laplace"                    # "laplace" (impl) or "gaussian" (paper prose)
  c.topk_offline = False                  # pure offline-RL variant: top-K term from step 0
  c.use_topk = True                       # False: DFP without top-K (best-of-N' only)
  return c


class DFPAgent(flax.struct.PyTreeNode):
  actor_params: Any
  anchor_params: Any          # pi_old: EMA of the actor
  critic_params: Any
  target_critic_params: Any
  actor_opt_state: Any
  critic_opt_state: Any
  step: jax.Array
  config: Any = flax.struct.field(pytree_node=False)
  obs_dim: int = flax.struct.field(pytree_node=False)
  action_dim: int = flax.struct.field(pytree_node=False)

  @property
  def chunk_size(self):  # S = h * action_dim
    return self.config.chunk_len * self.action_dim

  @property
  def actor(self):
    return Actor(tuple(self.config.actor_hidden), self.chunk_size)

  @property
  def critic(self):
    return Critic(tuple(self.config.critic_hidden), self.config.critic_ensemble)

  @property
  def optimizer(self):
    return optax.adam(self.config.lr)


def create(config, obs_dim: int, action_dim: int, key) -> DFPAgent:
  """A fresh agent. `config` is `get_config()`-shaped; it is frozen here."""
  config = ml_collections.FrozenConfigDict(config)
  actor_key, critic_key = jax.random.split(key)
  shell = DFPAgent(None, None, None, None, None, None, jnp.zeros((), jnp.int32),
                   config, obs_dim, action_dim)
  obs = jnp.zeros((1, obs_dim))
  chunk = jnp.zeros((1, shell.chunk_size))
  actor_params = shell.actor.init(actor_key, obs, chunk)["params"]
  critic_params = shell.critic.init(critic_key, obs, chunk)["params"]
  opt = shell.optimizer
  return shell.replace(
      actor_params=actor_params, anchor_params=actor_params,
      critic_params=critic_params, target_critic_params=critic_params,
      actor_opt_state=opt.init(actor_params), critic_opt_state=opt.init(critic_params))


def _fold(keys, tag):
  return jax.vmap(jax.random.fold_in, (0, None))(keys, tag)


def _noise(keys, num, size):
  """Per-example standard normal noise. keys: [B, 2] -> [B, num, size]."""
  return jax.vmap(lambda k: jax.random.normal(k, (num, size)))(keys)


def sample_chunks(agent, params, obs, keys, num):
  """`num` clipped one-step samples per state. obs: [B, O], keys: [B, 2] -> [B, num, S]."""
  noise = _noise(keys, num, agent.chunk_size)
  obs = jnp.broadcast_to(obs[:, None], (obs.shape[0], num, obs.shape[-1]))
  return jnp.clip(agent.actor.apply({"params": params}, obs, noise), -1.0, 1.0)


def q_values(agent, params, obs, chunks):
  """Ensemble-mean Q. obs: [B, O], chunks: [B, M, S] -> [B, M]."""
  obs = jnp.broadcast_to(obs[:, None], chunks.shape[:2] + obs.shape[-1:])
  return agent.critic.apply({"params": params}, obs, chunks).mean(0)


def best_of(agent, obs, keys, num):
  """Best of `num` actor samples under the online critic. [B, O], keys [B, 2] -> [B, S]."""
  chunks = sample_chunks(agent, agent.actor_params, obs, keys, num)
  best = jnp.argmax(q_values(agent, agent.critic_params, obs, chunks), axis=-1)
  return jnp.take_along_axis(chunks, best[:, None, None], axis=1)[:, 0]


def top_k_positives(q, candidates, k):
  """The K best candidates by Q. q: [B, N], candidates: [B, N, S] -> [B, K, S]."""
  _, idx = jax.lax.top_k(q, k)
  return jnp.take_along_axis(candidates, idx[..., None], axis=1)


def critic_loss(agent, critic_params, batch, keys, axis_name=None):
  """Chunked TD: y = R_h + gamma^h * mask * Qbar(s_{t+h}, best-of-M a'). keys: [B, 2]."""
  c = agent.config
  next_chunk = best_of(agent, batch["next_observations"], keys, c.num_target_samples)
  next_q = agent.critic.apply({"params": agent.target_critic_params},
                              batch["next_observations"], next_chunk).mean(0)
  target = batch["rewards"] + c.discount**c.chunk_len * batch["masks"] * next_q
  target = jax.lax.stop_gradient(target)
  q = agent.critic.apply({"params": critic_params}, batch["observations"], batch["actions"])
  valid = batch["valid"]
  # Means over the global batch, so gradients averaged over devices are the global ones.
  loss = (jnp.mean(valid * jnp.square(q - target).mean(0))
          / jnp.maximum(drifting.batch_mean(valid, axis_name), 1e-8))
  return loss, {"critic/loss": loss, "critic/q_mean": q.mean(),
                "critic/target_mean": target.mean()}


def actor_loss(agent, actor_params, batch, keys, use_topk: bool, axis_name=None):
  """L_BC (+ lambda * L_topK), both drifting the same generated samples. keys: [B, 2]."""
  c = agent.config
  obs = batch["observations"]
  noise = _noise(_fold(keys, 0), c.num_gen, agent.chunk_size)
  gen = agent.actor.apply({"params": actor_params},
                          jnp.broadcast_to(obs[:, None], noise.shape[:2] + obs.shape[-1:]),
                          noise)  # [B, N_gen, S], unclipped
  drift = functools.partial(drifting.drift_loss, temperatures=tuple(c.temperatures),
                            kernel=c.kernel, axis_name=axis_name)
  bc_loss, bc_info = drift(gen, batch["actions"][:, None], sample_mask=batch["valid"])
  info = {f"actor/bc_{k}": v for k, v in bc_info.items()}
  loss = bc_loss
  if use_topk:
    candidates = sample_chunks(agent, agent.anchor_params, obs, _fold(keys, 1), c.num_candidates)
    q = q_values(agent, agent.critic_params, obs, candidates)
    positives = jax.lax.stop_gradient(top_k_positives(q, candidates, c.top_k))
    topk_loss, topk_info = drift(gen, positives)
    loss = loss + c.topk_weight * topk_loss
    info.update({f"actor/topk_{k}": v for k, v in topk_info.items()})
    info["actor/candidate_q_mean"] = q.mean()
    info["actor/topk_q_mean"] = jax.lax.top_k(q, c.top_k)[0].mean()
  info["actor/loss"] = loss
  info["actor/sample_abs"] = jnp.abs(gen).mean()
  return loss, info


def _polyak(new, old, tau):
  return jax.tree.map(lambda n, o: tau * n + (1.0 - tau) * o, new, old)


def update(agent: DFPAgent, batch, key, *, use_topk: bool,
           axis_name: Optional[str] = None):
  """One gradient step on actor and critic; target and EMA updates.

  batch: observations [B, O], actions [B, S] (flattened chunk), rewards [B]
  (discounted h-step sums), masks [B] (0 after a true terminal), valid [B]
  (chunk stays in one episode), next_observations [B, O] (s_{t+h}).
  `axis_name`: mesh axis over which gradients are averaged when the batch is
  sharded (data parallelism wraps this same function). `key` is either one
  PRNG key or per-example keys [B, 2] (`parallel.example_keys`).
  """
  chex.assert_rank(batch["observations"], 2)
  chex.assert_shape(batch["actions"], (batch["observations"].shape[0], agent.chunk_size))
  batch_size = batch["observations"].shape[0]
  keys = key if key.shape == (batch_size, 2) else example_keys(key, batch_size)
  (_, critic_info), critic_grads = jax.value_and_grad(critic_loss, argnums=1, has_aux=True)(
      agent, agent.critic_params, batch, _fold(keys, 0), axis_name)
  (_, actor_info), actor_grads = jax.value_and_grad(actor_loss, argnums=1, has_aux=True)(
      agent, agent.actor_params, batch, _fold(keys, 1), use_topk, axis_name)
  if axis_name is not None:
    critic_grads, actor_grads = jax.lax.pmean((critic_grads, actor_grads), axis_name)
  opt = agent.optimizer
  updates, critic_opt_state = opt.update(critic_grads, agent.critic_opt_state)
  critic_params = optax.apply_updates(agent.critic_params, updates)
  updates, actor_opt_state = opt.update(actor_grads, agent.actor_opt_state)
  actor_params = optax.apply_updates(agent.actor_params, updates)
  c = agent.config
  agent = agent.replace(
      actor_params=actor_params, critic_params=critic_params,
      actor_opt_state=actor_opt_state, critic_opt_state=critic_opt_state,
      target_critic_params=_polyak(critic_params, agent.target_critic_params, c.tau),
      anchor_params=_polyak(actor_params, agent.anchor_params, c.ema_tau),
      step=agent.step + 1)
  info = {**critic_info, **actor_info,
          "actor/grad_norm": optax.global_norm(actor_grads),
          "critic/grad_norm": optax.global_norm(critic_grads)}
  return agent, info


def act(agent: DFPAgent, obs, key, num_samples: Optional[int] = None):
  """Best-of-N' action chunks. obs: [O] or [B, O] -> [S] or [B, S], in [-1, 1]."""
  num = agent.config.num_act_samples if num_samples is None else num_samples
  single = obs.ndim == 1
  obs = obs[None] if single else obs
  chunk = best_of(agent, obs, example_keys(key, obs.shape[0]), num)
  return chunk[0] if single else chunk


def reset_anchor(agent: DFPAgent) -> DFPAgent:
  """pi_old <- pi_theta, done when the online phase starts (SPEC 4)."""
  return agent.replace(anchor_params=agent.actor_params)


def uses_topk(config, online: bool) -> bool:
  """Whether the update at this phase includes the top-K drift term."""
  return bool(config.use_topk and (online or config.topk_offline))
