"""The periodic-action rule and the run state's checkpoint round trip."""

import jax.numpy as jnp
import numpy as np

from dfp_jax.data.replay import ReplayBuffer
from dfp_jax.train import state as state_lib
from dfp_jax.train.checkpoint import Checkpointer
from dfp_jax.train.phases import due


def test_due_fires_once_per_period_crossed_and_at_the_phase_end():
  assert due(0, 10, 10) and not due(10, 19, 10) and due(19, 20, 10)
  assert due(5, 25, 10)  # a dispatch of 20 steps that crosses one multiple
  assert not due(3, 7, 10) and due(3, 7, 10, end=7)  # the phase's last step
  assert not due(0, 100, 0)  # period 0: never (e.g. no checkpoints)


def _data(n=12):
  obs = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
  return {"observations": obs, "next_observations": obs + 1, "actions": obs[:, :2] / 10,
          "rewards": np.zeros(n, np.float32), "masks": np.ones(n, np.float32),
          "terminals": (np.arange(n) % 4 == 3).astype(np.float32)}


def test_run_state_round_trips_through_a_checkpoint(tmp_path):
  seeds = (3, 5)
  agents = {"w": jnp.arange(6.0).reshape(2, 3)}
  state = state_lib.RunState.fresh(agents, jnp.ones((2, 2), jnp.uint32),
                                   jnp.zeros((2, 2), jnp.uint32), seeds)
  state.buffers = [ReplayBuffer(_data(), 10, capacity=20) for _ in seeds]
  state.step, state.skipped, state.fingerprints = 17, [0, 2], {"None": "abc"}
  ep = state.episodes
  for s in range(2):
    for i in range(3 + s):
      state.buffers[s].add({"observations": np.full(3, 100 + i), "actions": np.full(2, 0.5),
                            "rewards": 1.0, "masks": 1.0, "terminals": 0.0,
                            "next_observations": np.zeros(3)})
    state.rngs[s].integers(0, 100, 7 + s)  # advance the minibatch streams
  ep.obs = [np.full(3, 7.0, np.float32), np.full(3, 8.0, np.float32)]
  ep.queues = [[np.full(2, 0.25, np.float32)], []]
  ep.actions = [[np.full(2, 0.1, np.float32)] * 2, [np.full(2, 0.2, np.float32)]]
  ep.count, ep.successes = [4, 1], [[1.0], []]

  ckpt = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
  rows = list(range(len(seeds)))
  ckpt.save(state.step, *state_lib.checkpoint_items(state, rows, set(rows),
                                                     {"a": 1, "wall_time_s": 12.5}, 3, 2))
  ckpt.wait()

  other = state_lib.RunState.fresh({"w": jnp.zeros((2, 3))}, jnp.zeros((2, 2), jnp.uint32),
                                   jnp.zeros((2, 2), jnp.uint32), seeds)
  other.buffers = [ReplayBuffer(_data(), 10, capacity=20) for _ in seeds]
  device, members, meta = ckpt.restore(17, {"agent": other.agents, "keys": other.keys,
                                            "eval_keys": other.eval_keys}, rows)
  assert meta["a"] == 1 and meta["step"] == 17
  other, saved_obs = state_lib.restore(other, device, members, rows, meta)
  np.testing.assert_array_equal(other.agents["w"], agents["w"])
  np.testing.assert_array_equal(other.keys, state.keys)
  assert (other.step, other.skipped, other.fingerprints) == (17, [0, 2], {"None": "abc"})
  assert other.episodes.count == [4, 1] and other.episodes.successes == [[1.0], []]
  assert other.wall_time_s == 12.5
  np.testing.assert_array_equal(saved_obs[1], ep.obs[1])
  for s in range(2):
    assert [r.integers(0, 1 << 30) for r in [other.rngs[s]]] == \
        [r.integers(0, 1 << 30) for r in [state.rngs[s]]]
    assert len(other.episodes.queues[s]) == len(ep.queues[s])
    assert len(other.episodes.actions[s]) == len(ep.actions[s])
    a = state.buffers[s].sample(np.random.default_rng(0), 8, 2, 0.9)
    b = other.buffers[s].sample(np.random.default_rng(0), 8, 2, 0.9)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  ckpt.close()
