"""The drifting field: an independent reference of Deng et al.'s Algorithm 2
(docs/algorithm.md), properties a wrong field fails,
and 2-D generator fits that show what the affinity floor does."""

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


# --- An independent reference: the field step by step, in float64 loops ---------------------

def reference_drift(gen, pos, neg=None, temperatures=(0.05,), floor=1e-6, kernel="laplace",
                    gen_w=None, pos_w=None, neg_w=None):
  """(loss, d loss / d gen) of the field with self-negatives, written from the text."""
  gen, pos = np.float64(gen), np.float64(pos)
  b_size, cg, s = gen.shape
  neg = np.zeros((b_size, 0, s)) if neg is None else np.float64(neg)
  ones = lambda c: np.ones((b_size, c))
  gen_w = ones(cg) if gen_w is None else np.float64(gen_w)
  pos_w = ones(pos.shape[1]) if pos_w is None else np.float64(pos_w)
  neg_w = ones(neg.shape[1]) if neg_w is None else np.float64(neg_w)
  # 1. Targets Y = [sg(gen), neg, pos]; the first n_neg repel.
  y = np.concatenate([gen, neg, pos], 1)
  w = np.concatenate([gen_w, neg_w, pos_w], 1)
  n_neg, ct = cg + neg.shape[1], y.shape[1]
  # 2. Distances with the 1e-8 floor on squared distance.
  d = np.zeros((b_size, cg, ct))
  for b in range(b_size):
    for i in range(cg):
      for j in range(ct):
        x_i, y_j = gen[b, i], y[b, j]
        d[b, i, j] = np.sqrt(max(x_i @ x_i + y_j @ y_j - 2 * x_i @ y_j, 1e-8))
  # 3. One scale over the whole array (self-pairs included), weighted by the targets.
  num = sum(d[b, i, j] * w[b, j] for b in range(b_size) for i in range(cg) for j in range(ct))
  scale = num / (cg * w.sum())
  d_n = d / max(scale, 1e-3)
  for i in range(cg):
    d_n[:, i, i] += 100.0
  coord = max(scale / np.sqrt(s), 1e-3)
  v_total = np.zeros_like(gen)
  for r in temperatures:
    v = np.zeros_like(gen)
    for b in range(b_size):
      logits = -d_n[b] / r if kernel == "laplace" else -d_n[b] ** 2 / (2 * r * r)
      row = np.exp(logits - logits.max(1, keepdims=True))
      row /= row.sum(1, keepdims=True)  # softmax over targets
      col = np.exp(logits - logits.max(0, keepdims=True))
      col /= col.sum(0, keepdims=True)  # softmax over the Cg generated samples
      a = np.sqrt(np.maximum(row * col, floor)) * w[b][None]
      for i in range(cg):
        sum_neg, sum_pos = a[i, :n_neg].sum(), a[i, n_neg:].sum()
        for j in range(ct):
          if j < n_neg:
            v[b, i] -= a[i, j] * sum_pos * y[b, j] / coord
          else:
            v[b, i] += a[i, j] * sum_neg * y[b, j] / coord
        v[b, i] -= (sum_neg * sum_pos - sum_pos * sum_neg) * gen[b, i] / coord
    v_total += v / np.sqrt(max(np.mean(v ** 2), 1e-8))
  # 5. ||x/c - sg(x/c + V)||^2 = ||V||^2; its gradient in x is -2 V / c per element.
  loss = np.mean(v_total ** 2)
  grad = -2.0 * v_total / coord / (cg * s) / b_size
  return loss, grad


def _drift_value_and_grad(gen, pos, **kwargs):
  (loss, _), grad = jax.value_and_grad(
      lambda g: drifting.drift_loss(g, pos, **kwargs), has_aux=True)(jnp.asarray(gen))
  return float(loss), np.asarray(grad)


def _regime(name, seed):
  """Random sets (gen [B, Cg, S], pos [B, Cp, S], temperatures) of one regime."""
  rng = np.random.default_rng(seed)
  b, cg, s = 4, 8, 6
  gen = rng.uniform(-0.5, 0.5, (b, cg, s))
  if name == "near":  # samples around their positive
    pos = gen[:, :1] + 0.05 * rng.standard_normal((b, 1, s))
    temps = (0.05,)
  elif name == "far":  # positives 1-2 units away
    direction = rng.standard_normal((b, 1, s))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    pos = gen.mean(1, keepdims=True) + rng.uniform(1.0, 2.0, (b, 1, 1)) * direction
    temps = (0.05,)
  elif name == "corners":  # samples and positives in opposite corners of the box
    gen = -0.9 + 0.05 * rng.standard_normal((b, cg, s))
    pos = 0.9 + 0.05 * rng.standard_normal((b, 1, s))
    temps = (0.05,)
  elif name == "multi":  # several positives and several temperatures
    pos = rng.uniform(-1, 1, (b, 4, s))
    temps = (0.005, 0.05, 0.2)
  return np.float32(gen), np.float32(pos), temps


