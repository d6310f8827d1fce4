"""The members' environments: one training environment per member, stepped together with
open-loop action chunks, and batched evaluation.

Training: acting is one vmapped best-of-N' call for every member whose chunk
queue is empty; only those members consume a key, so each member's key stream
is the one it would have alone. Every reset is seeded, so an episode in
progress can be rebuilt from its reset seed and its actions so far (resuming a
checkpoint).

Evaluation runs `eval_envs` episodes of every member side by side, with one act
call per environment step for all of them. Episode j of member m acts with keys
folded from (the member's evaluation key, j, chunk index), so what an episode
does depends on neither `eval_envs` nor the workers.

The environments live in two `env_pool.EnvPool`s, the training ones and the
evaluation ones: in this process, or spread over `train.env_workers` worker
processes (same transitions either way; a lone training environment stays in
this process, where a worker would only add its round trip to every step). A
process holds the environments of the members it owns (`Placement.rows`);
acting is a call on the whole population, which in a multi-process run every
process makes at every step, so the calls stay collective.
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

import jax

from dfp_jax import parallel
from dfp_jax.train.env_pool import EnvPool
from dfp_jax.train.updates import EVAL_BLOCK, select_keys, split_keys


def env_seed(seed: int, episode: int) -> int:
  """Reset seed of a training episode: distinct per (run seed, episode)."""
  return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


@dataclasses.dataclass
class Episodes:
  """Per-seed state of the training environments (part of the run state, checkpointed)."""
  obs: List[Optional[np.ndarray]]        # current observation (None before the online phase)
  queues: List[List[np.ndarray]]         # rest of the open action chunk
  actions: List[List[np.ndarray]]        # actions of the current episode so far
  count: List[int]                       # finished training episodes
  successes: List[List[float]]           # successes since the last train row

  @classmethod
  def empty(cls, num_seeds: int) -> "Episodes":
    return cls([None] * num_seeds, [[] for _ in range(num_seeds)],
               [[] for _ in range(num_seeds)], [0] * num_seeds, [[] for _ in range(num_seeds)])


def default_eval_envs(eval_episodes: int, members: int, workers: int) -> int:
  """Episodes run side by side per member when train.eval_envs is None: enough to keep the
  workers busy (about 4 environments per worker, at least 16 in all), few enough that the
  environments' memory stays small."""
  return max(1, min(eval_episodes, max(16, 4 * workers) // max(members, 1)))


class MemberEnvs:
  """The environments of one task for the members this process holds, and how the policy
  acts in them (module docstring).

  `pool` holds the members' training environments (slots 0..L-1), `eval_pool` L x eval_envs
  environments for evaluation episodes (named as slots L.. in worker errors). `act_fn(agents, obs [M, O], keys [M, 2]) -> chunks [M, h*A]`;
  `eval_act_fn` as `updates.make_eval_act_fn`.
  """

  def __init__(self, make_env: Callable, seeds: Sequence[int], chunk_len: int, act_fn: Callable,
               placement: Optional[parallel.Placement] = None, *,
               eval_act_fn: Optional[Callable] = None, workers: int = 0, eval_envs: int = 1):
    self.seeds = list(seeds)
    self.chunk_len = chunk_len
    self.act_fn, self.eval_act_fn = act_fn, eval_act_fn
    self.placement = placement or parallel.Placement(len(self.seeds))
    self.eval_envs = max(1, eval_envs)
    self._make_env = make_env
    first = make_env()
    self.observation_space, self.action_space = first.observation_space, first.action_space
    num = len(self.seeds)
    # Training environments in workers only when there are several: a lone environment
    # gains nothing from a worker and pays its round trip every step.
    self.pool = EnvPool(make_env, num, min(workers, num) if num > 1 else 0,
                        self.observation_space, self.action_space, first=first)
    self.eval_pool = EnvPool(make_env, num * self.eval_envs, workers, self.observation_space,
                             self.action_space, first_slot=num)
    # Evaluations with videos render in this process.
    self._local = self.eval_pool if self.eval_pool.workers == 0 else None
    # Several processes: act at every step (a collective), whether or not a member needs to.
    self._always_act = jax.process_count() > 1

  @property
  def obs_dim(self) -> int:
    return self.observation_space.shape[0]

  @property
  def action_dim(self) -> int:
    return self.action_space.shape[0]

  def members_of(self, slots: Sequence[int]) -> List[int]:
    """The members (positions in `seeds`) whose environments are these pool slots."""
    num = len(self.seeds)
    return sorted({s if s < num else (s - num) // self.eval_envs for s in slots})

  def close(self):
    self.pool.close()
    self.eval_pool.close()
    if self._local is not None and self._local is not self.eval_pool:
      self._local.close()

  def next_actions(self, agents, obs: Sequence[np.ndarray], keys, queues: List[List[np.ndarray]],
                   active: Sequence[bool]):
    """Next action of every active member, refilling empty queues; returns (actions, keys)."""
    need = np.array([a and not q for a, q in zip(active, queues)])
    if need.any() or self._always_act:
      place = self.placement
      new_keys, act_keys = split_keys(keys)
      chunks = place.to_host(self.act_fn(agents, place.to_device(np.stack(obs), per_example=False),
                                         act_keys))
      keys = select_keys(place.to_device(need, per_example=False), new_keys, keys)
      for s in np.flatnonzero(need):
        queues[s] = list(chunks[s].reshape(self.chunk_len, self.action_dim))
    return [q.pop(0) if a else None for q, a in zip(queues, active)], keys

  def start(self, episodes: Episodes):
    """The online phase's first episodes."""
    obs = self.pool.reset({s: env_seed(seed, 0) for s, seed in enumerate(self.seeds)})
    episodes.obs = [obs[s] for s in range(len(self.seeds))]

  def replay(self, episodes: Episodes) -> List[np.ndarray]:
    """Rebuild every environment mid-episode (seeded reset + the episode's actions so far)."""
    obs = self.pool.reset({s: env_seed(seed, count) for s, (seed, count)
                           in enumerate(zip(self.seeds, episodes.count))})
    for t in range(max([len(a) for a in episodes.actions] + [0])):
      out = self.pool.step({s: a[t] for s, a in enumerate(episodes.actions) if t < len(a)})
      obs.update({s: r[0] for s, r in out.items()})
    return [obs[s] for s in range(len(self.seeds))]

  def step(self, agents, keys, episodes: Episodes, buffers) -> object:
    """One environment step of every member with the policy's next action; returns keys.

    Each transition goes into that member's replay buffer; a finished episode is
    counted and the environment reset with the next episode's seed.
    """
    num = len(self.seeds)
    actions, keys = self.next_actions(agents, episodes.obs, keys, episodes.queues, [True] * num)
    out = self.pool.step(dict(enumerate(actions)))
    ended = {}
    for s in range(num):
      next_obs, reward, terminated, truncated, success = out[s]
      buffers[s].add({"observations": episodes.obs[s], "actions": actions[s], "rewards": reward,
                      "masks": 1.0 - float(terminated),
                      "terminals": float(terminated or truncated),
                      "next_observations": next_obs})
      episodes.obs[s] = next_obs
      episodes.actions[s].append(np.asarray(actions[s], np.float32))
      if terminated or truncated:
        episodes.successes[s].append(success)
        episodes.count[s] += 1
        ended[s] = env_seed(self.seeds[s], episodes.count[s])
        episodes.actions[s] = []
        episodes.queues[s] = []
    for s, obs in self.pool.reset(ended).items():
      episodes.obs[s] = obs
    return keys

  def evaluate(self, agents, keys, num_episodes: int, first_seed: int,
               watch: Optional[Callable] = None):
    """Success rate, return and length per member over the same seeded episodes
    (episode j resets with seed first_seed + j).

    `watch(episode, member, env, info)`, if given, is called after each reset
    (info None) and each step, e.g. to render frames (dfp_jax.video.Recorder);
    such an evaluation runs in this process. Returns (list of per-member dicts,
    keys, per-episode {"success", "return", "length"} arrays [L, num_episodes]).
    """
    num, width = len(self.seeds), self.eval_envs
    place = self.placement
    pool = self.eval_pool
    if watch is not None and self.eval_pool.workers:
      if self._local is None:
        self._local = EnvPool(self._make_env, num * width, 0, self.observation_space,
                              self.action_space)
      pool = self._local
    keys, this = split_keys(keys)
    stats = {k: np.zeros((num, num_episodes)) for k in ("success", "return", "length")}
    padded = -(-width // EVAL_BLOCK) * EVAL_BLOCK
    obs = np.zeros((num, padded, self.obs_dim), self.observation_space.dtype)
    episode = np.full((num, padded), -1, np.int64)   # episode running in each slot (-1: none)
    chunk = np.zeros((num, padded), np.int64)        # its chunks so far
    queues = [[[] for _ in range(padded)] for _ in range(num)]
    started = [0] * num

    def slot(m, e):
      return m * width + e

    def start(m, e):
      """The member's next episode in slot e, or none left."""
      if started[m] >= num_episodes:
        episode[m, e] = -1
        return None
      episode[m, e], chunk[m, e], queues[m][e] = started[m], 0, []
      started[m] += 1
      return slot(m, e), first_seed + episode[m, e]

    def reset(pairs):
      begun = {(m, e): start(m, e) for m, e in pairs}
      first = pool.reset(dict(p for p in begun.values() if p is not None))
      for (m, e), p in begun.items():
        if p is not None:
          obs[m, e] = first[p[0]]
          if watch is not None:
            watch(int(episode[m, e]), m, pool.env(p[0]), None)

    reset([(m, e) for m in range(num) for e in range(width)])
    while True:
      live = episode >= 0
      if not (parallel.any_process(bool(live.any())) if self._always_act else live.any()):
        break
      need = live & np.array([[not q for q in row] for row in queues])
      if need.any() or self._always_act:
        chunks = place.to_host(self.eval_act_fn(
            agents, place.to_device(obs, per_example=False), this,
            place.to_device(np.maximum(episode, 0).astype(np.int32), per_example=False),
            place.to_device(chunk.astype(np.int32), per_example=False)))
        for m, e in zip(*np.nonzero(need)):
          queues[m][e] = list(chunks[m, e].reshape(self.chunk_len, self.action_dim))
          chunk[m, e] += 1
      running = list(zip(*np.nonzero(live)))
      out = pool.step({slot(m, e): queues[m][e].pop(0) for m, e in running})
      finished = []
      for m, e in running:
        o, reward, terminated, truncated, success = out[slot(m, e)]
        j = episode[m, e]
        obs[m, e] = o
        if watch is not None:
          watch(int(j), m, pool.env(slot(m, e)), {"success": success})
        stats["return"][m, j] += reward
        stats["length"][m, j] += 1
        if terminated or truncated:
          stats["success"][m, j] = success
          finished.append((m, e))
      reset(finished)
    results: List[Dict[str, float]] = [{k: float(v[s].mean()) for k, v in stats.items()}
                                       for s in range(num)]
    return results, keys, stats
