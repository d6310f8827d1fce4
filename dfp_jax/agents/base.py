"""What every agent shares: the state pytree, the chunked critic, best-of-N, the update
(docs/algorithm.md).

Each method (dfp.py, fql.py, bfn.py, mvp.py) defines only its actor: how to
initialise it, how it samples chunks (for acting and for the critic target,
both best-of-N) and its loss. The critic ensemble, its TD loss, best-of-N selection,
Adam, the target network and the EMA anchor live here, so a difference in
results between methods is a difference in the actor.

The interface the trainer and benchmark use, per agent module:
  get_config() -> ConfigDict
  create(config, obs_dim, action_dim, key) -> agent
  update(agent, batch, key, *, online, axis_name=None) -> (agent, info)
  act(agent, obs, key, num_samples=None) -> chunk(s) in [-1, 1]
  start_online(agent) -> agent
"""

from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from dfp_jax.networks import Critic
from dfp_jax.per_example import example_keys, fold, in_blocks, masked_mean, repeat_obs


def base_config():
  """Fields every method has; defaults are the paper's OGBench values (Table 5)."""
  c = ml_collections.ConfigDict()
  c.actor_hidden = (512, 512, 512, 512)   # actor MLP(s), GELU, no LayerNorm
  c.critic_hidden = (512, 512, 512, 512)  # each critic MLP, GELU + LayerNorm
  c.critic_ensemble = 2                   # Q ensemble size, aggregated by the mean
  c.lr = 3e-4                             # Adam, actor and critic
  c.discount = 0.99                       # gamma
  c.tau = 5e-3                            # target-critic Polyak rate
  c.chunk_len = 5                         # h: steps per action chunk (1: no chunking)
  c.num_act_samples = 16                  # N': best-of-N' when acting
  c.num_target_samples = 16               # best-of-M next chunk in the critic target
  return c


class AgentState(flax.struct.PyTreeNode):
  """Parameters and optimiser states; methods subclass it to add their networks."""
  actor_params: Any           # the policy's parameters (a dict of nets for FQL)
  anchor_params: Any          # pi_old: EMA of the actor (top-K methods), else unused
  critic_params: Any
  target_critic_params: Any
  actor_opt_state: Any
  critic_opt_state: Any
  step: jax.Array
  config: Any = flax.struct.field(pytree_node=False)
  obs_dim: int = flax.struct.field(pytree_node=False)
  action_dim: int = flax.struct.field(pytree_node=False)
  # A population member's own values of swept hyperparameters ({} for a lone run, whose
  # values are the config's constants): traced arrays, vmapped like the seed axis.
  hparams: Any = flax.struct.field(default_factory=dict)

  @property
  def chunk_size(self):  # S = h * action_dim
    return self.config.chunk_len * self.action_dim

  @property
  def critic(self):
    return Critic(tuple(self.config.critic_hidden), self.config.critic_ensemble)

  @property
  def optimizer(self):
    return optax.adam(hparam(self, "lr"))


def hparam(agent, name: str):
  """A scalar hyperparameter: the member's own (traced) value in a population, else the
  config's constant."""
  return agent.hparams[name] if name in agent.hparams else agent.config[name]


def create(cls, config, obs_dim: int, action_dim: int, key, init_actor: Callable):
  """A fresh agent of class `cls`; `init_actor(shell, key)` returns the actor params."""
  config = ml_collections.FrozenConfigDict(config)
  actor_key, critic_key = jax.random.split(key)
  shell = cls(None, None, None, None, None, None, jnp.zeros((), jnp.int32),
              config, obs_dim, action_dim)
  actor_params = init_actor(shell, actor_key)
  critic_params = shell.critic.init(critic_key, jnp.zeros((1, obs_dim)),
                                    jnp.zeros((1, shell.chunk_size)))["params"]
  opt = shell.optimizer
  return shell.replace(
      actor_params=actor_params, anchor_params=actor_params,
      critic_params=critic_params, target_critic_params=critic_params,
      actor_opt_state=opt.init(actor_params), critic_opt_state=opt.init(critic_params))


