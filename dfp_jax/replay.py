"""Replay buffer of transitions and action-chunk sampling (Q-chunking).

Transitions live on the host in flat numpy arrays in time order, with
`terminals` marking the last transition of each episode (time-out or true
end) and `masks` = 0 where the task is solved (no bootstrapping past it).
The buffer starts with the offline data and grows with online transitions.
"""

from typing import Dict

import numpy as np

FIELDS = ("observations", "actions", "rewards", "masks", "terminals", "next_observations")


def chunk_batch(data: Dict[str, np.ndarray], size: int, starts: np.ndarray,
                chunk_len: int, discount: float) -> Dict[str, np.ndarray]:
  """Action chunks a_{t:t+h} starting at `starts`, with their h-step returns.

  Returns observations [B, O] (s_t), actions [B, h*A], rewards [B]
  (sum_i gamma^i r_{t+i}, stopping after the first solved step), masks [B]
  (0 if the task was solved inside the chunk), valid [B] (0 if the chunk runs
  past the end of its episode or of the data: such chunks are masked out of
  the losses) and next_observations [B, O] (s_{t+h}).
  """
  idx = starts[:, None] + np.arange(chunk_len)[None]  # [B, h]
  inside = idx < size
  idx = np.minimum(idx, size - 1)
  ends = data["terminals"][idx] > 0
  # Step i belongs to the episode of step 0 iff no episode ended before it.
  same_episode = np.concatenate(
      [np.ones_like(ends[:, :1]), np.cumprod(~ends[:, :-1], axis=1).astype(bool)], axis=1)
  same_episode &= inside
  solved = data["masks"][idx] == 0
  # Rewards count up to and including the first solved step.
  before_solved = np.concatenate(
      [np.ones_like(solved[:, :1]), np.cumprod(~solved[:, :-1], axis=1).astype(bool)], axis=1)
  live = same_episode & before_solved
  gammas = discount ** np.arange(chunk_len, dtype=np.float32)
  rewards = np.sum(data["rewards"][idx] * gammas * live, axis=1)
  return {
      "observations": data["observations"][starts],
      "actions": data["actions"][idx].reshape(len(starts), -1),
      "rewards": rewards.astype(np.float32),
      "masks": (~np.any(solved & same_episode, axis=1)).astype(np.float32),
      "valid": same_episode[:, -1].astype(np.float32),
      "next_observations": data["next_observations"][idx[:, -1]],
  }


class ReplayBuffer:
  """Fixed-capacity transition store, initialised with the offline dataset.

  The offline part is never overwritten; online transitions fill the rest of
  the capacity and then wrap around over the online part only.
  """

  def __init__(self, dataset: Dict[str, np.ndarray], capacity: int):
    n = len(dataset["observations"])
    if capacity < n:
      raise ValueError(f"replay capacity {capacity} < offline dataset size {n}")
    self.data = {}
    for k in FIELDS:
      arr = np.asarray(dataset[k])
      self.data[k] = np.zeros((capacity,) + arr.shape[1:], arr.dtype)
      self.data[k][:n] = arr
    self.offline_size = n
    self.capacity = capacity
    self.size = n
    self._cursor = n

  def add(self, transition: Dict[str, np.ndarray]):
    """Append one transition (keys: FIELDS)."""
    if self._cursor >= self.capacity:
      if self.capacity == self.offline_size:
        raise ValueError("replay buffer has no room for online data")
      self._cursor = self.offline_size
    for k in FIELDS:
      self.data[k][self._cursor] = transition[k]
    self._cursor += 1
    self.size = max(self.size, self._cursor)

  def sample(self, rng: np.random.Generator, batch_size: int, chunk_len: int,
             discount: float) -> Dict[str, np.ndarray]:
    starts = rng.integers(0, self.size, size=batch_size)
    return chunk_batch(self.data, self.size, starts, chunk_len, discount)
