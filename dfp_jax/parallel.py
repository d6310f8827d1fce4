"""Parallelism around an agent's `update(agent, batch, key, *, axis_name, ...)`, never a
second copy of it.

Data parallelism (pmap semantics on `jax.shard_map`): the batch is split along
its first axis over a `data` mesh axis, the agent is replicated, each device
averages its gradients with the others (`axis_name` inside the update) and
every example draws its noise from its own key, derived from the step key on
the global batch. So the result does not depend on the number of devices, up
to float error in the reductions.

Populations (seeds x swept hyperparameters) add a `pop` axis: a 2-D mesh
(pop, data) holds members along `pop` (each device a vmap over its members)
and each member's batch along `data`. `Placement` says which members a
process feeds and reads: the host side of a member (environment, replay,
outputs) lives only on the processes whose devices hold it.
"""

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dfp_jax.per_example import example_keys

DATA_AXIS = "data"
POP_AXIS = "pop"


def host_device_flags(count: int, flags: str = "") -> str:
  """`flags` (an XLA_FLAGS value) asking for `count` CPU devices, the user's other flags kept:
  set in a process's environment before jax starts (local multi-process runs, tests)."""
  kept = [f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count=")]
  return " ".join([*kept, f"--xla_force_host_platform_device_count={count}"])


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


def population_mesh(pop: int, data: int, devices=None) -> Mesh:
  """A (pop, data) mesh; each member's `data` devices are consecutive, so within a process
  whenever `data` divides the process's device count."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  if devices.size != pop * data:
    raise ValueError(f"--mesh={pop},{data} needs {pop * data} devices; there are {devices.size}")
  return Mesh(devices.reshape(pop, data), (POP_AXIS, DATA_AXIS))


def mesh_shape(num_members: int, num_devices: int, batch_size: int, requested=None):
  """(pop, data) for a population: `requested`, checked, or by default every device on `pop`
  when there are at least as many members as devices, else the largest `pop` that divides
  the devices (the rest split each member's batch)."""
  if requested is not None:
    pop, data = requested
    if pop < 1 or data < 1 or pop * data != num_devices:
      raise ValueError(f"--mesh={pop},{data}: POP x DATA must equal the {num_devices} devices")
  elif num_members >= num_devices:
    pop, data = num_devices, 1
  else:
    pop = max(d for d in range(1, num_members + 1) if num_devices % d == 0)
    data = num_devices // pop
  if batch_size % data:
    raise ValueError(f"batch {batch_size} is not divisible by the mesh's data axis ({data})")
  return pop, data


def population_parallel(member_update, mesh: Mesh):
  """`member_update(state, batch, example_keys [B, 2], axis_name)` over a population on a
  (pop, data) mesh: (states [M, ...], batches [M, B, ...], keys [M, 2]) -> (states, info [M]).

  M must be a multiple of the pop axis. Each member's per-example keys come from its step
  key on the whole batch, as on one device.
  """
  def wrapped(states, batches, keys):
    batch_size = jax.tree.leaves(batches)[0].shape[1]
    ex_keys = jax.vmap(lambda k: example_keys(k, batch_size))(keys)

    def local(states, batches, ex_keys):
      return jax.vmap(lambda st, b, k: member_update(st, b, k, DATA_AXIS))(states, batches,
                                                                          ex_keys)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(POP_AXIS), P(POP_AXIS, DATA_AXIS),
                                                     P(POP_AXIS, DATA_AXIS)),
                         out_specs=(P(POP_AXIS), P(POP_AXIS)), check_vma=False)(
                             states, batches, ex_keys)

  return wrapped


class Placement:
  """Where a population's members live: the device mesh (None: one device, a plain vmap),
  the padded member count, and the members this process owns (feeds and reads)."""

  def __init__(self, num_members: int, mesh: Mesh = None):
    self.mesh, self.num_members = mesh, num_members
    pop = 1 if mesh is None else mesh.shape[POP_AXIS]
    self.padded = -(-num_members // pop) * pop  # members that compute; the extra write nothing
    if mesh is None:
      self.rows = tuple(range(num_members))
    else:
      mine = {d.id for d in jax.local_devices()}
      rows_per_device = self.padded // pop
      owned = [r for r in range(pop) if any(d.id in mine for d in mesh.devices[r])]
      self.rows = tuple(m for r in owned for m in range(r * rows_per_device,
                                                        (r + 1) * rows_per_device)
                        if m < num_members)
    self.writes = self.rows if mesh is None else tuple(
        m for m in self.rows if self._first_owner(m) == jax.process_index())

  def _first_owner(self, member: int) -> int:
    pop_row = member // (self.padded // self.mesh.shape[POP_AXIS])
    return min(d.process_index for d in self.mesh.devices[pop_row])

  def to_device(self, local, lead: int = 0, per_example: bool = True):
    """Host arrays of this process's members [lead..., L, ...] -> the population's arrays
    [lead..., M_padded, ...]; padded members get zeros. With a mesh, sharded by member
    (and by example along `data` when `per_example`)."""
    if self.mesh is None:
      return local
    where = {m: i for i, m in enumerate(self.rows)}

    def put(x):
      x = np.asarray(x)
      spec = [None] * lead + [POP_AXIS] + ([DATA_AXIS] if per_example and x.ndim > lead + 1 else [])
      sharding = NamedSharding(self.mesh, P(*spec))
      shape = x.shape[:lead] + (self.padded,) + x.shape[lead + 1:]

      def piece(idx):
        members = range(*idx[lead].indices(self.padded))
        rows = [x[(slice(None),) * lead + (where[m],)] if m in where
                else np.zeros(x.shape[:lead] + x.shape[lead + 1:], x.dtype) for m in members]
        block = np.stack(rows, axis=lead)
        return block[tuple(slice(None) if i == lead else s for i, s in enumerate(idx))]

      return jax.make_array_from_callback(shape, sharding, piece)

    return jax.tree.map(put, local)

  def to_host(self, tree, lead: int = 0):
    """The population's arrays [lead..., M_padded, ...] -> numpy of this process's members
    [lead..., L, ...] (read from the local shards)."""
    def get(x):
      if self.mesh is None:
        return np.asarray(x)
      out = {}
      for shard in x.addressable_shards:
        members = range(*shard.index[lead].indices(self.padded))
        data = np.asarray(shard.data)
        for j, m in enumerate(members):
          if m in self.rows and m not in out:
            out[m] = data[(slice(None),) * lead + (j,)]
      return np.stack([out[m] for m in self.rows], axis=lead)
    return jax.tree.map(get, tree)


def sync(name: str):
  """Barrier across processes (no-op in a one-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is true on any (a collective)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
  """`jax.distributed.initialize`, explicit or auto-detected (TPU pods, SLURM)."""
  if coordinator_address:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize()
