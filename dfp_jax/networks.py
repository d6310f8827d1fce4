"""The networks: one-step actor f(s, eps) and the critic ensemble Q(s, a_chunk)."""

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp


# Every Dense layer, the output included, as the released implementation (docs/algorithm.md).
DENSE_INIT = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")


class MLP(nn.Module):
  """Plain MLP; GELU hidden layers, optional LayerNorm after each."""
  hidden: Sequence[int]
  out_dim: int
  layer_norm: bool = False
  activation: Callable = nn.gelu

  @nn.compact
  def __call__(self, x):
    for width in self.hidden:
      x = nn.Dense(width, kernel_init=DENSE_INIT)(x)
      x = self.activation(x)
      if self.layer_norm:
        x = nn.LayerNorm()(x)
    return nn.Dense(self.out_dim, kernel_init=DENSE_INIT)(x)


class Actor(nn.Module):
  """One-step pushforward policy: a = f_theta(s, eps), eps ~ N(0, I) (the paper's Section 3).

  Returns the raw chunk [..., S]. Callers clip it to [-1, 1], before acting and
  (as the released code; `clip_samples`) before the drift loss.
  """
  hidden: Sequence[int] = (512, 512, 512, 512)
  action_size: int = 5 * 5  # S = h * action_dim

  @nn.compact
  def __call__(self, obs, noise):
    return MLP(self.hidden, self.action_size)(jnp.concatenate([obs, noise], -1))


class Critic(nn.Module):
  """Ensemble of Q(s, a_chunk) MLPs with LayerNorm (docs/algorithm.md). Returns [E, ...]."""
  hidden: Sequence[int] = (512, 512, 512, 512)
  ensemble_size: int = 2

  @nn.compact
  def __call__(self, obs, actions):
    ensemble = nn.vmap(
        MLP, variable_axes={"params": 0}, split_rngs={"params": True},
        in_axes=None, out_axes=0, axis_size=self.ensemble_size)
    q = ensemble(self.hidden, 1, layer_norm=True)(jnp.concatenate([obs, actions], -1))
    return q[..., 0]


class VectorField(nn.Module):
  """Flow-matching velocity v(s, x_t, t) of the BC flow policies (FQL, BFN)."""
  hidden: Sequence[int] = (512, 512, 512, 512)
  action_size: int = 5 * 5

  @nn.compact
  def __call__(self, obs, x, t):
    return MLP(self.hidden, self.action_size)(jnp.concatenate([obs, x, t[..., None]], -1))


class MeanVelocity(nn.Module):
  """MeanFlow average velocity u(z, r, t | s) of the MVP policy."""
  hidden: Sequence[int] = (512, 512, 512, 512)
  action_size: int = 5 * 5

  @nn.compact
  def __call__(self, obs, z, r, t):
    return MLP(self.hidden, self.action_size)(
        jnp.concatenate([obs, z, r[..., None], t[..., None]], -1))
