"""The drifting field V = V+_p - V-_q and its fixed-point regression loss.

SPEC section 2.1 (Deng et al., Algorithm 2, with their normalisations). Every
set is shaped [B, C, S]: B conditioning states, C samples per state, S the
flattened action-chunk size. B = 1 is plain unconditional generation.

Everything that forms the field is computed on stop-gradient copies; only the
regression `||x - sg(x + V)||^2` carries a gradient into the generator, so the
update moves each sample along V and never differentiates through the kernel.
"""

from typing import Optional, Sequence

import chex
import jax
import jax.numpy as jnp

KERNELS = ("laplace", "gaussian")
# Distance given to masked pairs (a sample and itself): exp(-_MASKED / R) == 0.
_MASKED = 1e6


def batch_mean(x, axis_name=None):
  """Mean over the whole (possibly device-sharded) minibatch."""
  m = jnp.mean(x)
  return jax.lax.pmean(m, axis_name) if axis_name is not None else m


def _pairwise_dist(x, y):
  """Plain (not squared) L2 distances. x: [B, N, S], y: [B, M, S] -> [B, N, M]."""
  sq = (jnp.sum(x * x, -1)[:, :, None] + jnp.sum(y * y, -1)[:, None, :]
        - 2.0 * jnp.einsum("bns,bms->bnm", x, y))
  # The clamp keeps sqrt finite where rounding makes sq slightly negative.
  return jnp.sqrt(jnp.maximum(sq, 1e-12))


def _logits(d_n, temperature, kernel):
  if kernel == "laplace":  # exp(-||x - y|| / (R * scale)); the released code's choice.
    return -d_n / temperature
  if kernel == "gaussian":  # exp(-||x - y||^2 / (2 h^2)) with h = R * scale; the paper's prose.
    return -jnp.square(d_n) / (2.0 * temperature**2)
  raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")


