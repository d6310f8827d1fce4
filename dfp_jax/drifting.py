"""The drifting field V = V+_p - V-_q and its fixed-point regression loss.

Deng et al.'s Algorithm 2 (docs/algorithm.md) with the normalisations and floors
of the authors' released implementation. Every set is shaped [B, C, S]: B
conditioning states, C samples per state, S the flattened action-chunk size.
B = 1 is plain unconditional generation.

Everything that forms the field is computed on stop-gradient copies; only the
regression `||x - sg(x + V)||^2` carries a gradient into the generator, so the
update moves each sample along V and never differentiates through the kernel.

The floors are part of the method, not numerical hygiene. The 1e-6 floor on
the product of the two softmaxes keeps every pair's affinity >= 1e-3, so a
positive many kernel widths away from every sample still attracts them;
without it the weights underflow and the field vanishes (the paper's
Robomimic temperatures then never learn to close the gripper). The floor is
absolute, so with large sets it dominates; `relative_floor` scales it with the
set sizes instead (docs/algorithm.md, the field's step 4).
"""

from typing import Optional, Sequence

import chex
import jax
import jax.numpy as jnp

from dfp_jax.per_example import batch_mean

KERNELS = ("laplace", "gaussian")
AFFINITY_FLOOR = 1e-6      # floor on softmax_targets * softmax_gen (released value)
FLOOR_REFERENCE_PAIRS = 8 * 9  # Cg x targets at which a relative floor equals AFFINITY_FLOOR
SELF_MASK = 100.0          # added to a sample's normalised distance to itself (finite mask)
_SQ_DIST_FLOOR = 1e-8      # floor on squared distances (so sqrt has a finite gradient)
_SCALE_FLOOR = 1e-3        # floor on the distance scale and on the coordinate scale
_RMS_FLOOR = 1e-8          # floor on mean(V_R^2) in the force normalisation


def pairwise_dist(x, y):
  """Plain (not squared) L2 distances. x: [B, N, S], y: [B, M, S] -> [B, N, M]."""
  sq = (jnp.sum(x * x, -1)[:, :, None] + jnp.sum(y * y, -1)[:, None, :]
        - 2.0 * jnp.einsum("bns,bms->bnm", x, y))
  return jnp.sqrt(jnp.maximum(sq, _SQ_DIST_FLOOR))


def _logits(d_n, temperature, kernel):
  if kernel == "laplace":  # exp(-||x - y|| / (R * scale)); the released code's choice.
    return -d_n / temperature
  if kernel == "gaussian":  # exp(-||x - y||^2 / (2 h^2)) with h = R * scale; the paper's prose.
    return -jnp.square(d_n) / (2.0 * temperature**2)
  raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")


def effective_floor(affinity_floor: float, relative: bool, num_gen: int, num_targets: int):
  """The affinity floor in force: absolute, or scaled by the released sizes over these sizes."""
  if not relative:
    return affinity_floor
  return affinity_floor * FLOOR_REFERENCE_PAIRS / (num_gen * num_targets)


def _sg(a):
  return jax.lax.stop_gradient(a.astype(jnp.float32))


def _targets(x, pos, neg, self_negatives, gen_weights, pos_weights, neg_weights):
  """Targets Y = [sg(gen), neg, pos] along C, their weights [B, 1, Ct], and how many of the
  first columns repel."""
  b, cg, _ = x.shape
  parts, weights = [], []
  if self_negatives:
    parts.append(x)
    weights.append(_weights(gen_weights, b, cg))
  if neg is not None:
    chex.assert_rank(neg, 3)
    parts.append(neg)
    weights.append(_weights(neg_weights, b, neg.shape[1]))
  n_neg = sum(p.shape[1] for p in parts)
  parts.append(pos)
  weights.append(_weights(pos_weights, b, pos.shape[1]))
  return jnp.concatenate(parts, axis=1), jnp.concatenate(weights, axis=1)[:, None, :], n_neg


def _weights(w, b, c):
  return jnp.ones((b, c), jnp.float32) if w is None else jnp.broadcast_to(
      jnp.asarray(w, jnp.float32), (b, c))


