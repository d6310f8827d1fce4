"""The jitted programs the loop calls: updates over a leading seed axis, and acting."""

import functools

import jax
import jax.numpy as jnp


@jax.jit
def split_keys(keys):
  """Per-seed split: keys [S, 2] -> (next keys [S, 2], subkeys [S, 2])."""
  pairs = jax.vmap(jax.random.split)(keys)
  return pairs[:, 0], pairs[:, 1]


@jax.jit
def select_keys(need, new_keys, keys):
  """new_keys where `need` [S], else keys."""
  return jnp.where(need[:, None], new_keys, keys)


def guard_nonfinite(update, skip: bool):
  """`update` that reports NaN/inf in its metrics or new state as info['nonfinite'] (0 or 1).

  With `skip`, such an update leaves the state as it was (the step is skipped).
  """

  def guarded(state, batch, key, **kwargs):
    new, info = update(state, batch, key, **kwargs)
    leaves = [x for x in jax.tree.leaves((new, info)) if jnp.issubdtype(x.dtype, jnp.inexact)]
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
    if skip:
      new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    return new, {**info, "nonfinite": 1.0 - finite.astype(jnp.float32)}

  return guarded


def make_update_fns(agent_update, skip_nonfinite: bool = False):
  """Jitted (offline, online) updates over a leading seed axis.

  Offline runs k steps per dispatch in a scan over stacked batches [k, S, B, ...];
  its info is the last step's, except 'nonfinite', which counts the bad steps.
  Both take and return (states, keys), splitting every seed's key once per step.
  """
  agent_update = guard_nonfinite(agent_update, skip_nonfinite)

  def seeds_update(states, batches, keys, online):
    return jax.vmap(functools.partial(agent_update, online=online))(states, batches, keys)

  def scanned(states, batches, keys):
    def body(carry, batch):
      states, keys = carry
      keys, step_keys = split_keys(keys)
      states, info = seeds_update(states, batch, step_keys, False)
      return (states, keys), info
    (states, keys), infos = jax.lax.scan(body, (states, keys), batches)
    info = jax.tree.map(lambda x: x[-1], infos)
    info["nonfinite"] = infos["nonfinite"].sum(0)
    return states, keys, info

  def online(states, batches, keys):
    keys, step_keys = split_keys(keys)
    states, info = seeds_update(states, batches, step_keys, True)
    return states, keys, info

  return jax.jit(scanned), jax.jit(online)


def make_act_fn(method):
  """Best-of-N' acting for every seed: (states, obs [S, O], keys [S, 2]) -> chunks [S, h*A]."""
  return jax.jit(jax.vmap(method.act))
