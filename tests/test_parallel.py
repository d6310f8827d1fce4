"""Data parallelism over 8 host devices matches one device; vmapped seeds match single runs.

The trainer on 8 devices is checked against 1 device elsewhere, in runs that exist for other
reasons: a SIGTERM'd 8-device run resumed on one device (tests/train/test_checkpoint.py) and
a population on 8,1 and 4,2 meshes against lone runs (tests/train/test_population.py)."""

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from dfp_jax.agents import dfp

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_eight_devices_match_one_device_step_for_step():
  res = subprocess.run([sys.executable, os.path.join(HERE, "multidevice_check.py")],
                       capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stderr[-3000:]
  out = json.loads(res.stdout.strip().splitlines()[-1])
  assert out["devices"] == 8
  assert set(out) == {"devices", "dfp", "qc_fql", "qc_bfn", "mvp_topk"}
  for method in ("dfp", "qc_fql", "qc_bfn", "mvp_topk"):
    res = out[method]
    assert res["moved"] > 1e-4, (method, res)  # the parameters did change over the 4 steps
    for n in (1, 8):
      # Same global batch, same per-example noise: equal up to float error in reductions.
      assert res[f"params_{n}"] < 1e-5 and res[f"critic_{n}"] < 1e-5, (method, res)
      assert res[f"info_{n}"] < 1e-3, (method, res)


def _tiny_agent(seed):
  c = dfp.get_config()
  c.actor_hidden, c.critic_hidden, c.chunk_len = (16,), (16,), 1
  return dfp.create(c, obs_dim=2, action_dim=2, key=jax.random.PRNGKey(seed))


@pytest.mark.slow
def test_vmapped_seeds_equal_separate_runs():
  seeds = (0, 1, 2)
  rng = np.random.default_rng(0)
  batches = [{
      "observations": rng.standard_normal((16, 2)).astype(np.float32),
      "actions": rng.uniform(-1, 1, (16, 2)).astype(np.float32),
      "rewards": np.zeros(16, np.float32), "masks": np.ones(16, np.float32),
      "valid": np.ones(16, np.float32),
      "next_observations": rng.standard_normal((16, 2)).astype(np.float32)} for _ in seeds]
  keys = [jax.random.PRNGKey(100 + s) for s in seeds]
  update = functools.partial(dfp.update, online=True)
  stacked = jax.tree.map(lambda *x: np.stack(x), *[_tiny_agent(s) for s in seeds])
  vec_agent, _ = jax.jit(jax.vmap(update))(
      stacked, jax.tree.map(lambda *x: np.stack(x), *batches), np.stack(keys))
  for i, s in enumerate(seeds):
    single, _ = jax.jit(update)(_tiny_agent(s), batches[i], keys[i])
    for a, b in zip(jax.tree.leaves(single.actor_params), jax.tree.leaves(vec_agent.actor_params)):
      np.testing.assert_allclose(a, b[i], atol=1e-6)
  # Seeds really differ from each other.
  assert max(float(np.abs(x[0] - x[1]).max())
             for x in jax.tree.leaves(vec_agent.actor_params)) > 1e-2


def test_host_device_flags_replace_the_count_and_keep_other_flags():
  from dfp_jax.parallel import host_device_flags
  assert host_device_flags(2) == "--xla_force_host_platform_device_count=2"
  assert host_device_flags(8, "--xla_backend_optimization_level=0 "
                              "--xla_force_host_platform_device_count=2") == (
      "--xla_backend_optimization_level=0 --xla_force_host_platform_device_count=8")
