"""The run state: everything a run carries from one step to the next, and its checkpoint.

`RunState` is the single definition of what a checkpoint saves and restores:
the agents and keys (device), and per seed the replay buffer's online part,
the minibatch RNG, the environment's episode in progress and the counters
(host). Phases take the state and return it; its host parts (buffers, RNGs,
episodes) are updated in place as the environments and buffers live there.
In a population the device parts hold every member and the host lists hold
the members this process owns (`Placement.rows`), in that order.
"""

import dataclasses
from typing import Any, Dict, List

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


def checkpoint_items(state: RunState, rows, writes, meta: Dict, obs_dim: int, action_dim: int):
  """(device tree, {population index: (host tree, info)}, meta) of `state`, as the
  checkpointer saves them; `rows` are the population indices of the state's host lists
  and `writes` the ones this process saves."""
  ep = state.episodes
  device = {"agent": state.agents, "keys": state.keys, "eval_keys": state.eval_keys}
  members = {}
  for s, index in enumerate(rows):
    if index not in writes:
      continue
    host = {"buffer": state.buffers[s].online_state(),
            "queue": np.array(ep.queues[s], np.float32).reshape(-1, action_dim),
            "episode_actions": np.array(ep.actions[s], np.float32).reshape(-1, action_dim),
            "obs": np.asarray(ep.obs[s] if ep.obs[s] is not None else np.zeros(obs_dim),
                              np.float32)}
    info = {"episodes": ep.count[s], "ep_success": ep.successes[s], "skipped": state.skipped[s],
            "last": state.last[s], "summary": state.summaries[s],
            "rng": state.rngs[s].bit_generator.state}
    members[index] = (host, info)
  meta = dict(meta, step=state.step, fingerprints=state.fingerprints)
  return device, members, meta


def restore(state: RunState, device: Dict, members: Dict, rows, meta: Dict):
  """`state` with a checkpoint's device tree, counters and host arrays; returns (state, the
  observations the checkpoint saved per member, to check replayed environments against)."""
  state.agents, state.keys, state.eval_keys = device["agent"], device["keys"], device["eval_keys"]
  state.step, state.fingerprints = meta["step"], meta["fingerprints"]
  state.wall_time_s = meta["wall_time_s"]
  saved_obs = []
  for s, index in enumerate(rows):
    host, info = members[index]
    ep = state.episodes
    ep.count[s], ep.successes[s] = info["episodes"], info["ep_success"]
    state.skipped[s], state.last[s], state.summaries[s] = (info["skipped"], info["last"],
                                                           info["summary"])
    state.rngs[s].bit_generator.state = info["rng"]
    state.buffers[s].load_online_state(host["buffer"])
    ep.queues[s] = list(host["queue"])
    ep.actions[s] = list(host["episode_actions"])
    saved_obs.append(host["obs"])
  return state, saved_obs
