"""Per-example randomness and batch reductions shared by every loss.

Every example of a global batch draws its noise from its own key, and every
loss is normalised by statistics of the global batch, so an update computes
the same numbers whether the batch sits on one device or is split over many.
"""

import jax
import jax.numpy as jnp

# Rows (examples x samples) per block when a large set of samples is evaluated without a
# gradient on XLA's CPU backend. Past a few thousand rows its fused MLP layers slow down more
# than linearly (docs/speed.md), so such sets run as a loop over blocks of examples there; other backends take the whole set.
CPU_BLOCK_ROWS = 2048


def example_keys(key, batch_size: int):
  """One PRNG key per example of the global batch: [B, 2]."""
  return jax.random.split(key, batch_size)


def fold(keys, tag):
  """A distinct per-example key stream. keys: [B, 2] -> [B, 2]."""
  return jax.vmap(jax.random.fold_in, (0, None))(keys, tag)


def normal(keys, num, size):
  """Per-example standard normal noise. keys: [B, 2] -> [B, num, size]."""
  return jax.vmap(lambda k: jax.random.normal(k, (num, size)))(keys)


def uniform(keys, num):
  """Per-example U(0, 1). keys: [B, 2] -> [B, num]."""
  return jax.vmap(lambda k: jax.random.uniform(k, (num,)))(keys)


def repeat_obs(obs, num):
  """obs: [B, O] -> [B, num, O]."""
  return jnp.broadcast_to(obs[:, None], (obs.shape[0], num, obs.shape[-1]))


def batch_mean(x, axis_name=None):
  """Mean over the whole (possibly device-sharded) minibatch."""
  m = jnp.mean(x)
  return jax.lax.pmean(m, axis_name) if axis_name is not None else m


def masked_mean(per_example, valid, axis_name=None):
  """Mean of per-example losses [B] over valid examples of the global batch.

  Local sum over the global count, so gradients averaged over devices are the
  gradients of the global-batch loss.
  """
  return jnp.mean(valid * per_example) / jnp.maximum(batch_mean(valid, axis_name), 1e-8)


def block_rows():
  """The row limit of `in_blocks` on the default backend (None: no limit)."""
  return CPU_BLOCK_ROWS if jax.default_backend() == "cpu" else None


def in_blocks(fn, rows_per_example: int, *args):
  """fn(*args), every arg [B, ...] and every output [B, ...], computed over blocks of examples
  of at most `block_rows()` rows (B_block * rows_per_example) by a loop when B is larger.

  fn must treat its examples independently: each example's rows are the rows fn sees
  unblocked, only how many share a matmul changes. A last partial block is padded with copies
  of the last example, whose outputs are dropped.
  """
  b = jax.tree.leaves(args)[0].shape[0]
  limit = block_rows()
  size = b if limit is None else max(1, limit // rows_per_example)  # examples per block
  if b <= size:
    return fn(*args)
  blocks = -(-b // size)

  def split(x):
    if blocks * size > b:
      x = jnp.concatenate([x, jnp.repeat(x[-1:], blocks * size - b, axis=0)])
    return x.reshape((blocks, size) + x.shape[1:])

  out = jax.lax.map(lambda a: fn(*a), jax.tree.map(split, args))
  return jax.tree.map(lambda x: x.reshape((blocks * size,) + x.shape[2:])[:b], out)
