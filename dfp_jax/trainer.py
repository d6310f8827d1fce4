"""Offline-then-online training loop (SPEC Algorithm 1) and evaluation.

The edge of the library: environments, the replay buffer, logging and the
progress bar live here; all the math is in the jitted `dfp.update` / `dfp.act`.
"""

import functools
import json
import os
import time
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from dfp_jax import dfp, ogbench_data, parallel
from dfp_jax.metrics import MetricsLogger, plot_learning_curve, to_scalars
from dfp_jax.replay import ReplayBuffer


def evaluate(agent, env, act_fn, key, num_episodes: int, seed: int) -> Dict[str, float]:
  """Success rate, return and length over `num_episodes` seeded episodes.

  Chunks are executed open loop: a new chunk is drawn when the queue empties.
  """
  h, adim = agent.config.chunk_len, agent.action_dim
  successes, returns, lengths = [], [], []
  for ep in range(num_episodes):
    obs, _ = env.reset(seed=seed + ep)
    queue, done, ret, length, info = [], False, 0.0, 0, {}
    while not done:
      if not queue:
        key, act_key = jax.random.split(key)
        queue = list(np.asarray(act_fn(agent, jnp.asarray(obs), act_key)).reshape(h, adim))
      obs, reward, terminated, truncated, info = env.step(queue.pop(0))
      ret += float(reward)
      length += 1
      done = terminated or truncated
    successes.append(float(info.get("success", 0.0)))
    returns.append(ret)
    lengths.append(length)
  return {"success": float(np.mean(successes)), "return": float(np.mean(returns)),
          "length": float(np.mean(lengths))}


def _stack(batches):
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def make_update_fns(agent_update):
  """Jitted (offline, online) updates; offline runs k steps per dispatch in a scan."""

  def scanned(agent, batches, key, use_topk):
    def body(carry, batch):
      agent, key = carry
      key, step_key = jax.random.split(key)
      agent, info = agent_update(agent, batch, step_key, use_topk=use_topk)
      return (agent, key), info
    (agent, _), infos = jax.lax.scan(body, (agent, key), batches)
    return agent, jax.tree.map(lambda x: x[-1], infos)

  return (jax.jit(scanned, static_argnums=3),
          jax.jit(agent_update, static_argnames="use_topk"))


