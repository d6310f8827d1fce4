"""The jitted programs the loop calls: updates over a leading seed axis, and acting."""

import contextlib
import functools

import jax
import jax.numpy as jnp

from dfp_jax import parallel

# train.matmul_precision -> jax's name. fp32 is the paper's arithmetic; "default" leaves the
# choice to the backend (XLA may use TF32 for float32 matmuls on recent NVIDIA GPUs and bf16
# passes on TPUs).
MATMUL_PRECISIONS = {"fp32": "float32", "tf32": "tensorfloat32", "bf16": "bfloat16",
                     "default": None}


def matmul_precision(name: str):
  """A context in which the programs traced use `name`'s matmul precision (MATMUL_PRECISIONS;
  on CPU every choice computes in float32)."""
  precision = MATMUL_PRECISIONS[name]
  return contextlib.nullcontext() if precision is None else jax.default_matmul_precision(precision)


@jax.jit
def split_keys(keys):
  """Per-seed split: keys [S, 2] -> (next keys [S, 2], subkeys [S, 2])."""
  pairs = jax.vmap(jax.random.split)(keys)
  return pairs[:, 0], pairs[:, 1]


@jax.jit
def select_keys(need, new_keys, keys):
  """new_keys where `need` [S], else keys."""
  return jnp.where(need[:, None], new_keys, keys)


def check_finite(new, info, old, skip: bool):
  """(new or, with `skip` and NaN/inf anywhere in `new` or `info`, old; info with
  'nonfinite' = 0 or 1)."""
  leaves = [x for x in jax.tree.leaves((new, info)) if jnp.issubdtype(x.dtype, jnp.inexact)]
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
  if skip:
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  return new, {**info, "nonfinite": 1.0 - finite.astype(jnp.float32)}


def make_update_fns(agent_update, skip_nonfinite: bool = False, mesh=None, utd_ratio: int = 1):
  """Jitted (offline, online) updates over a leading member (seed) axis.

  `utd_ratio` > 1: the online update runs that many steps per call, in one scan over
  stacked batches [u, M, B, ...] as offline's (`train.utd_ratio`); 1 takes one batch
  [M, B, ...].

  Without a mesh the members are a vmap on one device; with a (pop, data) mesh they are
  sharded along `pop` and each member's batch along `data` (parallel.population_parallel).
  Offline runs k steps per dispatch in a scan over stacked batches [k, M, B, ...]; its info
  is the last step's, except 'nonfinite', which counts the bad steps. Both take and return
  (states, keys), splitting every member's key once per step.
  """

  def member(state, batch, key, axis_name, online):
    new, info = agent_update(state, batch, key, online=online, axis_name=axis_name)
    if axis_name is not None:
      info = jax.lax.pmean(info, axis_name)
    return check_finite(new, info, state, skip_nonfinite)

  def members_update(states, batches, keys, online):
    if mesh is None:
      return jax.vmap(functools.partial(member, axis_name=None, online=online))(
          states, batches, keys)
    return parallel.population_parallel(functools.partial(member, online=online), mesh)(
        states, batches, keys)

  def scanned(states, batches, keys, online=False):
    def body(carry, batch):
      states, keys = carry
      keys, step_keys = split_keys(keys)
      states, info = members_update(states, batch, step_keys, online)
      return (states, keys), info
    (states, keys), infos = jax.lax.scan(body, (states, keys), batches)
    info = jax.tree.map(lambda x: x[-1], infos)
    info["nonfinite"] = infos["nonfinite"].sum(0)
    return states, keys, info

  def online(states, batches, keys):
    keys, step_keys = split_keys(keys)
    states, info = members_update(states, batches, step_keys, True)
    return states, keys, info

  if utd_ratio > 1:
    return jax.jit(scanned), jax.jit(functools.partial(scanned, online=True))
  return jax.jit(scanned), jax.jit(online)


def make_act_fn(method):
  """Best-of-N' acting for every seed: (states, obs [S, O], keys [S, 2]) -> chunks [S, h*A]."""
  return jax.jit(jax.vmap(method.act))


# Evaluation acts on blocks of this many episodes: each block is one vmapped call of the same
# shape, so an episode's actions do not depend on how many episodes run beside it.
EVAL_BLOCK = 8


def eval_episode_keys(key, episode, chunk):
  """Key of an evaluation episode's `chunk`-th action chunk, from the evaluation's key."""
  return jax.random.fold_in(jax.random.fold_in(key, episode), chunk)


def make_eval_act_fn(method):
  """Best-of-N' acting in every running evaluation episode of every member, as one call:
  (states, obs [M, E, O], keys [M, 2], episode [M, E], chunk [M, E]) -> chunks [M, E, h*A],
  E a multiple of EVAL_BLOCK. Episode e of member m acts with
  eval_episode_keys(keys[m], episode[m, e], chunk[m, e])."""

  def member(state, obs, key, episode, chunk):
    keys = jax.vmap(eval_episode_keys, in_axes=(None, 0, 0))(key, episode, chunk)
    blocks = (obs.reshape((-1, EVAL_BLOCK) + obs.shape[1:]),
              keys.reshape((-1, EVAL_BLOCK) + keys.shape[1:]))
    chunks = jax.lax.map(lambda b: method.act(state, b[0], b[1]), blocks)
    return chunks.reshape((obs.shape[0],) + chunks.shape[2:])

  return jax.jit(jax.vmap(member))
