"""The drifting field: properties a wrong implementation would fail, and a 2-D generator fit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dfp_jax import drifting
from dfp_jax.networks import MLP

KERNELS = ("laplace", "gaussian")


def _rand(key, shape):
  return jax.random.normal(jax.random.PRNGKey(key), shape)


@pytest.mark.parametrize("kernel", KERNELS)
def test_zero_field_when_positives_equal_negatives(kernel):
  x = _rand(0, (4, 1, 3))  # Cg = 1: the only generated sample is masked from its negatives
  y = _rand(1, (4, 6, 3))
  v, _, _, _ = drifting.drifting_field(x, y, y, temperatures=(0.05, 0.2), kernel=kernel,
                                       normalize=False)
  np.testing.assert_allclose(v, 0.0, atol=1e-6)
  loss, _ = drifting.drift_loss(x, pos=y, neg=y, temperatures=(0.05, 0.2), kernel=kernel)
  assert float(loss) < 1e-10


@pytest.mark.parametrize("kernel", KERNELS)
def test_field_is_antisymmetric(kernel):
  x, p, q = _rand(0, (3, 5, 2)), _rand(1, (3, 7, 2)) + 1.0, _rand(2, (3, 7, 2)) - 1.0
  field = functools.partial(drifting.drifting_field, temperatures=(0.1, 0.5), kernel=kernel)
  v_pq, *_ = field(x, p, q)
  v_qp, *_ = field(x, q, p)
  np.testing.assert_allclose(v_pq, -v_qp, atol=1e-5)
  assert float(jnp.abs(v_pq).max()) > 0.1  # and it is not trivially zero


@pytest.mark.parametrize("kernel", KERNELS)
def test_attraction_toward_positives(kernel):
  # Samples around the origin, positives around (3, 0): the field points along +x.
  x = 0.1 * _rand(0, (2, 16, 2))
  pos = 0.1 * _rand(1, (2, 8, 2)) + jnp.array([3.0, 0.0])
  v, _, _, info = drifting.drifting_field(x, pos, x, temperatures=(0.5,), kernel=kernel,
                                          self_negatives=True)
  cos = v[..., 0] / jnp.linalg.norm(v, axis=-1)
  assert float(cos.min()) > 0.9
  assert float(info["scale"]) > 0


def test_loss_gradient_moves_samples_along_the_field():
  x = _rand(0, (2, 8, 3))
  pos = _rand(1, (2, 4, 3)) + 2.0
  v, _, coord_scale, _ = drifting.drifting_field(x, pos, x, temperatures=(0.05,),
                                                 self_negatives=True)
  g = jax.grad(lambda x: drifting.drift_loss(x, pos)[0])(x)
  # d/dx mean((x/c - sg(x/c + V))^2) = -2 V / (c * numel / B): exactly opposite to V.
  cos = -jnp.sum(g * v) / (jnp.linalg.norm(g) * jnp.linalg.norm(v))
  assert float(cos) > 0.999


def test_temperatures_sum_unit_fields():
  x, p = _rand(0, (4, 8, 2)), _rand(1, (4, 3, 2)) + 0.5
  one, *_ = drifting.drifting_field(x, p, x, temperatures=(0.05,), self_negatives=True)
  two, *_ = drifting.drifting_field(x, p, x, temperatures=(0.05, 0.5), self_negatives=True)
  other, *_ = drifting.drifting_field(x, p, x, temperatures=(0.5,), self_negatives=True)
  np.testing.assert_allclose(jnp.sqrt(jnp.mean(one**2)), 1.0, rtol=1e-4)
  np.testing.assert_allclose(two, one + other, atol=1e-5)
  assert float(jnp.abs(one - other).max()) > 1e-2  # temperatures give different fields


def test_unknown_kernel_is_an_error():
  x = _rand(0, (1, 2, 2))
  with pytest.raises(ValueError, match="unknown kernel"):
    drifting.drift_loss(x, x, kernel="cosine")


# --- A one-step generator on a 2-D mixture of Gaussians -------------------------------------

MODES = np.array([[-2.0, -2.0], [2.0, -2.0], [0.0, 2.0]])
WEIGHTS = np.array([0.5, 0.3, 0.2])


def _mixture(rng, n):
  comp = rng.choice(len(MODES), size=n, p=WEIGHTS)
  return (MODES[comp] + 0.2 * rng.standard_normal((n, 2))).astype(np.float32)


def _train_generator(repulsion, steps=2000, seed=0):
  """Unconditional generation: B = 1 state, Cg generated and Cp data samples."""
  net = MLP((128, 128), 2)
  key = jax.random.PRNGKey(seed)
  params = net.init(key, jnp.zeros((1, 2)))
  opt = optax.adam(1e-3)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, data, key):
    def loss_fn(params):
      gen = net.apply(params, jax.random.normal(key, (1, 256, 2)))
      return drifting.drift_loss(gen, data[None], temperatures=(0.05, 0.2),
                                 repulsion=repulsion)[0]
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  for i in range(steps):
    key, k = jax.random.split(key)
    params, opt_state = step(params, opt_state, _mixture(rng, 256), k)
  samples = np.asarray(net.apply(params, jax.random.normal(jax.random.PRNGKey(99), (4000, 2))))
  dist = np.linalg.norm(samples[:, None] - MODES[None], axis=-1)
  share = np.bincount(dist.argmin(1), minlength=len(MODES)) / len(samples)
  near = float(np.mean(dist.min(1) < 0.6))
  return share, near


def test_generator_covers_every_mode_in_proportion():
  share, near = _train_generator(repulsion=True)
  assert near > 0.8, near  # most samples sit on the modes, not between them
  np.testing.assert_allclose(share, WEIGHTS, atol=0.07)


def test_attraction_only_collapses_modes():
  # Without repulsion every sample is pulled to a kernel-weighted mean of the data and
  # modes are lost (the drifting paper's ablation); with it all three are kept (above).
  share, _ = _train_generator(repulsion=False)
  assert share.min() < 0.02, share
