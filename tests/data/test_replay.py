"""Chunked returns, masks and validity on hand-made episodes; top-K; the replay buffer."""

import numpy as np
import pytest

from dfp_jax.agents import dfp
from dfp_jax.data.replay import ReplayBuffer, chunk_batch

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


def test_solved_inside_chunk_stops_bootstrap_but_sums_every_reward():
  data, n = _episodes()
  b = chunk_batch(data, n, np.array([5]), chunk_len=3, discount=GAMMA)
  assert b["valid"][0] == 1
  assert b["masks"][0] == 0  # no bootstrapping past the solved step
  # All h discounted rewards, also the one after the success (the released code).
  np.testing.assert_allclose(b["rewards"][0], 30 + GAMMA * 40 + GAMMA**2 * 50, rtol=1e-6)


def test_chunk_past_end_of_data_is_invalid():
  data, n = _episodes()
  b = chunk_batch(data, n, np.array([7, 8]), chunk_len=3, discount=GAMMA)
  np.testing.assert_array_equal(b["valid"], [0, 0])


def test_top_k_positives_are_the_best_candidates():
  q = np.array([[0.1, 5.0, -1.0, 3.0, 2.0], [9.0, 8.0, 7.0, 6.0, 5.0]], np.float32)
  cand = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
  pos, weights = dfp.top_k_positives(q, cand, 2)
  np.testing.assert_array_equal(pos[0], cand[0, [1, 3]])
  np.testing.assert_array_equal(pos[1], cand[1, [0, 1]])
  assert weights is None  # hard top-K: equal weights
  # Soft (the released variant): max(2 (q - min) / (max - min) - 1, 0) over all N candidates,
  # so a positive below the mid-range weighs 0 (row 0's fourth best, q = 0.1, of [-1, 5]).
  soft_pos, soft_w = dfp.top_k_positives(q, cand, 4, "soft")
  np.testing.assert_array_equal(soft_pos[:, :2], pos)
  np.testing.assert_allclose(soft_w, [[1.0, 1.0 / 3.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0]],
                             rtol=1e-6, atol=1e-7)
  # soft_minmax: (q - min) / (max - min), the weighting this project had before.
  _, minmax_w = dfp.top_k_positives(q, cand, 4, "soft_minmax")
  np.testing.assert_allclose(minmax_w, [[1.0, 4.0 / 6.0, 0.5, 1.1 / 6.0], [1.0, 0.75, 0.5, 0.25]],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="top-K mode 'nosuch'"):
    dfp.top_k_positives(q, cand, 2, "nosuch")


def _transition(i, terminal=False):
  return {"observations": np.full(2, 100 + i), "actions": np.array([0.0]), "rewards": 1.0,
          "masks": 1.0, "terminals": float(terminal), "next_observations": np.zeros(2)}


def _held_obs(buf):
  return buf._take("observations", np.arange(buf.size))[:, 0]


def test_keep_offline_buffer_shares_offline_data_and_keeps_newest_online():
  data, n = _episodes()
  buf = ReplayBuffer(data, online_capacity=2)
  assert buf.offline["observations"] is data["observations"]  # shared, not copied
  for i in range(5):
    buf.add(_transition(i, terminal=i == 3))
  assert buf.size == n + 2
  # Read in insertion order: all offline data, then the two newest online transitions.
  np.testing.assert_array_equal(_held_obs(buf), list(range(n)) + [103, 104])
  b = chunk_batch(buf._take, buf.size, np.array([n - 2, n - 1, n, n + 1]), 2, GAMMA)
  np.testing.assert_array_equal(b["observations"][:, 0], [7, 8, 103, 104])
  # Offline's last episode ends at n - 1; 103 ended an episode; 104 is the newest.
  np.testing.assert_array_equal(b["valid"], [1, 0, 0, 0])
  batch = buf.sample(np.random.default_rng(0), 64, 3, GAMMA)
  assert batch["actions"].shape == (64, 3) and batch["valid"].shape == (64,)
  with pytest.raises(ValueError, match="no room"):
    ReplayBuffer(data, online_capacity=0).add({})


def test_the_trainers_buffers_keep_offline_data_whole_with_replay_keep_offline():
  """train.replay_keep_offline: the trainer's buffers never overwrite offline data; without
  it they are FIFO at train.replay_capacity."""
  import ml_collections
  from dfp_jax.train.run import make_buffers
  data, n = _episodes()
  for keep in (True, False):
    tc = ml_collections.ConfigDict({"replay_keep_offline": keep, "replay_capacity": n + 1,
                                    "online_steps": 3})
    bufs = make_buffers(data, 2, tc)
    assert len(bufs) == 2
    for i in range(3):
      bufs[0].add(_transition(i))
    held = _held_obs(bufs[0]).tolist()
    assert held == (list(range(n)) + [100, 101, 102] if keep else
                    list(range(2, n)) + [100, 101, 102]), held


