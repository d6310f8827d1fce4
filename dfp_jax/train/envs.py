"""One environment per member (seed), stepped together: open-loop action chunks, episodes,
evaluation.

Acting is one vmapped best-of-N' call for every member whose chunk queue is
empty; only those members consume a key, so each member's key stream is the
one it would have alone. Every reset is seeded, so an episode in progress can
be rebuilt from its reset seed and its actions so far (resuming a checkpoint).
A process holds the environments of the members it owns (`Placement.rows`);
acting is a call on the whole population, which in a multi-process run every
process makes at every step, so the calls stay collective.
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

import jax

from dfp_jax import parallel
from dfp_jax.train.updates import select_keys, split_keys


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


class SeedEnvs:
  """`len(seeds)` environments of one task, one per member, and how the policy acts in them."""

  def __init__(self, make_env: Callable, seeds: Sequence[int], chunk_len: int, act_fn: Callable,
               placement: Optional[parallel.Placement] = None):
    self.envs = [make_env() for _ in seeds]
    self.seeds = list(seeds)
    self.chunk_len = chunk_len
    self.act_fn = act_fn  # (agents, obs [M, O], keys [M, 2]) -> chunks [M, h * A]
    self.placement = placement or parallel.Placement(len(self.seeds))
    # Several processes: act at every step (a collective), whether or not a member needs to.
    self._always_act = jax.process_count() > 1

  @property
  def obs_dim(self) -> int:
    return self.envs[0].observation_space.shape[0]

  @property
  def action_dim(self) -> int:
    return self.envs[0].action_space.shape[0]

  def next_actions(self, agents, obs: Sequence[np.ndarray], keys, queues: List[List[np.ndarray]],
                   active: Sequence[bool]):
    """Next action of every active seed, refilling empty queues; returns (actions, keys)."""
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
    episodes.obs = [env.reset(seed=env_seed(s, 0))[0] for env, s in zip(self.envs, self.seeds)]

  def replay(self, episodes: Episodes) -> List[np.ndarray]:
    """Rebuild every environment mid-episode (seeded reset + the episode's actions so far)."""
    obs = []
    for env, seed, count, actions in zip(self.envs, self.seeds, episodes.count, episodes.actions):
      o = env.reset(seed=env_seed(seed, count))[0]
      for a in actions:
        o = env.step(a)[0]
      obs.append(o)
    return obs

  def step(self, agents, keys, episodes: Episodes, buffers) -> object:
    """One environment step of every seed with the policy's next action; returns keys.

    Each transition goes into that seed's replay buffer; a finished episode is
    counted and the environment reset with the next episode's seed.
    """
    actions, keys = self.next_actions(agents, episodes.obs, keys, episodes.queues,
                                      [True] * len(self.envs))
    for s, env in enumerate(self.envs):
      next_obs, reward, terminated, truncated, info = env.step(actions[s])
      buffers[s].add({"observations": episodes.obs[s], "actions": actions[s], "rewards": reward,
                      "masks": 1.0 - float(terminated),
                      "terminals": float(terminated or truncated),
                      "next_observations": next_obs})
      episodes.obs[s] = next_obs
      episodes.actions[s].append(np.asarray(actions[s], np.float32))
      if terminated or truncated:
        episodes.successes[s].append(float(info.get("success", 0.0)))
        episodes.count[s] += 1
        episodes.obs[s] = env.reset(seed=env_seed(self.seeds[s], episodes.count[s]))[0]
        episodes.actions[s] = []
        episodes.queues[s] = []
    return keys

  def evaluate(self, agents, keys, num_episodes: int, first_seed: int,
               watch: Optional[Callable] = None):
    """Success rate, return and length per seed over the same seeded episodes.

    `watch(episode, member, env, info)`, if given, is called after each reset
    (info None) and each step, e.g. to render frames (dfp_jax.video.Recorder).
    Returns (list of per-seed dicts, keys).
    """
    num = len(self.envs)
    stats = {k: np.zeros((num, num_episodes)) for k in ("success", "return", "length")}
    for ep in range(num_episodes):
      queues = [[] for _ in range(num)]
      obs = [env.reset(seed=first_seed + ep)[0] for env in self.envs]
      done = [False] * num
      for s, env in enumerate(self.envs) if watch else ():
        watch(ep, s, env, None)
      while parallel.any_process(not all(done)) if self._always_act else not all(done):
        actions, keys = self.next_actions(agents, obs, keys, queues, [not d for d in done])
        for s, env in enumerate(self.envs):
          if done[s]:
            continue
          obs[s], reward, terminated, truncated, info = env.step(actions[s])
          if watch:
            watch(ep, s, env, info)
          stats["return"][s, ep] += float(reward)
          stats["length"][s, ep] += 1
          if terminated or truncated:
            done[s] = True
            stats["success"][s, ep] = float(info.get("success", 0.0))
    results: List[Dict[str, float]] = [{k: float(v[s].mean()) for k, v in stats.items()}
                                       for s in range(num)]
    return results, keys
