"""Replay buffer of transitions and action-chunk sampling (Q-chunking).

Transitions live on the host in flat numpy arrays in time order, with
`terminals` marking the last transition of each episode (time-out or true
end) and `masks` = 0 where the task is solved (no bootstrapping past it).
The buffer starts with the offline data and grows with online transitions.
"""

from typing import Dict

import numpy as np

FIELDS = ("observations", "actions", "rewards", "masks", "terminals", "next_observations")


def chunk_batch(data, size: int, starts: np.ndarray, chunk_len: int,
                discount: float) -> Dict[str, np.ndarray]:
  """Action chunks a_{t:t+h} starting at `starts`, with their h-step returns.

  `data` is a dict of arrays in time order, or a function take(field, idx).

  Returns observations [B, O] (s_t), actions [B, h*A], rewards [B]
  (sum_i gamma^i r_{t+i}, stopping after the first solved step), masks [B]
  (0 if the task was solved inside the chunk), valid [B] (0 if the chunk runs
  past the end of its episode or of the data: such chunks are masked out of
  the losses) and next_observations [B, O] (s_{t+h}).
  """
  take = data if callable(data) else (lambda k, i: data[k][i])
  idx = starts[:, None] + np.arange(chunk_len)[None]  # [B, h]
  inside = idx < size
  idx = np.minimum(idx, size - 1)
  ends = take("terminals", idx) > 0
  # Step i belongs to the episode of step 0 iff no episode ended before it.
  same_episode = np.concatenate(
      [np.ones_like(ends[:, :1]), np.cumprod(~ends[:, :-1], axis=1).astype(bool)], axis=1)
  same_episode &= inside
  solved = take("masks", idx) == 0
  # Rewards count up to and including the first solved step.
  before_solved = np.concatenate(
      [np.ones_like(solved[:, :1]), np.cumprod(~solved[:, :-1], axis=1).astype(bool)], axis=1)
  live = same_episode & before_solved
  gammas = discount ** np.arange(chunk_len, dtype=np.float32)
  rewards = np.sum(take("rewards", idx) * gammas * live, axis=1)
  return {
      "observations": take("observations", starts),
      "actions": take("actions", idx).reshape(len(starts), -1),
      "rewards": rewards.astype(np.float32),
      "masks": (~np.any(solved & same_episode, axis=1)).astype(np.float32),
      "valid": same_episode[:, -1].astype(np.float32),
      "next_observations": take("next_observations", idx[:, -1]),
  }


class ReplayBuffer:
  """The offline dataset (shared, never copied or overwritten) plus online transitions.

  Seeds trained together share one offline dataset and keep their own online
  part. The online part holds `online_capacity` transitions, then wraps around.
  The offline data's last transition ends an episode, so no chunk runs from
  offline into online data.
  """

  def __init__(self, dataset: Dict[str, np.ndarray], online_capacity: int):
    self.offline = {k: dataset[k] for k in FIELDS}
    self.offline_size = len(dataset["observations"])
    self.online = {k: np.zeros((max(online_capacity, 0),) + v.shape[1:], v.dtype)
                   for k, v in self.offline.items()}
    self.online_capacity = online_capacity
    self.online_size = 0
    self._cursor = 0

  @property
  def size(self):
    return self.offline_size + self.online_size

  def add(self, transition: Dict[str, np.ndarray]):
    """Append one transition (keys: FIELDS)."""
    if self.online_capacity <= 0:
      raise ValueError("replay buffer has no room for online data")
    for k in FIELDS:
      self.online[k][self._cursor] = transition[k]
    self._cursor = (self._cursor + 1) % self.online_capacity
    self.online_size = min(self.online_size + 1, self.online_capacity)

  def online_state(self) -> Dict[str, np.ndarray]:
    """The online transitions (filled part, in storage order) and the counters, for checkpoints."""
    state = {k: v[:self.online_size] for k, v in self.online.items()}
    state["counters"] = np.array([self.online_size, self._cursor], np.int64)
    return state

  def load_online_state(self, state: Dict[str, np.ndarray]):
    size, cursor = (int(x) for x in state["counters"])
    if size > self.online_capacity:
      raise ValueError(f"{size} online transitions do not fit a buffer of {self.online_capacity}")
    for k in FIELDS:
      self.online[k][:size] = state[k]
    self.online_size, self._cursor = size, cursor

  def _take(self, key, idx):
    off = self.offline[key][np.minimum(idx, self.offline_size - 1)]
    if self.online_size == 0:
      return off
    on = self.online[key][np.clip(idx - self.offline_size, 0, self.online_size - 1)]
    is_on = (idx >= self.offline_size).reshape(idx.shape + (1,) * (off.ndim - idx.ndim))
    return np.where(is_on, on, off)

  def sample(self, rng: np.random.Generator, batch_size: int, chunk_len: int,
             discount: float) -> Dict[str, np.ndarray]:
    starts = rng.integers(0, self.size, size=batch_size)
    return chunk_batch(self._take, self.size, starts, chunk_len, discount)