@pytest.mark.parametrize("regime", ["near", "far", "corners", "multi"])
@pytest.mark.parametrize("seed", [0, 1])
def test_drift_loss_matches_the_reference(regime, seed):
  gen, pos, temps = _regime(regime, seed)
  loss, grad = _drift_value_and_grad(gen, pos, temperatures=temps)
  ref_loss, ref_grad = reference_drift(gen, pos, temperatures=temps)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-4)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-4 * np.abs(ref_grad).max())


def test_reference_match_with_weights_fixed_negatives_and_gaussian_kernel():
  gen, pos, _ = _regime("multi", 2)
  rng = np.random.default_rng(3)
  neg = np.float32(rng.uniform(-1, 1, (4, 3, 6)))
  weights = {"gen_w": rng.uniform(0.5, 1.5, (4, 8)), "pos_w": rng.uniform(0, 1, (4, 4)),
             "neg_w": rng.uniform(0.5, 1.5, (4, 3))}
  for kernel in KERNELS:
    loss, grad = _drift_value_and_grad(
        gen, pos, neg=jnp.asarray(neg), temperatures=(0.05, 0.2), kernel=kernel,
        gen_weights=weights["gen_w"], pos_weights=weights["pos_w"],
        neg_weights=weights["neg_w"])
    ref_loss, ref_grad = reference_drift(gen, pos, neg, (0.05, 0.2), kernel=kernel, **weights)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-4)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-4 * np.abs(ref_grad).max())


def test_without_the_floor_the_field_differs_from_the_reference_far_from_positives():
  # The previous field (no affinity floor): a check that the reference tells them apart.
  gen, pos, temps = _regime("far", 0)
  _, grad = _drift_value_and_grad(gen, pos, temperatures=temps, affinity_floor=0.0)
  _, ref_grad = reference_drift(gen, pos, temperatures=temps)
  assert np.linalg.norm(grad - ref_grad) > 0.5 * np.linalg.norm(ref_grad)


@pytest.mark.parametrize("relative_floor", [False, True])
def test_far_field_points_toward_a_distant_positive(relative_floor):
  # 8 samples in a tight cluster, one positive many kernel widths away: every softmax
  # product toward it underflows, and only the floor keeps its attraction.
  rng = np.random.default_rng(0)
  gen = np.float32(-0.8 + 0.03 * rng.standard_normal((2, 8, 4)))
  pos = np.float32(np.full((2, 1, 4), 0.8))
  v, *_ = drifting.drifting_field(jnp.asarray(gen), jnp.asarray(pos), temperatures=(0.05,),
                                  relative_floor=relative_floor)
  toward = pos - gen
  cos = np.sum(np.asarray(v) * toward, -1) / (
      np.linalg.norm(np.asarray(v), axis=-1) * np.linalg.norm(toward, axis=-1) + 1e-12)
  assert cos.min() > 0.9, cos
  # Without the floor the field vanishes here.
  v0, *_ = drifting.drifting_field(jnp.asarray(gen), jnp.asarray(pos), temperatures=(0.05,),
                                   affinity_floor=0.0)
  assert float(jnp.abs(v0).max()) < 1e-3


def test_relative_floor_equals_the_released_floor_at_released_sizes():
  assert drifting.effective_floor(1e-6, True, 8, 9) == pytest.approx(1e-6)
  assert drifting.effective_floor(1e-6, True, 256, 512) == pytest.approx(1e-6 * 72 / (256 * 512))
  assert drifting.effective_floor(1e-6, False, 256, 512) == 1e-6
  gen, pos, temps = _regime("far", 1)  # Cg = 8, 8 + 1 targets: identical fields
  absolute, *_ = drifting.drifting_field(gen, pos, temperatures=temps)
  relative, *_ = drifting.drifting_field(gen, pos, temperatures=temps, relative_floor=True)
  np.testing.assert_allclose(absolute, relative, rtol=1e-6, atol=1e-7)


