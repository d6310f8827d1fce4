"""Flow-matching behaviour cloning and Euler sampling, shared by FQL and BFN (docs/methods.md).

Convention: x_0 ~ N(0, I) is noise, x_1 the data chunk, x_t = (1 - t) x_0 + t x_1,
and the network regresses the velocity v = x_1 - x_0. Sampling integrates
dx/dt = v(s, x, t) from t = 0 to 1 with `steps` Euler steps inside the graph.
"""

import jax
import jax.numpy as jnp

from dfp_jax.per_example import fold, masked_mean, normal, uniform


def flow_matching_loss(field, obs, actions, keys, valid, axis_name=None):
  """Conditional flow matching on data chunks.

  field(obs [B, O], x [B, S], t [B]) -> velocity [B, S]; actions: [B, S];
  keys: [B, 2]; valid: [B] (masks chunks that cross an episode end).
  """
  x0 = normal(fold(keys, 0), 1, actions.shape[-1])[:, 0]
  t = uniform(fold(keys, 1), 1)[:, 0]
  xt = (1.0 - t)[:, None] * x0 + t[:, None] * actions
  err = jnp.mean(jnp.square(field(obs, xt, t) - (actions - x0)), axis=-1)
  return masked_mean(err, valid, axis_name)


def euler_sample(field, obs, noise, steps: int):
  """Integrates the flow from noise. obs: [..., O], noise: [..., S] -> unclipped [..., S]."""
  dt = 1.0 / steps

  def body(i, x):
    t = jnp.full(x.shape[:-1], i * dt, x.dtype)
    return x + dt * field(obs, x, t)

  return jax.lax.fori_loop(0, steps, body, noise)
