"""Offline-then-online training loop (SPEC Algorithm 1) and evaluation, for S seeds at once.

The edge of the library: environments, replay buffers, logging and the
progress bar live here; all the math is in the agent's jitted `update` / `act`
(any method in `agents.METHODS`, picked by `config.method`).
Seeds are a leading axis of the agent state, the batch and the keys, and every
update and acting call is one `jax.vmap` over it. Each seed owns its random
streams (init and update keys, minibatch sampling, environment resets), so
seed k of a vectorised run computes what a run of seed k alone computes.
"""

import functools
import json
import os
import time
from typing import Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from dfp_jax import agents, ogbench_data, parallel
from dfp_jax.metrics import MetricsLogger, plot_learning_curve, to_scalars
from dfp_jax.replay import ReplayBuffer


@jax.jit
def _split_keys(keys):
  """Per-seed split: keys [S, 2] -> (next keys [S, 2], subkeys [S, 2])."""
  pairs = jax.vmap(jax.random.split)(keys)
  return pairs[:, 0], pairs[:, 1]


@jax.jit
def _select(need, new_keys, keys):
  return jnp.where(need[:, None], new_keys, keys)


def env_seed(seed: int, episode: int) -> int:
  """Reset seed of a training episode: distinct per (run seed, episode)."""
  return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


class ChunkActor:
  """Open-loop chunk queues for S environments; new chunks come from one vmapped act call.

  Only seeds whose queue is empty consume a key, so each seed's key stream is
  the one it would have alone.
  """

  def __init__(self, act_fn, chunk_len: int, action_dim: int, num_seeds: int):
    self.act_fn, self.h, self.adim = act_fn, chunk_len, action_dim
    self.queues = [[] for _ in range(num_seeds)]

  def clear(self, s: int):
    self.queues[s] = []

  def actions(self, states, obs: Sequence[np.ndarray], keys, active: Sequence[bool]):
    """Next action of every active seed; returns (actions, keys)."""
    need = np.array([a and not q for a, q in zip(active, self.queues)])
    if need.any():
      new_keys, act_keys = _split_keys(keys)
      chunks = parallel.to_host(self.act_fn(states, np.stack(obs), act_keys))
      keys = _select(need, new_keys, keys)
      for s in np.flatnonzero(need):
        self.queues[s] = list(chunks[s].reshape(self.h, self.adim))
    return [q.pop(0) if a else None for q, a in zip(self.queues, active)], keys


def evaluate(states, envs, act_fn, keys, num_episodes: int, seed: int, chunk_len: int,
             action_dim: int):
  """Success rate, return and length per seed over the same seeded episodes.

  Returns (list of per-seed dicts, keys).
  """
  num_seeds = len(envs)
  stats = {k: np.zeros((num_seeds, num_episodes)) for k in ("success", "return", "length")}
  for ep in range(num_episodes):
    actor = ChunkActor(act_fn, chunk_len, action_dim, num_seeds)
    obs = [env.reset(seed=seed + ep)[0] for env in envs]
    done = [False] * num_seeds
    while not all(done):
      actions, keys = actor.actions(states, obs, keys, [not d for d in done])
      for s, env in enumerate(envs):
        if done[s]:
          continue
        obs[s], reward, terminated, truncated, info = env.step(actions[s])
        stats["return"][s, ep] += float(reward)
        stats["length"][s, ep] += 1
        if terminated or truncated:
          done[s] = True
          stats["success"][s, ep] = float(info.get("success", 0.0))
  return [{k: float(v[s].mean()) for k, v in stats.items()} for s in range(num_seeds)], keys


def make_update_fns(agent_update):
  """Jitted (offline, online) updates over a leading seed axis.

  Offline runs k steps per dispatch in a scan over stacked batches [k, S, B, ...].
  """

  def seeds_update(states, batches, keys, online):
    return jax.vmap(functools.partial(agent_update, online=online))(states, batches, keys)

  def scanned(states, batches, keys):
    def body(carry, batch):
      states, keys = carry
      keys, step_keys = _split_keys(keys)
      states, info = seeds_update(states, batch, step_keys, False)
      return (states, keys), info
    (states, keys), infos = jax.lax.scan(body, (states, keys), batches)
    return states, keys, jax.tree.map(lambda x: x[-1], infos)

  def online(states, batches, keys):
    keys, step_keys = _split_keys(keys)
    states, info = seeds_update(states, batches, step_keys, True)
    return states, keys, info

  return jax.jit(scanned), jax.jit(online)