# --- Properties --------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", KERNELS)
def test_zero_field_when_positives_equal_negatives(kernel):
  x = _rand(0, (4, 1, 3))
  y = _rand(1, (4, 6, 3))
  # Only the fixed negatives repel (the released use_neg_only): p == q gives V == 0.
  v, _, _, _ = drifting.drifting_field(x, y, y, temperatures=(0.05, 0.2), kernel=kernel,
                                       self_negatives=False, normalize=False)
  np.testing.assert_allclose(v, 0.0, atol=1e-6)
  loss, _ = drifting.drift_loss(x, pos=y, neg=y, temperatures=(0.05, 0.2), kernel=kernel,
                                self_negatives=False)
  assert float(loss) < 1e-10


@pytest.mark.parametrize("kernel", KERNELS)
def test_field_is_antisymmetric(kernel):
  x, p, q = _rand(0, (3, 5, 2)), _rand(1, (3, 7, 2)) + 1.0, _rand(2, (3, 7, 2)) - 1.0
  field = functools.partial(drifting.drifting_field, temperatures=(0.1, 0.5), kernel=kernel,
                            self_negatives=False)
  v_pq, *_ = field(x, p, q)
  v_qp, *_ = field(x, q, p)
  np.testing.assert_allclose(v_pq, -v_qp, atol=1e-5)
  assert float(jnp.abs(v_pq).max()) > 0.1  # and it is not trivially zero


@pytest.mark.parametrize("kernel", KERNELS)
def test_attraction_toward_positives(kernel):
  # Samples around the origin, positives around (3, 0): the field points along +x.
  x = 0.1 * _rand(0, (2, 16, 2))
  pos = 0.1 * _rand(1, (2, 8, 2)) + jnp.array([3.0, 0.0])
  v, _, _, info = drifting.drifting_field(x, pos, temperatures=(0.5,), kernel=kernel)
  cos = v[..., 0] / jnp.linalg.norm(v, axis=-1)
  assert float(cos.min()) > 0.9
  assert float(info["scale"]) > 0


def test_zero_weight_positives_do_not_attract():
  x = 0.1 * _rand(0, (2, 8, 2))
  near = 0.1 * _rand(1, (2, 1, 2)) + jnp.array([0.0, 1.0])
  far = 0.1 * _rand(2, (2, 1, 2)) + jnp.array([1.0, 0.0])
  both = jnp.concatenate([near, far], 1)
  v_one, *_ = drifting.drifting_field(x, near, temperatures=(0.2,))
  v_weighted, *_ = drifting.drifting_field(x, both, pos_weights=jnp.array([[1.0, 0.0]] * 2),
                                           temperatures=(0.2,))
  v_both, *_ = drifting.drifting_field(x, both, temperatures=(0.2,))
  # A zero-weight positive adds nothing but its share of the distance scale.
  cos = jnp.sum(v_one * v_weighted) / (jnp.linalg.norm(v_one) * jnp.linalg.norm(v_weighted))
  assert float(cos) > 0.98
  assert float(jnp.abs(v_both - v_weighted).max()) > 0.1


def test_loss_gradient_moves_samples_along_the_field():
  x = _rand(0, (2, 8, 3))
  pos = _rand(1, (2, 4, 3)) + 2.0
  v, *_ = drifting.drifting_field(x, pos, temperatures=(0.05,))
  g = jax.grad(lambda x: drifting.drift_loss(x, pos)[0])(x)
  # d/dx mean((x/c - sg(x/c + V))^2) = -2 V / (c * numel / B): exactly opposite to V.
  cos = -jnp.sum(g * v) / (jnp.linalg.norm(g) * jnp.linalg.norm(v))
  assert float(cos) > 0.999


def test_temperatures_sum_unit_fields():
  x, p = _rand(0, (4, 8, 2)), _rand(1, (4, 3, 2)) + 0.5
  one, *_ = drifting.drifting_field(x, p, temperatures=(0.05,))
  two, *_ = drifting.drifting_field(x, p, temperatures=(0.05, 0.5))
  other, *_ = drifting.drifting_field(x, p, temperatures=(0.5,))
  np.testing.assert_allclose(jnp.sqrt(jnp.mean(one**2)), 1.0, rtol=1e-4)
  np.testing.assert_allclose(two, one + other, atol=1e-5)
  assert float(jnp.abs(one - other).max()) > 1e-2  # temperatures give different fields