def train_and_evaluate(config, workdir: str, data=None) -> Dict[str, float]:
  """Train one agent on one task; writes config, CSV/TensorBoard metrics and summary.json.

  `data` optionally passes (env, eval_env, train_dataset) to skip loading.
  """
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  tc, ac = config.train, config.agent
  # Sharded data (the 100M dataset) is read one shard at a time, moving to the next
  # every `shard_interval` offline steps, as Q-chunking's loader does.
  rotate = data is None and config.env.shard_interval > 0 and ogbench_data.count_shards(
      config.env.task, config.env.dataset_dir) > 1
  load = functools.partial(ogbench_data.load_task, config.env.task, config.env.dataset_dir,
                           success_timing=config.env.success_timing)
  if data is None:
    env, dataset, _ = load(shard=0) if rotate else load(num_shards=config.env.num_shards)
    eval_env = ogbench_data.make_env(config.env.task, success_timing=config.env.success_timing)
  else:
    env, eval_env, dataset = data
  obs_dim = env.observation_space.shape[0]
  action_dim = env.action_space.shape[0]

  key = jax.random.PRNGKey(config.seed)
  key, init_key = jax.random.split(key)
  agent = dfp.create(ac, obs_dim, action_dim, init_key)
  rng = np.random.default_rng(config.seed)
  capacity = len(dataset["observations"]) + tc.online_steps
  buffer = ReplayBuffer(dataset, capacity)
  agent_update = dfp.update
  if tc.data_parallel and jax.device_count() > 1:
    mesh = parallel.make_mesh()
    if tc.batch_size % mesh.size:
      raise ValueError(f"batch_size {tc.batch_size} must be divisible by the {mesh.size} devices")
    agent_update = parallel.data_parallel(dfp.update, mesh)
  offline_update, online_update = make_update_fns(agent_update)
  act_fn = jax.jit(dfp.act)
  sample = functools.partial(buffer.sample, rng, tc.batch_size, ac.chunk_len, ac.discount)

  logger = MetricsLogger(workdir, tensorboard=tc.tensorboard)
  total = tc.offline_steps + tc.online_steps
  bar = tqdm(total=total, desc="offline", disable=not tc.progress_bar, dynamic_ncols=True,
             mininterval=2.0)
  last = {"success": float("nan")}
  summary = {}
  t_start = time.time()

  def run_eval(step, phase):
    nonlocal key
    if tc.eval_episodes <= 0:
      return
    key, eval_key = jax.random.split(key)
    t0 = time.time()
    res = evaluate(agent, eval_env, act_fn, eval_key, tc.eval_episodes, tc.eval_seed)
    res["eval_time_s"] = time.time() - t0
    res["online"] = float(phase == "online")
    logger.write("eval", step, res)
    last.update(res)
    bar.set_postfix(phase=phase, success=f"{res['success']:.2f}")
    return res

  # Offline phase: behaviour cloning by drifting (+ top-K in the offline-RL variant).
  use_topk = dfp.uses_topk(agent, online=False)
  k = max(1, tc.updates_per_dispatch)
  step = step_log = 0
  t_log = time.time()
  while step < tc.offline_steps:
    n = min(k, tc.offline_steps - step)
    if rotate:
      n = min(n, config.env.shard_interval - step % config.env.shard_interval)
      if step > 0 and step % config.env.shard_interval == 0:
        _, dataset, _ = load(shard=step // config.env.shard_interval)
        buffer = ReplayBuffer(dataset, len(dataset["observations"]) + tc.online_steps)
        sample = functools.partial(buffer.sample, rng, tc.batch_size, ac.chunk_len, ac.discount)
    key, upd_key = jax.random.split(key)
    agent, info = offline_update(agent, _stack([sample() for _ in range(n)]), upd_key, use_topk)
    prev, step = step, step + n
    bar.update(n)
    if step // tc.log_interval > prev // tc.log_interval or step == tc.offline_steps:
      row = to_scalars(info)  # waits for the device, so the rate below is a real one
      row["steps_per_s"] = (step - step_log) / max(time.time() - t_log, 1e-9)
      logger.write("train", step, row)
      step_log, t_log = step, time.time()
    if step // tc.eval_interval > prev // tc.eval_interval or step == tc.offline_steps:
      run_eval(step, "offline")
      t_log = time.time()  # steps/s counts training only
  if tc.offline_steps > 0 and tc.eval_episodes > 0:
    summary["offline_success"] = last["success"]

  # Online phase: best-of-N' acting, chunk queue, one update per env step.
  if tc.online_steps > 0:
    agent = dfp.reset_anchor(agent)
    use_topk = dfp.uses_topk(agent, online=True)
    bar.set_description("online")
    episode, step_log, t_log = 0, 0, time.time()
    obs, _ = env.reset(seed=tc.train_seed + episode)
    queue, ep_return, ep_success = [], 0.0, []
    h = ac.chunk_len
    for env_step in range(1, tc.online_steps + 1):
      if not queue:
        key, act_key = jax.random.split(key)
        queue = list(np.asarray(act_fn(agent, jnp.asarray(obs), act_key)).reshape(h, action_dim))
      action = queue.pop(0)
      next_obs, reward, terminated, truncated, env_info = env.step(action)
      ep_return += float(reward)
      buffer.add({"observations": obs, "actions": action, "rewards": reward,
                  "masks": 1.0 - float(terminated), "terminals": float(terminated or truncated),
                  "next_observations": next_obs})
      obs = next_obs
      if terminated or truncated:
        ep_success.append(float(env_info.get("success", 0.0)))
        episode += 1
        obs, _ = env.reset(seed=tc.train_seed + episode)
        queue = []
      if env_step >= tc.start_training:
        key, upd_key = jax.random.split(key)
        agent, info = online_update(agent, sample(), upd_key, use_topk=use_topk)
        if env_step % tc.log_interval == 0:
          row = to_scalars(info)
          row["steps_per_s"] = (env_step - step_log) / max(time.time() - t_log, 1e-9)
          row["episodes"] = episode
          if ep_success:
            row["train_success"] = float(np.mean(ep_success))
            ep_success = []
          logger.write("train", tc.offline_steps + env_step, row)
          step_log, t_log = env_step, time.time()
      bar.update(1)
      if env_step % tc.eval_interval == 0 or env_step == tc.online_steps:
        run_eval(tc.offline_steps + env_step, "online")
        t_log = time.time()
    summary["online_success"] = last["success"]
  bar.close()
  logger.close()
  if tc.eval_episodes > 0:
    plot_learning_curve(workdir, tc.offline_steps)

  summary.update({"final_success": last["success"], "final_return": last.get("return", np.nan),
                  "wall_time_s": time.time() - t_start, "offline_steps": tc.offline_steps,
                  "online_steps": tc.online_steps, "task": config.env.task, "seed": config.seed})
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary
