"""Run by test_parallel.py in a subprocess with 8 host devices (XLA_FLAGS set before jax starts).

Trains a small agent of each method family (DFP, QC-FQL, QC-BFN, MVP + top-K) for a
few steps three ways at the same global batch (plain jit on one device, data-parallel
over a 1-device mesh, data-parallel over 8 devices) and prints the largest parameter
and metric differences per method as JSON.
"""

import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from dfp_jax import parallel  # noqa: E402

# Eight host devices, the suite's other XLA flags kept (tests/conftest.py); read when jax
# first starts its backend, below.
os.environ["XLA_FLAGS"] = parallel.host_device_flags(8, os.environ.get("XLA_FLAGS", ""))
from dfp_jax.agents import bfn, dfp, fql, mvp

METHODS = {"dfp": (dfp, {}), "qc_fql": (fql, {}),
           "qc_bfn": (bfn, {"flow_steps": 3, "num_target_samples": 4}),
           "mvp_topk": (mvp, {"use_topk": True})}


def batch(rng, n, obs_dim=3, s=4):
  return {
      "observations": rng.standard_normal((n, obs_dim)).astype(np.float32),
      "actions": rng.uniform(-1, 1, (n, s)).astype(np.float32),
      "rewards": -rng.uniform(0, 1, n).astype(np.float32),
      "masks": (rng.uniform(size=n) > 0.1).astype(np.float32),
      "valid": (rng.uniform(size=n) > 0.2).astype(np.float32),  # uneven across shards
      "next_observations": rng.standard_normal((n, obs_dim)).astype(np.float32),
  }


def config(method):
  lib, extra = METHODS[method]
  c = lib.get_config()
  c.actor_hidden, c.critic_hidden, c.chunk_len = (32, 32), (32, 32), 2
  c.update(extra)
  return c


def run(method, update, steps=4, online=True):
  agent = METHODS[method][0].create(config(method), obs_dim=3, action_dim=2,
                                    key=jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  fn = jax.jit(functools.partial(update, online=online))
  infos = []
  for i in range(steps):
    agent, info = fn(agent, batch(rng, 64), jax.random.PRNGKey(i))
    infos.append(jax.device_get(info))
  return jax.device_get(agent), infos


def max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
  assert jax.device_count() == 8, jax.devices()
  out = {"devices": jax.device_count()}
  for method, (lib, _) in METHODS.items():
    ref_agent, ref_info = run(method, lib.update)
    res = {}
    for n in (1, 8):
      mesh = parallel.make_mesh(jax.devices()[:n])
      agent, info = run(method, parallel.data_parallel(lib.update, mesh))
      res[f"params_{n}"] = max_diff(ref_agent.actor_params, agent.actor_params)
      res[f"critic_{n}"] = max_diff(ref_agent.critic_params, agent.critic_params)
      res[f"info_{n}"] = max(abs(float(ref_info[-1][k]) - float(info[-1][k])) /
                             (1e-6 + abs(float(ref_info[-1][k]))) for k in ref_info[-1])
    # How far the parameters moved, to compare the differences against.
    init = lib.create(config(method), 3, 2, jax.random.PRNGKey(0))
    res["moved"] = max_diff(ref_agent.actor_params, init.actor_params)
    out[method] = res
  print(json.dumps(out))


if __name__ == "__main__":
  main()
