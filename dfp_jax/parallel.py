"""Data parallelism with pmap semantics on `jax.shard_map`, and seeds as a vmap.

Parallelism wraps an agent's `update(agent, batch, key, *, axis_name, ...)`;
it is never a second copy of it. The global batch is split along its first
axis over the mesh, the agent is replicated, each device averages its
gradients with the others (`axis_name` inside the update) and every example
draws its noise from its own key, derived from the step key on the global
batch. So the result does not depend on the number of devices, up to float
error in the reductions.
"""

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dfp_jax.per_example import example_keys

DATA_AXIS = "data"


def make_mesh(devices=None, axis: str = DATA_AXIS) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every host)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (axis,))


def data_parallel(update, mesh: Mesh, axis: str = DATA_AXIS):
  """`update` run data-parallel over `mesh`; same signature, same results.

  The returned function is traceable (jit it, or call it inside a jitted scan).
  Metrics in the returned info are averaged over devices.
  """

  @functools.wraps(update)
  def wrapped(agent, batch, key, **kwargs):
    batch_size = jax.tree.leaves(batch)[0].shape[0]
    if batch_size % mesh.size:
      raise ValueError(f"global batch {batch_size} is not divisible by the {mesh.size} devices")

    def local(agent, batch, keys):
      agent, info = update(agent, batch, keys, axis_name=axis, **kwargs)
      return agent, jax.lax.pmean(info, axis)

    # check_vma=False gives pmap's semantics: gradients inside are per-device and
    # the update averages them explicitly, so parameters stay replicated.
    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis), P(axis)),
                         out_specs=(P(), P()), check_vma=False)(
                             agent, batch, example_keys(key, batch_size))

  return wrapped


def to_global(tree, mesh: Mesh, spec: P):
  """Host numpy `tree` (identical on every process) -> global arrays sharded by `spec`.

  Each process transfers only the slices its own devices hold, so in a
  multi-host run every host feeds its own shard of the batch.
  """
  sharding = NamedSharding(mesh, spec)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return jax.tree.map(put, tree)


def to_host(tree):
  """Arrays -> numpy; a replicated array spread over several hosts is read locally."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)
    return np.asarray(x)
  return jax.tree.map(get, tree)


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
  """`jax.distributed.initialize`, explicit or auto-detected (TPU pods, SLURM)."""
  if coordinator_address:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize()
