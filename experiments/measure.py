"""Timing helpers shared by the benchmark tables and suites: random batches of a task's sizes,
one jitted call timed at a time, every method's update and acting latency, seeds vectorised,
populations on a mesh, a checkpoint's cost. Plain functions, no flags."""

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dfp_jax import agents
from experiments.configs import common


def time_calls(fn, args_fn, iters, first=None):
  """Median milliseconds per call of fn(*args_fn(i)), after one compiling call (its seconds
  are appended to the list `first` when given)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args_fn(0)))
  if first is not None:
    first.append(time.perf_counter() - t0)
  times = []
  for i in range(iters):
    args = args_fn(i + 1)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return 1e3 * float(np.median(times))


def random_batch(rng, batch_size, obs_dim, s):
  return {
      "observations": jnp.asarray(rng.standard_normal((batch_size, obs_dim)), jnp.float32),
      "actions": jnp.asarray(rng.uniform(-1, 1, (batch_size, s)), jnp.float32),
      "rewards": -jnp.ones(batch_size), "masks": jnp.ones(batch_size),
      "valid": jnp.ones(batch_size),
      "next_observations": jnp.asarray(rng.standard_normal((batch_size, obs_dim)), jnp.float32),
  }


def get_config(method, preset, overrides=()):
  """The method's config at `preset`, with `overrides` ("dotted.key=value") applied."""
  module = __import__(f"experiments.configs.{method}", fromlist=["get_config"])
  return common.apply_overrides(module.get_config(preset), overrides)


def measure(config, obs_dim, action_dim, iters):
  ac, batch_size = config.agent, config.train.batch_size
  lib = agents.get(config.method)
  agent = lib.create(ac, obs_dim, action_dim, jax.random.PRNGKey(0))
  batch = random_batch(np.random.default_rng(0), batch_size, obs_dim, ac.chunk_len * action_dim)
  row = {}
  for name, online in (("offline", False), ("online", True)):
    update = jax.jit(functools.partial(lib.update, online=online))
    first = []
    row[f"{name} ms/step"] = time_calls(
        lambda a, k: update(a, batch, k)[0], lambda i: (agent, jax.random.PRNGKey(i)), iters,
        first)
    row[f"{name} compile s"] = first[0]  # the first call: tracing, compiling, one run
  act = jax.jit(lib.act)
  obs = batch["observations"][0]
  row["act ms/call"] = time_calls(act, lambda i: (agent, obs, jax.random.PRNGKey(i)), iters)
  row["online/offline"] = row["online ms/step"] / row["offline ms/step"]
  row["hidden"] = "x".join(str(w) for w in ac.actor_hidden)
  row["batch"] = batch_size
  row["h"] = ac.chunk_len
  row["samples (act/target)"] = f"{ac.num_act_samples}/{ac.num_target_samples}"
  return row


def members(config, obs_dim, action_dim, num_states, num_batches):
  """(states, keys, batches): `num_states` fresh agents vmapped along a leading axis, their
  update keys, and `num_batches` random minibatches stacked along one (on the host)."""
  lib = agents.get(config.method)
  keys = jax.random.split(jax.random.PRNGKey(0), num_states)
  states = jax.vmap(lambda k: lib.create(config.agent, obs_dim, action_dim, k))(keys)
  rng = np.random.default_rng(0)
  batches = jax.tree.map(lambda *x: np.stack(x), *[jax.device_get(random_batch(
      rng, config.train.batch_size, obs_dim, config.agent.chunk_len * action_dim))
      for _ in range(num_batches)])
  return states, keys, batches


def measure_seeds(config, obs_dim, action_dim, num_seeds, iters):
  """ms per online update: S seeds in one vmapped call vs one seed alone."""
  states, _, batches = members(config, obs_dim, action_dim, num_seeds, num_seeds)
  batches = jax.tree.map(jnp.asarray, batches)
  update = jax.jit(jax.vmap(functools.partial(agents.get(config.method).update, online=True)))
  return time_calls(lambda a, k: update(a, batches, k)[0],
                    lambda i: (states, jax.random.split(jax.random.PRNGKey(i), num_seeds)), iters)


def measure_population(config, obs_dim, action_dim, num_members, iters):
  """(pop, data, ms per online update) of `num_members` DFP members over every device."""
  from dfp_jax import parallel
  from dfp_jax.train import updates
  pop, data = parallel.mesh_shape(num_members, jax.device_count(), config.train.batch_size)
  place = parallel.Placement(num_members, parallel.population_mesh(pop, data)
                             if jax.device_count() > 1 else None)
  states, keys, batches = members(config, obs_dim, action_dim, place.padded, num_members)
  if place.mesh is not None:
    states, keys = parallel.to_global(jax.device_get((states, keys)), place.mesh,
                                      parallel.P(parallel.POP_AXIS))
  batches = place.to_device(batches)
  _, online = updates.make_update_fns(agents.get(config.method).update, mesh=place.mesh)
  ms = time_calls(lambda a, k: online(a, batches, k)[0], lambda i: (states, keys), iters)
  return pop, data, ms


def measure_checkpoint(config, obs_dim, action_dim, num_seeds, directory):
  """(MB on disk, s until save returns, s until written) for a run's checkpoint, buffers full."""
  from dfp_jax.train import checkpoint
  from dfp_jax.data.replay import FIELDS
  lib = agents.get(config.method)
  keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
  states = jax.vmap(lambda k: lib.create(config.agent, obs_dim, action_dim, k))(keys)
  rng = np.random.default_rng(0)
  n = config.train.online_steps
  widths = {"observations": obs_dim, "next_observations": obs_dim, "actions": action_dim}
  member_data = {s: ({"buffer": {
      **{k: rng.standard_normal((n, widths.get(k, 1)), np.float32) for k in FIELDS},
      "counters": np.array([n])}}, {}) for s in range(num_seeds)}
  ckpt = checkpoint.Checkpointer(directory, max_to_keep=1)
  t0 = time.perf_counter()
  ckpt.save(1, {"agent": states, "keys": keys}, member_data, {"step": 1})
  returned = time.perf_counter() - t0
  ckpt.wait()
  written = time.perf_counter() - t0
  ckpt.close()
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(directory) for f in fs)
  return size / 2**20, returned, written
