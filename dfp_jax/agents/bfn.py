"""BFN and QC-BFN: a flow-matching BC policy improved by best-of-N only (docs/methods.md).

The policy is behaviour cloning with flow matching (`flow.py`, `flow_steps`
Euler steps per sample). Acting and the critic target both take the best of
N flow samples under the critic (N = 32 on OGBench). "QC" in the Q-chunking
paper is this agent with chunk_len 5; BFN is chunk_len 1.
"""

from typing import Optional

import jax.numpy as jnp

from dfp_jax import flow
from dfp_jax.agents import base
from dfp_jax.networks import VectorField
from dfp_jax.per_example import normal, repeat_obs


def get_config():
  c = base.base_config()
  c.chunk_len = 5                 # QC-BFN; the bfn config sets 1
  c.flow_steps = 10               # Euler steps per flow sample
  c.num_act_samples = 32          # N: best-of-N when acting (OGBench)
  c.num_target_samples = 32       # best-of-N next chunk in the critic target
  return c


class BFNAgent(base.AgentState):

  @property
  def flow(self):
    return VectorField(tuple(self.config.actor_hidden), self.chunk_size)

  def field(self, params):
    return lambda obs, x, t: self.flow.apply({"params": params}, obs, x, t)


def create(config, obs_dim: int, action_dim: int, key) -> BFNAgent:
  def init_actor(shell, key):
    return shell.flow.init(key, jnp.zeros((1, obs_dim)), jnp.zeros((1, shell.chunk_size)),
                           jnp.zeros((1,)))["params"]
  return base.create(BFNAgent, config, obs_dim, action_dim, key, init_actor)


def sample_chunks(agent, obs, keys, num):
  """`num` clipped flow samples per state. obs: [B, O], keys: [B, 2] -> [B, num, S]."""
  noise = normal(keys, num, agent.chunk_size)
  x = flow.euler_sample(agent.field(agent.actor_params), repeat_obs(obs, num), noise,
                        agent.config.flow_steps)
  return jnp.clip(x, -1.0, 1.0)


def actor_loss(agent, params, batch, keys, axis_name=None):
  loss = flow.flow_matching_loss(agent.field(params), batch["observations"], batch["actions"],
                                 keys, batch["valid"], axis_name)
  return loss, {"actor/loss": loss, "actor/bc_flow_loss": loss}


def update(agent: BFNAgent, batch, key, *, online: bool, axis_name: Optional[str] = None):
  """Flow BC and chunked TD with a best-of-N target; the same in both phases."""
  del online
  return base.apply_update(
      agent, batch, base.per_example_keys(key, batch), actor_loss=actor_loss,
      sample=sample_chunks,
      axis_name=axis_name)


def act(agent: BFNAgent, obs, key, num_samples: Optional[int] = None):
  """Best of N flow samples. obs: [O] or [B, O] -> [S] or [B, S], in [-1, 1]."""
  return base.act(agent, sample_chunks, obs, key, num_samples)


def start_online(agent):
  return agent