def drifting_field(x, pos, neg, *, temperatures: Sequence[float] = (0.05,),
                   kernel: str = "laplace", self_negatives: bool = False,
                   repulsion: bool = True, normalize: bool = True,
                   axis_name: Optional[str] = None, min_scale: float = 1e-6):
  """The drifting field at the (stop-gradient) samples x.

  Args:
    x: [B, Cg, S] generated samples where the field is evaluated.
    pos: [B, Cp, S] positives y+ ~ p (attraction).
    neg: [B, Cn, S] negatives y- ~ q (repulsion). With `self_negatives`,
      the first Cg entries of `neg` must be x itself; each sample is then
      excluded from its own negatives.
    temperatures: the kernel temperatures R; one field per R, each normalised
      to unit RMS, summed.
    kernel: "laplace" (default, the released implementation) or "gaussian".
    repulsion: False gives the attraction-only field V+_p(x) - x (the
      ablation that collapses modes).
    normalize: divide each V_R by its RMS over the minibatch (SPEC 2.1 step 4).
    axis_name: mesh axis to average the minibatch statistics over when the
      batch is sharded, so the field does not depend on the device count.

  Returns:
    (V, x_n, scale, info): V [B, Cg, S] in normalised coordinates, x_n = x
    divided by the coordinate scale, the distance scale, and diagnostics.
  """
  chex.assert_rank([x, pos, neg], 3)
  chex.assert_equal_shape_prefix([x, pos, neg], 1)
  chex.assert_equal_shape_suffix([x, pos, neg], 1)
  if kernel not in KERNELS:
    raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")
  x, pos, neg = (jax.lax.stop_gradient(a.astype(jnp.float32)) for a in (x, pos, neg))
  cg, cn, s = x.shape[1], neg.shape[1], x.shape[2]

  targets = jnp.concatenate([neg, pos], axis=1)  # [B, Cn + Cp, S]
  d = _pairwise_dist(x, targets)  # [B, Cg, Cn + Cp]
  valid = jnp.ones(d.shape[1:], bool)
  if self_negatives:
    valid = valid.at[:, :cn].set(~jnp.eye(cg, cn, dtype=bool))
  # One scalar scale for the whole minibatch, over the pairs that exist.
  total = batch_mean(jnp.where(valid, d, 0.0), axis_name)
  frac = jnp.mean(valid)
  scale = jnp.maximum(total / frac, min_scale)
  d_n = jnp.where(valid, d / scale, _MASKED)
  # Coordinates in units where the mean pairwise distance is sqrt(S), i.e. unit
  # per-coordinate spread, so the regression target has unit scale.
  coord_scale = scale / jnp.sqrt(s)
  x_n, targets_n = x / coord_scale, targets / coord_scale
  neg_n, pos_n = targets_n[:, :cn], targets_n[:, cn:]

  field = jnp.zeros_like(x_n)
  info = {}
  for r in temperatures:
    logits = _logits(d_n, r, kernel)
    if repulsion:
      # Geometric mean of the softmax over targets and the softmax over the Cg
      # generated samples of the same state (Deng et al.'s double softmax).
      a = jnp.sqrt(jax.nn.softmax(logits, axis=-1) * jax.nn.softmax(logits, axis=-2))
      a_neg, a_pos = a[..., :cn], a[..., cn:]
      w_pos = a_pos * jnp.sum(a_neg, -1, keepdims=True)
      w_neg = a_neg * jnp.sum(a_pos, -1, keepdims=True)
      # sum(w_pos) == sum(w_neg) per row, so the -x terms of both sides cancel.
      attract = jnp.einsum("bij,bjs->bis", w_pos, pos_n)
      repel = jnp.einsum("bij,bjs->bis", w_neg, neg_n)
      v = attract - repel
      info[f"attraction_r{r}"] = jnp.sqrt(batch_mean(jnp.sum(
          jnp.square(attract - jnp.sum(w_pos, -1, keepdims=True) * x_n), -1), axis_name))
      info[f"repulsion_r{r}"] = jnp.sqrt(batch_mean(jnp.sum(
          jnp.square(repel - jnp.sum(w_neg, -1, keepdims=True) * x_n), -1), axis_name))
    else:
      w = jax.nn.softmax(logits[..., cn:], axis=-1)
      v = jnp.einsum("bij,bjs->bis", w, pos_n) - x_n
    rms = jnp.sqrt(batch_mean(jnp.square(v), axis_name))
    info[f"drift_rms_r{r}"] = rms
    field = field + (v / jnp.maximum(rms, 1e-8) if normalize else v)
  info["scale"] = scale
  info["drift_norm"] = jnp.sqrt(batch_mean(jnp.sum(jnp.square(field), -1), axis_name))
  return field, x_n, coord_scale, info


def drift_loss(gen, pos, neg=None, *, temperatures: Sequence[float] = (0.05,),
               kernel: str = "laplace", weight: float = 1.0, repulsion: bool = True,
               normalize: bool = True, sample_mask=None,
               axis_name: Optional[str] = None):
  """L_drift(theta; p, q) = E ||x - sg(x + V(x))||^2 with x = gen (SPEC 2.1).

  Args:
    gen: [B, Cg, S] samples of the generator at each state (differentiable).
      Their stop-gradient copy is the negative set (self excluded).
    pos: [B, Cp, S] positives.
    neg: optional [B, Cn, S] extra fixed negatives.
    sample_mask: optional [B] weights (e.g. 0 for invalid chunks); the loss is
      the weighted mean over states.
    Remaining arguments as in `drifting_field`; `weight` multiplies the loss.

  Returns:
    (loss, info) with `info` holding the field's diagnostics and `loss`.
  """
  negatives = jax.lax.stop_gradient(gen)
  if neg is not None:
    negatives = jnp.concatenate([negatives, neg.astype(negatives.dtype)], axis=1)
  v, x_n, coord_scale, info = drifting_field(
      gen, pos, negatives, temperatures=temperatures, kernel=kernel,
      self_negatives=True, repulsion=repulsion, normalize=normalize,
      axis_name=axis_name)
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