def drifting_field(x, pos, neg=None, *, temperatures: Sequence[float] = (0.05,),
                   kernel: str = "laplace", self_negatives: bool = True,
                   repulsion: bool = True, gen_weights=None, pos_weights=None,
                   neg_weights=None, affinity_floor: float = AFFINITY_FLOOR,
                   relative_floor: bool = False, normalize: bool = True,
                   axis_name: Optional[str] = None):
  """The drifting field at the (stop-gradient) samples x (docs/algorithm.md).

  Args:
    x: [B, Cg, S] generated samples where the field is evaluated.
    pos: [B, Cp, S] positives y+ ~ p (attraction).
    neg: optional [B, Cn, S] extra fixed negatives.
    temperatures: the kernel temperatures R; one field per R, each normalised
      to unit RMS over the minibatch, summed.
    kernel: "laplace" (default, the released implementation) or "gaussian".
    self_negatives: x itself is the negative set q (each sample masked from
      its own column). False: only `neg` repels (the released `use_neg_only`).
    repulsion: False keeps only the attraction term V+ of the same field (the
      released `plus_only`; the ablation that collapses modes).
    gen_weights, pos_weights, neg_weights: optional per-sample weights [B, C]
      of the targets (all 1 by default): they weight the distance scale and
      multiply the affinities.
    affinity_floor: floor on the product of the two softmaxes (0: none).
    relative_floor: scale the floor by (8 x 9) / (Cg x targets), the released
      set sizes over these, so large sets are not dominated by it.
    normalize: divide each V_R by its RMS over the minibatch.
    axis_name: mesh axis to average the minibatch statistics over when the
      batch is sharded, so the field does not depend on the device count.

  Returns:
    (V, x_n, coord_scale, info): V [B, Cg, S] in normalised coordinates, x_n = x
    divided by the coordinate scale, that scale, and diagnostics.
  """
  chex.assert_rank([x, pos], 3)
  chex.assert_equal_shape_prefix([x, pos], 1)
  chex.assert_equal_shape_suffix([x, pos], 1)
  if kernel not in KERNELS:
    raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")
  x = _sg(x)
  b, cg, s = x.shape
  targets, w, n_neg = _targets(x, _sg(pos), None if neg is None else _sg(neg), self_negatives,
                               gen_weights, pos_weights, neg_weights)
  ct = targets.shape[1]

  d = pairwise_dist(x, targets)  # [B, Cg, Ct]
  # One scalar scale over the whole array, self-pairs included, weighted by the targets.
  scale = (batch_mean(d * w, axis_name)
           / batch_mean(jnp.broadcast_to(w, d.shape), axis_name))
  d_n = d / jnp.maximum(scale, _SCALE_FLOOR)
  if self_negatives:
    d_n = d_n + SELF_MASK * jnp.eye(cg, ct, dtype=d_n.dtype)
  coord_scale = jnp.maximum(scale / jnp.sqrt(s), _SCALE_FLOOR)
  x_n, targets_n = x / coord_scale, targets / coord_scale
  neg_n, pos_n = targets_n[:, :n_neg], targets_n[:, n_neg:]
  floor = effective_floor(affinity_floor, relative_floor, cg, ct)

  field = jnp.zeros_like(x_n)
  info = {}
  for i in range(len(temperatures)):
    r = temperatures[i]
    tag = f"r{r}" if isinstance(r, (int, float)) else f"t{i}"  # traced R: by position
    logits = _logits(d_n, r, kernel)
    # Geometric mean of the softmax over targets and the softmax over the Cg generated
    # samples of the same state (Deng et al.'s double softmax), floored.
    a = jax.nn.softmax(logits, axis=-1) * jax.nn.softmax(logits, axis=-2)
    a = jnp.sqrt(jnp.maximum(a, floor)) * w
    a_neg, a_pos = a[..., :n_neg], a[..., n_neg:]
    w_pos = a_pos * jnp.sum(a_neg, -1, keepdims=True) if n_neg else a_pos
    w_neg = a_neg * jnp.sum(a_pos, -1, keepdims=True)
    attract = jnp.einsum("bij,bjs->bis", w_pos, pos_n) - jnp.sum(w_pos, -1, keepdims=True) * x_n
    repel = jnp.einsum("bij,bjs->bis", w_neg, neg_n) - jnp.sum(w_neg, -1, keepdims=True) * x_n
    v = attract - repel if repulsion else attract
    info[f"attraction_{tag}"] = jnp.sqrt(batch_mean(jnp.sum(jnp.square(attract), -1), axis_name))
    info[f"repulsion_{tag}"] = jnp.sqrt(batch_mean(jnp.sum(jnp.square(repel), -1), axis_name))
    rms = jnp.sqrt(jnp.maximum(batch_mean(jnp.square(v), axis_name), _RMS_FLOOR))
    info[f"drift_rms_{tag}"] = rms
    field = field + (v / rms if normalize else v)
  info["scale"] = scale
  info["drift_norm"] = jnp.sqrt(batch_mean(jnp.sum(jnp.square(field), -1), axis_name))
  return field, x_n, coord_scale, info


def drift_loss(gen, pos, neg=None, *, temperatures: Sequence[float] = (0.05,),
               kernel: str = "laplace", weight: float = 1.0, repulsion: bool = True,
               self_negatives: bool = True, gen_weights=None, pos_weights=None,
               neg_weights=None, affinity_floor: float = AFFINITY_FLOOR,
               relative_floor: bool = False, normalize: bool = True, sample_mask=None,
               axis_name: Optional[str] = None):
  """L_drift(theta; p, q) = E ||x - sg(x + V(x))||^2 with x = gen (docs/algorithm.md, step 5).

  Args:
    gen: [B, Cg, S] samples of the generator at each state (differentiable;
      agents clip them to [-1, 1] first). Their stop-gradient copy is the
      negative set (self excluded) unless `self_negatives` is False.
    pos: [B, Cp, S] positives.
    neg: optional [B, Cn, S] extra fixed negatives.
    sample_mask: optional [B] weights (e.g. 0 for invalid chunks); the loss is
      the weighted mean over states.
    Remaining arguments as in `drifting_field`; `weight` multiplies the loss.

  Returns:
    (loss, info) with `info` holding the field's diagnostics and `loss`.
  """
  v, x_n, coord_scale, info = drifting_field(
      gen, pos, neg, temperatures=temperatures, kernel=kernel,
      self_negatives=self_negatives, repulsion=repulsion, gen_weights=gen_weights,
      pos_weights=pos_weights, neg_weights=neg_weights, affinity_floor=affinity_floor,
      relative_floor=relative_floor, normalize=normalize, axis_name=axis_name)
  x = gen / jax.lax.stop_gradient(coord_scale)
  target = jax.lax.stop_gradient(x_n + v)
  per_state = jnp.mean(jnp.square(x - target), axis=(1, 2))  # [B]
  # The numerator is this shard's mean and the denominator the global one, so the
  # average over devices of each device's gradient is the global gradient.
  if sample_mask is None:
    loss = jnp.mean(per_state)
  else:
    loss = (jnp.mean(per_state * sample_mask)
            / jnp.maximum(batch_mean(sample_mask, axis_name), 1e-8))
  loss = weight * loss
  info["loss"] = loss if axis_name is None else jax.lax.pmean(loss, axis_name)
  return loss, info
