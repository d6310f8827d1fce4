"""Replay buffer of transitions and action-chunk sampling (Q-chunking).

Transitions live on the host in flat numpy arrays in time order, with
`terminals` marking the last transition of each episode (time-out or true
end) and `masks` = 0 where the task is solved (no bootstrapping past it).
The buffer starts with the offline data and grows with online transitions.
"""

from typing import Dict, Optional

import numpy as np

FIELDS = ("observations", "actions", "rewards", "masks", "terminals", "next_observations")


def chunk_batch(data, size: int, starts: np.ndarray, chunk_len: int,
                discount: float) -> Dict[str, np.ndarray]:
  """Action chunks a_{t:t+h} starting at `starts`, with their h-step returns.

  `data` is a dict of arrays in time order, or a function take(field, idx).

  Returns observations [B, O] (s_t), actions [B, h*A], rewards [B]
  (sum_i gamma^i r_{t+i} over the chunk's steps in its episode, also after a
  success inside it, as the released code), masks [B] (0 if the task was
  solved inside the chunk), valid [B] (0 if the chunk runs past the end of
  its episode or of the data: such chunks are masked out of the critic loss)
  and next_observations [B, O] (s_{t+h}).
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
  gammas = discount ** np.arange(chunk_len, dtype=np.float32)
  rewards = np.sum(take("rewards", idx) * gammas * same_episode, axis=1)
  return {
      "observations": take("observations", starts),
      "actions": take("actions", idx).reshape(len(starts), -1),
      "rewards": rewards.astype(np.float32),
      "masks": (~np.any(solved & same_episode, axis=1)).astype(np.float32),
      "valid": same_episode[:, -1].astype(np.float32),
      "next_observations": take("next_observations", idx[:, -1]),
  }


class ReplayBuffer:
  """The offline dataset (shared, never copied or written) plus online transitions, FIFO.

  The buffer holds at most `capacity` transitions (the released code's
  max(2M, N_offline + 1)): once full, each online transition replaces the
  oldest one held, offline data first. `capacity=None` keeps all offline data
  and the newest `online_capacity` online transitions instead. Seeds trained
  together share one offline dataset and keep their own online part
  (`online_capacity`: room for a run's online transitions).

  Transitions are read by age (0 = the oldest held), so sampling is uniform
  over what is held and a chunk never runs from the newest transition into
  the oldest. The offline data's last transition ends an episode, so no
  chunk runs from offline into online data.
  """

  def __init__(self, dataset: Dict[str, np.ndarray], online_capacity: int,
               capacity: Optional[int] = None):
    self.offline = {k: dataset[k] for k in FIELDS}
    self.offline_size = len(dataset["observations"])
    self.capacity = None if capacity is None else max(capacity, self.offline_size + 1)
    room = max(online_capacity, 0)
    if self.capacity is not None:
      room = min(room, self.capacity)
    self.online = {k: np.zeros((room,) + v.shape[1:], v.dtype) for k, v in self.offline.items()}
    self.online_added = 0  # online transitions added so far (also those since replaced)

  @property
  def room(self):
    """Slots for online transitions."""
    return len(self.online["observations"])

  @property
  def online_size(self):
    """Online transitions held."""
    return min(self.online_added, self.room)

  @property
  def offline_held(self):
    """Offline transitions held (the newest ones)."""
    if self.capacity is None:
      return self.offline_size
    return min(self.offline_size, self.capacity - self.online_size)

  @property
  def size(self):
    return self.offline_held + self.online_size

  def add(self, transition: Dict[str, np.ndarray]):
    """Append one transition (keys: FIELDS)."""
    if self.room == 0:
      raise ValueError("replay buffer has no room for online data")
    # With a capacity, online data is replaced only once it is the oldest held, which a
    # buffer with fewer slots than the capacity never reaches.
    if self.capacity is not None and self.room < self.capacity and self.online_added >= self.room:
      raise ValueError(f"replay buffer made for {self.room} online transitions is full")
    slot = self.online_added % self.room
    for k in FIELDS:
      self.online[k][slot] = transition[k]
    self.online_added += 1

  def online_state(self) -> Dict[str, np.ndarray]:
    """The online storage (filled part, in slot order) and the counter, for checkpoints."""
    state = {k: v[:self.online_size] for k, v in self.online.items()}
    state["counters"] = np.array([self.online_added], np.int64)
    return state

  def load_online_state(self, state: Dict[str, np.ndarray]):
    added = int(state["counters"][0])
    filled = min(added, self.room)
    if len(state["observations"]) != filled:
      raise ValueError(f"{len(state['observations'])} stored online transitions do not fit a "
                       f"buffer with room for {self.room} after {added} additions")
    for k in FIELDS:
      self.online[k][:filled] = state[k]
    self.online_added = added

  def _take(self, key, age):
    """Transitions by age (0 = the oldest held). age: int array with entries < size."""
    first_offline = self.offline_size - self.offline_held
    off = self.offline[key][np.clip(first_offline + age, 0, self.offline_size - 1)]
    if self.online_size == 0:
      return off
    k = self.online_added - self.online_size + (age - self.offline_held)  # online index
    on = self.online[key][np.maximum(k, 0) % self.room]
    is_on = (age >= self.offline_held).reshape(age.shape + (1,) * (off.ndim - age.ndim))
    return np.where(is_on, on, off)

  def sample(self, rng: np.random.Generator, batch_size: int, chunk_len: int,
             discount: float) -> Dict[str, np.ndarray]:
    starts = rng.integers(0, self.size, size=batch_size)
    return chunk_batch(self._take, self.size, starts, chunk_len, discount)

  def sample_mixed(self, rng: np.random.Generator, batch_size: int, chunk_len: int,
                   discount: float, offline_fraction: float,
                   mark_offline: bool = False) -> Dict[str, np.ndarray]:
    """round(offline_fraction * batch_size) chunks from the offline data, then the rest from
    the online data, each part uniform over what it holds (RLPD's symmetric sampling at 0.5).
    With no online data yet every chunk is offline, drawn as `sample` draws them. Needs a
    buffer that never overwrites offline data (capacity None). `mark_offline` adds
    `offline` [B]: 1 for the offline chunks (for a BC term on offline chunks only)."""
    if self.capacity is not None:
      raise ValueError("mixed offline/online batches need a buffer that keeps its offline data "
                       "(capacity None)")
    if self.online_size == 0:
      n_off, starts = batch_size, rng.integers(0, self.offline_size, size=batch_size)
    else:
      n_off = int(round(offline_fraction * batch_size))
      starts = np.concatenate([rng.integers(0, self.offline_size, size=n_off),
                               rng.integers(self.offline_size, self.size, size=batch_size - n_off)])
    batch = chunk_batch(self._take, self.size, starts, chunk_len, discount)
    if mark_offline:
      batch["offline"] = (np.arange(batch_size) < n_off).astype(np.float32)
    return batch