def test_fifo_buffer_overwrites_the_oldest_offline_data_first():
  data, n = _episodes()  # 9 offline transitions
  buf = ReplayBuffer(data, online_capacity=20, capacity=11)
  for i in range(2):
    buf.add(_transition(i))
  np.testing.assert_array_equal(_held_obs(buf), list(range(9)) + [100, 101])
  for i in range(2, 5):
    buf.add(_transition(i))
  # Full at 11: three more online transitions replaced offline 0, 1, 2.
  assert buf.size == 11 and buf.offline_held == 6
  np.testing.assert_array_equal(_held_obs(buf), list(range(3, 9)) + [100, 101, 102, 103, 104])
  for i in range(5, 14):
    buf.add(_transition(i))
  # Past the offline data: online replaces online, still read oldest first.
  assert buf.offline_held == 0
  np.testing.assert_array_equal(_held_obs(buf), np.arange(103, 114))
  # A chunk never runs from the newest transition into anything.
  b = chunk_batch(buf._take, buf.size, np.array([buf.size - 2, buf.size - 1]), 2, GAMMA)
  np.testing.assert_array_equal(b["valid"], [1, 0])


def test_fifo_capacity_is_at_least_the_offline_data_plus_one():
  data, n = _episodes()
  buf = ReplayBuffer(data, online_capacity=5, capacity=4)
  assert buf.capacity == n + 1  # max(capacity, N_offline + 1), as the released code
  buf.add(_transition(0))
  buf.add(_transition(1))
  np.testing.assert_array_equal(_held_obs(buf), list(range(1, 9)) + [100, 101])
  # Fewer slots than the capacity: the run may not add more than it declared.
  small = ReplayBuffer(data, online_capacity=1, capacity=100)
  small.add(_transition(0))
  with pytest.raises(ValueError, match="full"):
    small.add(_transition(1))


@pytest.mark.parametrize("capacity", [None, 11])
def test_buffer_state_round_trips(capacity):
  data, n = _episodes()
  buf = ReplayBuffer(data, online_capacity=8, capacity=capacity)
  for i in range(8):
    buf.add(_transition(i))
  other = ReplayBuffer(data, online_capacity=8, capacity=capacity)
  other.load_online_state(buf.online_state())
  np.testing.assert_array_equal(_held_obs(other), _held_obs(buf))
  rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
  a, b = buf.sample(rng_a, 32, 3, GAMMA), other.sample(rng_b, 32, 3, GAMMA)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_mixed_batches_take_the_offline_fraction_and_never_overwrite_offline_data():
  data, n = _episodes()
  offline_obs = data["observations"].copy()
  buf = ReplayBuffer(data, online_capacity=6, capacity=None)
  # Before any online data every chunk is offline, drawn as `sample` draws them.
  a = buf.sample_mixed(np.random.default_rng(0), 32, 2, GAMMA, 0.25, mark_offline=True)
  b = buf.sample(np.random.default_rng(0), 32, 2, GAMMA)
  for k in b:
    np.testing.assert_array_equal(a[k], b[k])
  np.testing.assert_array_equal(a["offline"], np.ones(32))
  for i in range(20):  # more than the online room: only online data is replaced
    buf.add(_transition(i))
  np.testing.assert_array_equal(buf.offline["observations"], offline_obs)
  assert buf.size == n + 6
  for fraction, expected in ((0.25, 16), (0.5, 32), (0.0, 0), (1.0, 64)):
    batch = buf.sample_mixed(np.random.default_rng(1), 64, 1, GAMMA, fraction, mark_offline=True)
    from_online = batch["observations"][:, 0] >= 100  # online transitions' observations
    np.testing.assert_array_equal(from_online, np.arange(64) >= expected)
    np.testing.assert_array_equal(batch["offline"], (np.arange(64) < expected).astype(np.float32))
    # the online part is uniform over the 6 online transitions held (ages 14..19)
    assert set(batch["observations"][from_online, 0]) <= {100 + i for i in range(14, 20)}
  with pytest.raises(ValueError, match="keeps its offline data"):
    ReplayBuffer(data, 6, capacity=100).sample_mixed(np.random.default_rng(0), 4, 1, GAMMA, 0.5)