def q_values(agent, params, obs, chunks):
  """Ensemble-mean Q. obs: [B, O], chunks: [B, M, S] -> [B, M]."""
  return agent.critic.apply({"params": params}, repeat_obs(obs, chunks.shape[1]), chunks).mean(0)


def select_best(q, chunks):
  """The argmax-Q chunk per state. q: [B, M], chunks: [B, M, S] -> [B, S]."""
  best = jnp.argmax(q, axis=-1)
  return jnp.take_along_axis(chunks, best[:, None, None], axis=1)[:, 0]


def scored_samples(agent, sample: Callable, obs, keys, num):
  """`num` samples per state and their ensemble-mean Q under the online critic, evaluated in
  blocks of states where the backend needs it (per_example.in_blocks).

  sample(obs [b, O], keys [b, 2], num) -> chunks [b, num, S]. Returns (chunks [B, num, S],
  q [B, num]).
  """
  def block(obs, keys):
    chunks = sample(obs, keys, num)
    return chunks, q_values(agent, agent.critic_params, obs, chunks)
  return in_blocks(block, num, obs, keys)


def best_of(agent, sample: Callable, obs, keys, num):
  """Best of `num` policy samples under the online critic.

  sample(agent, obs [B, O], keys [B, 2], num) -> clipped chunks [B, num, S].
  """
  if num == 1:  # nothing to choose between
    return sample(agent, obs, keys, 1)[:, 0]
  chunks, q = scored_samples(agent, lambda o, k, n: sample(agent, o, k, n), obs, keys, num)
  return select_best(q, chunks)


# Top-K weightings (`agent.topk_mode`): "hard" weighs the K positives equally (the paper);
# "soft" is the released soft variant, max(2 (q - min) / (max - min) - 1, 0) with min and max
# over the state's N candidates, so candidates below the mid-range get weight 0;
# "soft_minmax" is (q - min) / (max - min), this project's soft weighting before it matched.
TOPK_MODES = ("hard", "soft", "soft_minmax")


def top_k_positives(q, candidates, k, mode: str = "hard"):
  """The K best candidates by Q and their weights. q: [B, N], candidates: [B, N, S].

  Returns (positives [B, K, S], weights [B, K] or None for equal weights), weighted as
  `mode` (TOPK_MODES) says.
  """
  if mode not in TOPK_MODES:
    raise ValueError(f"top-K mode {mode!r}: expected one of {', '.join(TOPK_MODES)}")
  top_q, idx = jax.lax.top_k(q, k)
  positives = jnp.take_along_axis(candidates, idx[..., None], axis=1)
  if mode == "hard":
    return positives, None
  low, high = q.min(-1, keepdims=True), q.max(-1, keepdims=True)
  unit = (top_q - low) / jnp.maximum(high - low, 1e-8)
  if mode == "soft":
    return positives, jnp.maximum(2.0 * unit - 1.0, 0.0)
  return positives, jnp.maximum(unit, 0.0)


def uses_topk(config, online: bool) -> bool:
  """Whether an update at this phase has the top-K term: online, or from step 0 with
  `topk_offline` (DFP and MVP + top-K alike)."""
  return bool(config.use_topk and (online or config.topk_offline))


def anchor_topk(agent, sample_chunks: Callable, obs, keys, mode: str = "hard"):
  """The top-K step DFP and MVP + top-K share: N candidates from the EMA anchor pi_old, scored
  by the online critic, and the K best with their weights (`top_k_positives`).

  sample_chunks(agent, params, obs [b, O], keys [b, 2], num) -> chunks [b, num, S]. Returns
  (positives [B, K, S], weights [B, K] or None, candidates [B, N, S], q [B, N]). The anchor
  is reset to the actor at the online switch (`reset_anchor`, both agents' start_online).
  """
  c = agent.config
  candidates, q = scored_samples(
      agent, lambda o, k, n: sample_chunks(agent, agent.anchor_params, o, k, n), obs, keys,
      c.num_candidates)
  positives, weights = top_k_positives(q, candidates, c.top_k, mode)
  return positives, weights, candidates, q