def test_unknown_kernel_is_an_error():
  x = _rand(0, (1, 2, 2))
  with pytest.raises(ValueError, match="unknown kernel"):
    drifting.drift_loss(x, x, kernel="cosine")


# --- One-step generators on a 2-D mixture of five Gaussians ------------------------------------
# Each fit names its affinity floor: the released absolute 1e-6 (the agents' default), the
# size-relative floor, or none. One temperature R = 0.05, the paper's OGBench value.

ANGLES = np.linspace(0, 2 * np.pi, 5, endpoint=False)
MODES = np.stack([np.cos(ANGLES), np.sin(ANGLES)], -1) * 0.7
WEIGHTS = np.array([0.3, 0.25, 0.2, 0.15, 0.1])


def _mixture(rng, shape):
  comp = rng.choice(len(MODES), size=shape, p=WEIGHTS)
  return (MODES[comp] + 0.05 * rng.standard_normal(shape + (2,))).astype(np.float32)


def fit_generator(sets, per_set, steps=4000, seed=0, **drift_kwargs):
  """Fit noise -> 2-D samples with drift_loss on `sets` independent sets of `per_set`
  generated samples against `per_set` data points.

  Returns (share of samples within 0.15 of each mode [5], number of modes holding >= 1%).
  """
  net = MLP((128, 128), 2)
  key = jax.random.PRNGKey(seed)
  params = net.init(key, jnp.zeros((1, 2)))
  opt = optax.adam(1e-3)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, data, key):
    def loss_fn(params):
      gen = net.apply(params, jax.random.normal(key, (sets, per_set, 2)))
      return drifting.drift_loss(gen, data, temperatures=(0.05,), **drift_kwargs)[0]
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    key, k = jax.random.split(key)
    params, opt_state = step(params, opt_state, _mixture(rng, (sets, per_set)), k)
  samples = np.asarray(net.apply(params, jax.random.normal(jax.random.PRNGKey(99), (4000, 2))))
  dist = np.linalg.norm(samples[:, None] - MODES[None], axis=-1)
  on_mode = dist.min(1) < 0.15
  share = np.bincount(dist.argmin(1)[on_mode], minlength=len(MODES)) / len(samples)
  return share, int(np.sum(share >= 0.01))


@pytest.mark.slow
@pytest.mark.parametrize("floor", [1e-6, 0.0])
def test_policy_sized_sets_cover_every_mode_with_or_without_the_floor(floor):
  # 8 generated against 8 data points per state, 32 states: the agents' set sizes, where
  # the floor acts only far from the data (measured shares: 0.21 ... 0.016 with it).
  share, covered = fit_generator(32, 8, affinity_floor=floor)
  assert covered == 5, share
  assert share.sum() > 0.5, share  # most samples sit on a mode


@pytest.mark.slow
def test_large_sets_cover_every_mode_without_a_floor():
  share, covered = fit_generator(1, 256, affinity_floor=0.0)
  assert covered == 5, share
  assert share.sum() > 0.6, share


@pytest.mark.slow
def test_large_sets_do_not_collapse_under_a_relative_floor():
  # The relative floor keeps floor / typical affinity at its released ratio, but 512
  # targets sum many floored pairs: over seeds 0-3 it kept 5, 3, 5 and 3 of 5 modes
  # (no floor: 5 every time; the absolute floor: 0, 5 thinly, 0, 0). Not collapsed:
  # most samples on a mode, several modes held.
  share, covered = fit_generator(1, 256, relative_floor=True)
  assert covered >= 3, share
  assert share.sum() > 0.6, share


@pytest.mark.slow
def test_large_sets_collapse_under_the_absolute_floor():
  # 256 against 256 in one set: the released 1e-6 is then comparable to the typical softmax
  # product (~1 / (256 x 512)) and dominates every pair, so the field stops telling the
  # modes apart (measured: no sample within 0.15 of any mode). Why agents keep the
  # absolute value only at their own set sizes, and 2-D fits choose the floor knowingly.
  share, covered = fit_generator(1, 256)
  assert covered <= 1, share


def test_attraction_only_collapses_modes():
  # V+ alone (no repulsion), at the agents' set sizes and floor: the samples leave the
  # modes or pile onto one (the drifting paper's ablation); with repulsion all five stay.
  share, covered = fit_generator(32, 8, 3000, repulsion=False)
  assert covered <= 1, share
