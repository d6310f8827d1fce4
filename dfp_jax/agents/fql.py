"""FQL and QC-FQL: flow Q-learning (docs/methods.md).

Two actors: a flow-matching BC policy (`flow_steps` Euler steps) and a
one-step noise-conditioned policy mu(s, z) that maximises Q while staying
close to the flow's sample from the same noise:

  L = L_flow + alpha * ||mu(s, z) - sg(flow(s, z))||^2 - Q(s, clip(mu(s, z)))

The one-step policy acts and gives the critic target's next chunk. The same
loss runs offline and online. QC-FQL is chunk_len 5, FQL chunk_len 1; the
Q-chunking paper's runs use alpha = 100 for both.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from dfp_jax import flow
from dfp_jax.agents import base
from dfp_jax.agents.base import q_values
from dfp_jax.networks import Actor, VectorField
from dfp_jax.per_example import batch_mean, fold, normal, repeat_obs


def get_config():
  c = base.base_config()
  c.chunk_len = 5                 # QC-FQL; the fql config sets 1
  c.flow_steps = 10               # Euler steps of the BC flow
  c.alpha = 100.0                 # distillation weight
  c.normalize_q_loss = False      # divide the Q term by sg(mean |Q|) (an FQL option)
  c.num_act_samples = 1           # one-step policy sample, as FQL acts (> 1: best-of-N)
  c.num_target_samples = 1        # next chunk of the critic target: one one-step sample
  return c


class FQLAgent(base.AgentState):

  @property
  def flow(self):
    return VectorField(tuple(self.config.actor_hidden), self.chunk_size)

  @property
  def onestep(self):
    return Actor(tuple(self.config.actor_hidden), self.chunk_size)

  def field(self, params):
    return lambda obs, x, t: self.flow.apply({"params": params}, obs, x, t)


def create(config, obs_dim: int, action_dim: int, key) -> FQLAgent:
  def init_actor(shell, key):
    flow_key, onestep_key = jax.random.split(key)
    obs, x = jnp.zeros((1, obs_dim)), jnp.zeros((1, shell.chunk_size))
    return {"flow": shell.flow.init(flow_key, obs, x, jnp.zeros((1,)))["params"],
            "onestep": shell.onestep.init(onestep_key, obs, x)["params"]}
  return base.create(FQLAgent, config, obs_dim, action_dim, key, init_actor)


def sample_chunks(agent, obs, keys, num):
  """`num` clipped one-step samples per state. obs: [B, O], keys: [B, 2] -> [B, num, S]."""
  noise = normal(keys, num, agent.chunk_size)
  chunks = agent.onestep.apply({"params": agent.actor_params["onestep"]},
                               repeat_obs(obs, num), noise)
  return jnp.clip(chunks, -1.0, 1.0)


def flow_chunks(agent, params, obs, noise):
  """The BC flow's clipped chunk from each noise. obs: [B, O], noise: [B, S] -> [B, S]."""
  x = flow.euler_sample(agent.field(params), obs, noise, agent.config.flow_steps)
  return jnp.clip(x, -1.0, 1.0)


def actor_loss(agent, params, batch, keys, axis_name=None):
  c = agent.config
  obs = batch["observations"]
  bc_loss = flow.flow_matching_loss(agent.field(params["flow"]), obs, batch["actions"],
                                    fold(keys, 0), batch["valid"], axis_name)
  noise = normal(fold(keys, 1), 1, agent.chunk_size)[:, 0]
  target = jax.lax.stop_gradient(flow_chunks(agent, params["flow"], obs, noise))
  chunks = agent.onestep.apply({"params": params["onestep"]}, obs, noise)
  distill_loss = jnp.mean(jnp.square(chunks - target))
  q = q_values(agent, agent.critic_params, obs, jnp.clip(chunks, -1.0, 1.0)[:, None])[:, 0]
  q_loss = -jnp.mean(q)
  if c.normalize_q_loss:
    q_loss = q_loss / jax.lax.stop_gradient(jnp.maximum(batch_mean(jnp.abs(q), axis_name), 1e-6))
  loss = bc_loss + c.alpha * distill_loss + q_loss
  return loss, {"actor/loss": loss, "actor/bc_flow_loss": bc_loss,
                "actor/distill_loss": distill_loss, "actor/q_loss": q_loss,
                "actor/q_mean": q.mean()}


def update(agent: FQLAgent, batch, key, *, online: bool, axis_name: Optional[str] = None):
  """The FQL step; the same in both phases."""
  del online
  return base.apply_update(
      agent, batch, base.per_example_keys(key, batch), actor_loss=actor_loss,
      sample=sample_chunks,
      axis_name=axis_name)


def act(agent: FQLAgent, obs, key, num_samples: Optional[int] = None):
  """One-step policy chunks (best of N' when num_act_samples > 1)."""
  return base.act(agent, sample_chunks, obs, key, num_samples)


def start_online(agent):
  return agent
