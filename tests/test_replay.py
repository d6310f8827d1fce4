"""Chunked returns, masks and validity on hand-made episodes; top-K; the replay buffer."""

import numpy as np
import pytest

from dfp_jax import dfp
from dfp_jax.replay import ReplayBuffer, chunk_batch

GAMMA = 0.9


def _episodes():
  """Episode A: 3 steps (ends at index 2). Episode B: 6 steps, task solved at index 6."""
  n = 9
  obs = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
  data = {
      "observations": obs,
      "next_observations": obs + 0.5,  # distinguishable from observations
      "actions": np.arange(n, dtype=np.float32)[:, None] / 10.0,
      "rewards": np.array([1, 2, 3, 10, 20, 30, 40, 50, 60], np.float32),
      "masks": np.array([1, 1, 1, 1, 1, 1, 0, 1, 1], np.float32),
      "terminals": np.array([0, 0, 1, 0, 0, 0, 0, 0, 1], np.float32),
  }
  return data, n


def test_chunk_inside_one_episode():
  data, n = _episodes()
  b = chunk_batch(data, n, np.array([3]), chunk_len=3, discount=GAMMA)
  assert b["valid"][0] == 1 and b["masks"][0] == 1
  np.testing.assert_allclose(b["rewards"][0], 10 + GAMMA * 20 + GAMMA**2 * 30, rtol=1e-6)
  np.testing.assert_allclose(b["actions"][0], [0.3, 0.4, 0.5], rtol=1e-6)
  np.testing.assert_allclose(b["observations"][0], [3, 3])
  np.testing.assert_allclose(b["next_observations"][0], [5.5, 5.5])  # s_{t+h}


def test_chunk_ending_exactly_at_episode_end_is_valid():
  data, n = _episodes()
  b = chunk_batch(data, n, np.array([0]), chunk_len=3, discount=GAMMA)
  assert b["valid"][0] == 1
  np.testing.assert_allclose(b["rewards"][0], 1 + GAMMA * 2 + GAMMA**2 * 3, rtol=1e-6)


@pytest.mark.parametrize("start", [1, 2])
def test_chunk_crossing_episode_end_is_masked_out(start):
  data, n = _episodes()
  b = chunk_batch(data, n, np.array([start]), chunk_len=3, discount=GAMMA)
  assert b["valid"][0] == 0
  # Rewards of the next episode never leak into this chunk's return.
  expected = sum(GAMMA**i * r for i, r in enumerate([1, 2, 3][start:]))
  np.testing.assert_allclose(b["rewards"][0], expected, rtol=1e-6)


def test_solved_inside_chunk_stops_return_and_bootstrap():
  data, n = _episodes()
  b = chunk_batch(data, n, np.array([5]), chunk_len=3, discount=GAMMA)
  assert b["valid"][0] == 1
  assert b["masks"][0] == 0  # no bootstrapping past the solved step
  np.testing.assert_allclose(b["rewards"][0], 30 + GAMMA * 40, rtol=1e-6)  # 50 is after


def test_chunk_past_end_of_data_is_invalid():
  data, n = _episodes()
  b = chunk_batch(data, n, np.array([7, 8]), chunk_len=3, discount=GAMMA)
  np.testing.assert_array_equal(b["valid"], [0, 0])


def test_top_k_positives_are_the_best_candidates():
  q = np.array([[0.1, 5.0, -1.0, 3.0, 2.0], [9.0, 8.0, 7.0, 6.0, 5.0]], np.float32)
  cand = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
  pos = np.asarray(dfp.top_k_positives(q, cand, 2))
  np.testing.assert_array_equal(pos[0], cand[0, [1, 3]])
  np.testing.assert_array_equal(pos[1], cand[1, [0, 1]])


def test_replay_buffer_shares_offline_data_and_wraps_online_part():
  data, n = _episodes()
  buf = ReplayBuffer(data, online_capacity=2)
  assert buf.offline["observations"] is data["observations"]  # shared, not copied
  for i in range(5):
    buf.add({"observations": np.full(2, 100 + i), "actions": np.array([0.0]), "rewards": 1.0,
             "masks": 1.0, "terminals": float(i == 3), "next_observations": np.zeros(2)})
  assert buf.size == n + 2
  np.testing.assert_array_equal(buf.online["observations"][:, 0], [104, 103])
  # Chunks are read across the offline/online boundary correctly.
  b = chunk_batch(buf._take, buf.size, np.array([n - 1, n]), 2, GAMMA)
  np.testing.assert_array_equal(b["observations"][:, 0], [8, 104])
  np.testing.assert_array_equal(b["valid"], [0, 1])  # offline's last episode ended at n - 1
  batch = buf.sample(np.random.default_rng(0), 64, 3, GAMMA)
  assert batch["actions"].shape == (64, 3) and batch["valid"].shape == (64,)
  with pytest.raises(ValueError, match="no room"):
    ReplayBuffer(data, online_capacity=0).add({})
