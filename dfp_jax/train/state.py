"""The run state: everything a run carries from one step to the next, and its checkpoint.

`RunState` is the single definition of what a checkpoint saves and restores:
the agents and keys (device), and per seed the replay buffer's online part,
the minibatch RNG, the environment's episode in progress and the counters
(host). Phases take the state and return it; its host parts (buffers, RNGs,
episodes) are updated in place as the environments and buffers live there.
"""

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from dfp_jax.train.envs import Episodes


@dataclasses.dataclass
class RunState:
  agents: Any                       # agent states with a leading seed axis [S, ...] (device)
  keys: Any                         # update and acting keys [S, 2] (device)
  eval_keys: Any                    # evaluation keys [S, 2] (device), a stream of their own
  step: int                         # offline gradient steps, then offline_steps + env steps
  rngs: List[np.random.Generator]   # per-seed minibatch sampling
  episodes: Episodes                # per-seed training-environment episodes
  buffers: List[Any] = dataclasses.field(default_factory=list)  # per-seed ReplayBuffer
  skipped: List[int] = dataclasses.field(default_factory=list)  # updates skipped for NaN/inf
  last: List[Dict] = dataclasses.field(default_factory=list)    # latest evaluation per seed
  summaries: List[Dict] = dataclasses.field(default_factory=list)
  fingerprints: Dict[str, str] = dataclasses.field(default_factory=dict)  # shard -> dataset hash
  wall_time_s: float = 0.0          # training time before this process started (resumed runs)

  @classmethod
  def fresh(cls, agents, keys, eval_keys, seeds) -> "RunState":
    n = len(seeds)
    return cls(agents, keys, eval_keys, 0, [np.random.default_rng(s) for s in seeds],
               Episodes.empty(n), [], [0] * n, [{"success": float("nan")} for _ in range(n)],
               [{} for _ in range(n)], {}, 0.0)


def checkpoint_items(state: RunState, seeds, config: Dict, obs_dim: int, action_dim: int,
                     wall_time_s: float) -> Tuple[Dict, Dict, Dict]:
  """(device tree, host tree, meta) of `state`, as the checkpointer saves them."""
  ep = state.episodes
  device = {"agent": state.agents, "keys": state.keys, "eval_keys": state.eval_keys}
  host = {f"seed_{s}": {
      "buffer": state.buffers[s].online_state(),
      "queue": np.array(ep.queues[s], np.float32).reshape(-1, action_dim),
      "episode_actions": np.array(ep.actions[s], np.float32).reshape(-1, action_dim),
      "obs": np.asarray(ep.obs[s] if ep.obs[s] is not None else np.zeros(obs_dim), np.float32)}
      for s in range(len(seeds))}
  meta = {"step": state.step, "seeds": list(seeds), "config": config, "episodes": ep.count,
          "skipped": state.skipped, "ep_success": ep.successes, "last": state.last,
          "summaries": state.summaries, "fingerprints": state.fingerprints,
          "wall_time_s": wall_time_s, "rngs": [r.bit_generator.state for r in state.rngs]}
  return device, host, meta


def restore(state: RunState, device: Dict, meta: Dict) -> RunState:
  """`state` with a checkpoint's device tree and counters (host arrays: `load_host`)."""
  state.agents, state.keys, state.eval_keys = device["agent"], device["keys"], device["eval_keys"]
  state.step, state.skipped = meta["step"], meta["skipped"]
  state.episodes.count, state.episodes.successes = meta["episodes"], meta["ep_success"]
  state.last, state.summaries = meta["last"], meta["summaries"]
  state.fingerprints, state.wall_time_s = meta["fingerprints"], meta["wall_time_s"]
  for r, rng_state in zip(state.rngs, meta["rngs"]):
    r.bit_generator.state = rng_state
  return state


def load_host(state: RunState, host: Dict) -> Optional[List[np.ndarray]]:
  """Online replay data, open chunk queues and episode actions of a checkpoint's host tree;
  returns the observations it saved (to check the replayed environments against)."""
  saved_obs = []
  for s, buffer in enumerate(state.buffers):
    h = host[f"seed_{s}"]
    buffer.load_online_state(h["buffer"])
    state.episodes.queues[s] = list(h["queue"])
    state.episodes.actions[s] = list(h["episode_actions"])
    saved_obs.append(h["obs"])
  return saved_obs