def _stack(batches):
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def train_and_evaluate(config, workdir: str, seeds: Optional[Sequence[int]] = None,
                       seed_dirs: Optional[bool] = None) -> List[Dict]:
  """Train one task for one or several seeds (vectorised); returns per-seed summaries.

  `seeds` defaults to [config.seed]. Seed k writes to `<workdir>/seed_<k>/`
  when `seed_dirs` (default: when `seeds` is given), else to `workdir`. Each run dir gets config.json, train.csv, eval.csv,
  TensorBoard events, learning_curve.png and summary.json.
  """
  seed_dirs = seeds is not None if seed_dirs is None else seed_dirs
  seeds = [config.seed] if seeds is None else [int(s) for s in seeds]
  if not seed_dirs and len(seeds) > 1:
    raise ValueError("several seeds need seed_dirs")
  workdirs = ([os.path.join(workdir, f"seed_{s}") for s in seeds] if seed_dirs else [workdir])
  num_seeds = len(seeds)
  tc, ac = config.train, config.agent
  is_main = jax.process_index() == 0  # the one process that writes

  # Sharded data (the 100M dataset) is read one shard at a time, moving to the next
  # every `shard_interval` offline steps, as Q-chunking's loader does.
  rotate = config.env.shard_interval > 0 and ogbench_data.count_shards(
      config.env.task, config.env.dataset_dir) > 1
  load = functools.partial(ogbench_data.load_task, config.env.task, config.env.dataset_dir,
                           success_timing=config.env.success_timing)
  _, dataset, _ = load(shard=0) if rotate else load(num_shards=config.env.num_shards)
  make_env = functools.partial(ogbench_data.make_env, config.env.task,
                               success_timing=config.env.success_timing)
  envs = [make_env() for _ in seeds]
  eval_envs = [make_env() for _ in seeds]
  obs_dim = envs[0].observation_space.shape[0]
  action_dim = envs[0].action_space.shape[0]

  keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
  keys, init_keys = _split_keys(keys)
  method = agents.get(config.method)
  states = jax.vmap(lambda k: method.create(ac, obs_dim, action_dim, k))(init_keys)
  rngs = [np.random.default_rng(s) for s in seeds]

  def make_buffers(dataset):
    buffers = [ReplayBuffer(dataset, tc.online_steps) for _ in seeds]
    def sample_all():
      return _stack([b.sample(r, tc.batch_size, ac.chunk_len, ac.discount)
                     for b, r in zip(buffers, rngs)])
    return buffers, sample_all

  buffers, sample_all = make_buffers(dataset)
  agent_update = method.update
  multi_host = jax.process_count() > 1
  if multi_host and not tc.data_parallel:
    raise ValueError("a multi-process run needs train.data_parallel=True")
  if tc.data_parallel and jax.device_count() > 1:
    mesh = parallel.make_mesh()
    if tc.batch_size % mesh.size:
      raise ValueError(f"batch_size {tc.batch_size} must be divisible by the {mesh.size} devices")
    agent_update = parallel.data_parallel(method.update, mesh)
  if multi_host:
    # Every process samples the same global batch (same seeds) and transfers its shard.
    states, keys = parallel.to_global(jax.device_get((states, keys)), mesh, parallel.P())
    batch_axis = lambda lead: parallel.P(*([None] * lead), parallel.DATA_AXIS)
    global_batch = lambda b, lead: parallel.to_global(b, mesh, batch_axis(lead))
  else:
    global_batch = lambda b, lead: b
  offline_update, online_update = make_update_fns(agent_update)
  act_fn = jax.jit(jax.vmap(method.act))

  if not is_main:
    workdirs = []
  for d in workdirs:
    os.makedirs(d, exist_ok=True)
  for d, s in zip(workdirs, seeds):
    resolved = config.copy_and_resolve_references()
    resolved.seed = s
    with open(os.path.join(d, "config.json"), "w") as f:
      f.write(resolved.to_json_best_effort(indent=2))
  loggers = [MetricsLogger(d, tensorboard=tc.tensorboard) for d in workdirs]
  bar = tqdm(total=tc.offline_steps + tc.online_steps, desc="offline",
             disable=not (tc.progress_bar and is_main), dynamic_ncols=True, mininterval=2.0)
  last = [{"success": float("nan")} for _ in seeds]
  summaries = [{} for _ in seeds]
  t_start = time.time()

  def run_eval(step, phase, eval_keys):
    if tc.eval_episodes <= 0:
      return eval_keys
    t0 = time.time()
    results, eval_keys = evaluate(states, eval_envs, act_fn, eval_keys, tc.eval_episodes,
                                  tc.eval_seed, ac.chunk_len, action_dim)
    for s, res in enumerate(results):
      res["eval_time_s"] = time.time() - t0
      res["online"] = float(phase == "online")
      if loggers:
        loggers[s].write("eval", step, res)
      last[s].update(res)
    bar.set_postfix(phase=phase, success=f"{np.mean([r['success'] for r in results]):.2f}")
    return eval_keys

  def log_train(step, info, extra):
    info = parallel.to_host(info)  # once, then one row per seed
    for s, logger in enumerate(loggers):
      logger.write("train", step, {**to_scalars({k: v[s] for k, v in info.items()}), **extra[s]})

  # Evaluation draws from its own key stream so evaluating never changes training.
  keys, eval_keys = _split_keys(keys)

  # Offline phase (for DFP: behaviour cloning by drifting, + top-K in the offline-RL variant).
  k = max(1, tc.updates_per_dispatch)
  step = step_log = 0
  t_log = time.time()
  while step < tc.offline_steps:
    n = min(k, tc.offline_steps - step)
    if rotate:
      n = min(n, config.env.shard_interval - step % config.env.shard_interval)
      if step > 0 and step % config.env.shard_interval == 0:
        _, dataset, _ = load(shard=step // config.env.shard_interval)
        buffers, sample_all = make_buffers(dataset)
    batches = global_batch(_stack([sample_all() for _ in range(n)]), 2)  # [n, S, B, ...]
    states, keys, info = offline_update(states, batches, keys)
    prev, step = step, step + n
    bar.update(n)
    if step // tc.log_interval > prev // tc.log_interval or step == tc.offline_steps:
      jax.block_until_ready(info)  # so the rate below is a real one
      rate = (step - step_log) / max(time.time() - t_log, 1e-9)
      log_train(step, info, [{"steps_per_s": rate}] * num_seeds)
      step_log, t_log = step, time.time()
    if step // tc.eval_interval > prev // tc.eval_interval or step == tc.offline_steps:
      eval_keys = run_eval(step, "offline", eval_keys)
      t_log = time.time()  # steps/s counts training only
  if tc.offline_steps > 0 and tc.eval_episodes > 0:
    for s in range(num_seeds):
      summaries[s]["offline_success"] = last[s]["success"]

  # Online phase: best-of-N' acting, chunk queues, one update per env step.
  if tc.online_steps > 0:
    states = jax.jit(jax.vmap(method.start_online))(states)
    bar.set_description("online")
    episodes = [0] * num_seeds
    obs = [env.reset(seed=env_seed(s, 0))[0] for env, s in zip(envs, seeds)]
    actor = ChunkActor(act_fn, ac.chunk_len, action_dim, num_seeds)
    ep_success = [[] for _ in seeds]
    step_log, t_log = 0, time.time()
    for env_step in range(1, tc.online_steps + 1):
      actions, keys = actor.actions(states, obs, keys, [True] * num_seeds)
      for s, env in enumerate(envs):
        next_obs, reward, terminated, truncated, env_info = env.step(actions[s])
        buffers[s].add({"observations": obs[s], "actions": actions[s], "rewards": reward,
                        "masks": 1.0 - float(terminated),
                        "terminals": float(terminated or truncated),
                        "next_observations": next_obs})
        obs[s] = next_obs
        if terminated or truncated:
          ep_success[s].append(float(env_info.get("success", 0.0)))
          episodes[s] += 1
          obs[s] = env.reset(seed=env_seed(seeds[s], episodes[s]))[0]
          actor.clear(s)
      if env_step >= tc.start_training:
        states, keys, info = online_update(states, global_batch(sample_all(), 1), keys)
        if env_step % tc.log_interval == 0:
          jax.block_until_ready(info)
          rate = (env_step - step_log) / max(time.time() - t_log, 1e-9)
          extra = []
          for s in range(num_seeds):
            row = {"steps_per_s": rate, "episodes": episodes[s]}
            if ep_success[s]:
              row["train_success"] = float(np.mean(ep_success[s]))
              ep_success[s] = []
            extra.append(row)
          log_train(tc.offline_steps + env_step, info, extra)
          step_log, t_log = env_step, time.time()
      bar.update(1)
      if env_step % tc.eval_interval == 0 or env_step == tc.online_steps:
        eval_keys = run_eval(tc.offline_steps + env_step, "online", eval_keys)
        t_log = time.time()
    for s in range(num_seeds):
      summaries[s]["online_success"] = last[s]["success"]
  bar.close()

  wall = time.time() - t_start
  for s in range(num_seeds):
    summaries[s].update({
        "final_success": last[s]["success"], "final_return": last[s].get("return", np.nan),
        "wall_time_s": wall, "num_seeds_vectorised": num_seeds,
        "num_devices": jax.device_count(), "num_processes": jax.process_count(),
        "offline_steps": tc.offline_steps, "online_steps": tc.online_steps,
        "task": config.env.task, "seed": seeds[s]})
  for s, (d, logger) in enumerate(zip(workdirs, loggers)):
    logger.close()
    if tc.eval_episodes > 0:
      plot_learning_curve(d, tc.offline_steps)
    with open(os.path.join(d, "summary.json"), "w") as f:
      json.dump(summaries[s], f, indent=2)
  return summaries