def td_loss(agent, critic_params, batch, next_chunk, axis_name=None):
  """Chunked TD: y = R_h + gamma^h * mask * Qbar(s_{t+h}, a'). next_chunk: [B, S]."""
  c = agent.config
  next_q = agent.critic.apply({"params": agent.target_critic_params},
                              batch["next_observations"], next_chunk).mean(0)
  target = batch["rewards"] + hparam(agent, "discount")**c.chunk_len * batch["masks"] * next_q
  target = jax.lax.stop_gradient(target)
  q = agent.critic.apply({"params": critic_params}, batch["observations"], batch["actions"])
  loss = masked_mean(jnp.square(q - target).mean(0), batch["valid"], axis_name)
  return loss, {"critic/loss": loss, "critic/q_mean": q.mean(),
                "critic/target_mean": target.mean()}


def polyak(new, old, tau):
  return jax.tree.map(lambda n, o: tau * n + (1.0 - tau) * o, new, old)


def per_example_keys(key, batch):
  """A single key or per-example keys [B, 2] -> per-example keys [B, 2]."""
  batch_size = batch["observations"].shape[0]
  return key if key.shape == (batch_size, 2) else example_keys(key, batch_size)


def apply_update(agent, batch, keys, *, actor_loss: Callable, sample: Callable,
                 ema_tau: Optional[Any] = None, axis_name: Optional[str] = None):
  """One gradient step on actor and critic, then the target (and EMA anchor) updates.

  actor_loss(agent, actor_params, batch, keys [B, 2], axis_name) -> (loss, info);
  sample(agent, obs [B, O], keys [B, 2], num) -> clipped chunks [B, num, S], the
  policy: the critic target bootstraps from its best of `num_target_samples`.
  `axis_name`: mesh axis over which gradients are averaged when the batch is
  sharded (data parallelism wraps the same update).
  """
  next_chunks = jax.lax.stop_gradient(best_of(agent, sample, batch["next_observations"],
                                              fold(keys, 0), agent.config.num_target_samples))
  (_, critic_info), critic_grads = jax.value_and_grad(td_loss, argnums=1, has_aux=True)(
      agent, agent.critic_params, batch, next_chunks, axis_name)
  (_, actor_info), actor_grads = jax.value_and_grad(actor_loss, argnums=1, has_aux=True)(
      agent, agent.actor_params, batch, fold(keys, 1), axis_name)
  if axis_name is not None:
    critic_grads, actor_grads = jax.lax.pmean((critic_grads, actor_grads), axis_name)
  opt = agent.optimizer
  updates, critic_opt_state = opt.update(critic_grads, agent.critic_opt_state)
  critic_params = optax.apply_updates(agent.critic_params, updates)
  updates, actor_opt_state = opt.update(actor_grads, agent.actor_opt_state)
  actor_params = optax.apply_updates(agent.actor_params, updates)
  anchor_params = (agent.anchor_params if ema_tau is None
                   else polyak(actor_params, agent.anchor_params, ema_tau))
  agent = agent.replace(
      actor_params=actor_params, critic_params=critic_params, anchor_params=anchor_params,
      actor_opt_state=actor_opt_state, critic_opt_state=critic_opt_state,
      target_critic_params=polyak(critic_params, agent.target_critic_params,
                                  hparam(agent, "tau")),
      step=agent.step + 1)
  info = {**critic_info, **actor_info,
          "actor/grad_norm": optax.tree.norm(actor_grads),
          "critic/grad_norm": optax.tree.norm(critic_grads)}
  return agent, info


def act(agent, sample: Callable, obs, key, num_samples: Optional[int] = None):
  """Best of N' policy samples (`num_act_samples` unless given) under the critic.

  sample as in `apply_update`; obs: [O] or [B, O] -> [S] or [B, S], in [-1, 1]. `key` is one
  PRNG key or, for [B, O], per-example keys [B, 2] (each state's samples from its own key).
  """
  num = agent.config.num_act_samples if num_samples is None else num_samples
  single = obs.ndim == 1
  obs = obs[None] if single else obs
  keys = key if key.shape == (obs.shape[0], 2) else example_keys(key, obs.shape[0])
  chunk = best_of(agent, sample, obs, keys, num)
  return chunk[0] if single else chunk


def reset_anchor(agent):
  """pi_old <- pi_theta, done when the online phase starts (docs/algorithm.md)."""
  return agent.replace(anchor_params=agent.actor_params)
