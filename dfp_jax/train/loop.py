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
import shutil
import signal
import threading
import time
from typing import Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from dfp_jax import agents, parallel
from dfp_jax.data import tasks
from dfp_jax.data.replay import ReplayBuffer
from dfp_jax.train import checkpoint, validation
from dfp_jax.train.metrics import MetricsLogger, plot_learning_curve, to_scalars


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


def guard_nonfinite(update, skip: bool):
  """`update` that reports NaN/inf in its metrics or new state as info['nonfinite'] (0 or 1).

  With `skip`, such an update leaves the state as it was (the step is skipped).
  """

  def guarded(state, batch, key, **kwargs):
    new, info = update(state, batch, key, **kwargs)
    leaves = [x for x in jax.tree.leaves((new, info)) if jnp.issubdtype(x.dtype, jnp.inexact)]
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
    if skip:
      new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    return new, {**info, "nonfinite": 1.0 - finite.astype(jnp.float32)}

  return guarded


def make_update_fns(agent_update, skip_nonfinite: bool = False):
  """Jitted (offline, online) updates over a leading seed axis.

  Offline runs k steps per dispatch in a scan over stacked batches [k, S, B, ...];
  its info is the last step's, except 'nonfinite', which counts the bad steps.
  """
  agent_update = guard_nonfinite(agent_update, skip_nonfinite)

  def seeds_update(states, batches, keys, online):
    return jax.vmap(functools.partial(agent_update, online=online))(states, batches, keys)

  def scanned(states, batches, keys):
    def body(carry, batch):
      states, keys = carry
      keys, step_keys = _split_keys(keys)
      states, info = seeds_update(states, batch, step_keys, False)
      return (states, keys), info
    (states, keys), infos = jax.lax.scan(body, (states, keys), batches)
    info = jax.tree.map(lambda x: x[-1], infos)
    info["nonfinite"] = infos["nonfinite"].sum(0)
    return states, keys, info

  def online(states, batches, keys):
    keys, step_keys = _split_keys(keys)
    states, info = seeds_update(states, batches, step_keys, True)
    return states, keys, info

  return jax.jit(scanned), jax.jit(online)


class Interrupted(Exception):
  """SIGTERM/SIGINT arrived; the run saved a checkpoint and stopped."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.signum = signum


class NonFiniteError(Exception):
  """A loss or the parameters became NaN/inf (train.on_nonfinite='stop')."""


class StopSignals:
  """Context manager: SIGTERM/SIGINT set `.signum` so the loop can save and stop cleanly.

  A second SIGINT interrupts at once. Installed only in the main thread.
  """

  def __init__(self):
    self.signum = None
    self._old = {}

  def _handle(self, signum, frame):
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


class _FaultWatch:
  """Checks the 'nonfinite' flags of each dispatch one dispatch late, so the host never waits."""

  def __init__(self, skip: bool, skipped: List[int], on_fault):
    self.skip, self.skipped, self.on_fault = skip, skipped, on_fault
    self._pending = None

  def push(self, flags, steps):
    self.flush()
    self._pending = (flags, steps)

  def flush(self):
    if self._pending is None:
      return
    flags, (first, last) = self._pending
    self._pending = None
    bad = np.asarray(parallel.to_host(flags))
    if not bad.any():
      return
    if self.skip:
      for s in np.flatnonzero(bad):
        self.skipped[s] += int(bad[s])
    else:
      self.on_fault(first, last, [int(s) for s in np.flatnonzero(bad)])


def replay_episode(env, reset_seed: int, actions: Sequence[np.ndarray]):
  """Rebuild an environment mid-episode: its seeded reset, then the episode's actions so far."""
  obs = env.reset(seed=reset_seed)[0]
  for a in actions:
    obs = env.step(a)[0]
  return obs


_RUN_FILES = ("config.json", "train.csv", "eval.csv", "summary.json", "learning_curve.png", "tb")


def _prepare_workdir(run_dirs, seeds, resolved, ckpt_dir, overwrite, is_main):
  """What to do with what the run dirs already hold.

  Returns ('fresh', None), ('resume', None) or ('complete', summaries). Raises
  CheckpointError for a workdir whose run has another config; with `overwrite`
  the run's files are cleared instead. The same run killed before its first
  checkpoint starts again from step 0.
  """
  existing = [d for d in run_dirs if any(os.path.exists(os.path.join(d, f)) for f in _RUN_FILES)]
  has_ckpt = os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))
  mode, found = "fresh", None
  if not overwrite and (existing or has_ckpt):
    for d, seed in zip(run_dirs, seeds):
      path = os.path.join(d, "config.json")
      if os.path.exists(path):
        checkpoint.check_same_config(d, checkpoint.read_json(path), resolved(seed))
    summaries = [os.path.join(d, "summary.json") for d in run_dirs]
    if has_ckpt:
      mode = "resume"
    elif all(os.path.exists(p) for p in summaries):
      mode, found = "complete", [checkpoint.read_json(p) for p in summaries]
    elif is_main:
      print(f"{existing[0]}: this run stopped before its first checkpoint; starting it again")
  _sync("workdir checked")  # every process has decided before anything is deleted
  if mode == "fresh" and (existing or has_ckpt) and is_main:
    for d in run_dirs:
      for f in _RUN_FILES:
        path = os.path.join(d, f)
        if os.path.isdir(path):
          shutil.rmtree(path)
        elif os.path.exists(path):
          os.remove(path)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
  _sync("workdir ready")
  return mode, found


def _sync(name):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _any_process(flag: bool) -> bool:
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


def _stack(batches):
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def train_and_evaluate(config, workdir: str, seeds: Optional[Sequence[int]] = None,
                       seed_dirs: Optional[bool] = None, overwrite: bool = False) -> List[Dict]:
  """Train one task for one or several seeds (vectorised); returns per-seed summaries.

  `seeds` defaults to [config.seed]. Seed k writes to `<workdir>/seed_<k>/`
  when `seed_dirs` (default: when `seeds` is given), else to `workdir`. Each run dir gets config.json, train.csv, eval.csv,
  TensorBoard events, learning_curve.png and summary.json; checkpoints of
  all seeds go to `<workdir>/checkpoints/`.

  A workdir that already holds this run resumes from its latest checkpoint
  (or returns the summaries of a finished run); one that holds another run is
  an error unless `overwrite`. SIGTERM/SIGINT save a checkpoint and raise
  Interrupted; a NaN/inf raises NonFiniteError (train.on_nonfinite='stop').
  """
  validation.check_config(config)
  seed_dirs = seeds is not None if seed_dirs is None else seed_dirs
  seeds = [config.seed] if seeds is None else [int(s) for s in seeds]
  if not seed_dirs and len(seeds) > 1:
    raise ValueError("several seeds need seed_dirs")
  run_dirs = ([os.path.join(workdir, f"seed_{s}") for s in seeds] if seed_dirs else [workdir])
  ckpt_dir = os.path.join(workdir, "checkpoints")
  num_seeds = len(seeds)
  tc, ac = config.train, config.agent
  total_steps = tc.offline_steps + tc.online_steps
  is_main = jax.process_index() == 0  # the one process that writes

  def resolved(seed):
    c = config.copy_and_resolve_references()
    c.seed = seed
    return json.loads(c.to_json_best_effort())

  mode, found = _prepare_workdir(run_dirs, seeds, resolved, ckpt_dir, overwrite, is_main)
  if mode == "complete":
    if is_main:
      print(f"{workdir}: this run is already complete; pass --overwrite to train it again")
    return found

  # Sharded data (the 100M dataset) is read one shard at a time, moving to the next
  # every `shard_interval` offline steps, as Q-chunking's loader does.
  rotate = config.env.shard_interval > 0 and tasks.count_shards(config.env) > 1
  load = functools.partial(tasks.load_task, config.env)
  shard_of = lambda step: min(step, max(tc.offline_steps - 1, 0)) // config.env.shard_interval
  make_env = functools.partial(tasks.make_env, config.env)
  envs = [make_env() for _ in seeds]
  eval_envs = [make_env() for _ in seeds]
  obs_dim = envs[0].observation_space.shape[0]
  action_dim = envs[0].action_space.shape[0]

  keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
  keys, init_keys = _split_keys(keys)
  method = agents.get(config.method)
  states = jax.vmap(lambda k: method.create(ac, obs_dim, action_dim, k))(init_keys)
  rngs = [np.random.default_rng(s) for s in seeds]

  agent_update = method.update
  multi_host = jax.process_count() > 1
  if multi_host and not tc.data_parallel:
    raise validation.ConfigError("a multi-process run needs train.data_parallel=True")
  if tc.data_parallel and jax.device_count() > 1:
    mesh = parallel.make_mesh()
    if tc.batch_size % mesh.size:
      raise validation.ConfigError(
          f"config train.batch_size={tc.batch_size}: must be divisible by the {mesh.size} devices")
    agent_update = parallel.data_parallel(method.update, mesh)
  # Evaluation draws from its own key stream so evaluating never changes training.
  keys, eval_keys = _split_keys(keys)
  if multi_host:
    # Every process samples the same global batch (same seeds) and transfers its shard.
    states, keys, eval_keys = parallel.to_global(
        jax.device_get((states, keys, eval_keys)), mesh, parallel.P())
    batch_axis = lambda lead: parallel.P(*([None] * lead), parallel.DATA_AXIS)
    global_batch = lambda b, lead: parallel.to_global(b, mesh, batch_axis(lead))
  else:
    global_batch = lambda b, lead: b
  skip_nonfinite = tc.on_nonfinite == "skip"
  offline_update, online_update = make_update_fns(agent_update, skip_nonfinite)
  act_fn = jax.jit(jax.vmap(method.act))

  # Loop state beyond the arrays: everything a checkpoint must hold to continue exactly.
  step = 0                        # offline gradient steps, then offline_steps + env steps
  episodes = [0] * num_seeds      # finished online training episodes per seed
  episode_actions = [[] for _ in seeds]  # actions of each seed's current episode
  ep_success = [[] for _ in seeds]       # successes since the last train row
  skipped = [0] * num_seeds       # updates skipped for NaN/inf (on_nonfinite='skip')
  last = [{"success": float("nan")} for _ in seeds]
  summaries = [{} for _ in seeds]
  fingerprints = {}               # dataset shard -> fingerprint
  wall_before = 0.0
  actor = ChunkActor(act_fn, ac.chunk_len, action_dim, num_seeds)
  obs = None

  ckpt = (checkpoint.Checkpointer(ckpt_dir, tc.keep_checkpoints, tc.async_checkpointing)
          if tc.checkpoint_interval > 0 or mode == "resume" else None)
  host_arrays = None
  if mode == "resume":
    latest = ckpt.latest_step()
    meta = ckpt.read_meta(latest)
    if meta.get("seeds") != seeds:
      raise checkpoint.CheckpointError(
          f"{ckpt_dir} holds seeds {meta.get('seeds')}, this run asks for {seeds}; "
          "use the same --seeds, another --workdir, or --overwrite")
    checkpoint.check_same_config(ckpt_dir, meta.get("config", {}), resolved(seeds[0]))
    device, host_arrays, meta = ckpt.restore(
        latest, {"agent": states, "keys": keys, "eval_keys": eval_keys}, meta)
    states, keys, eval_keys = device["agent"], device["keys"], device["eval_keys"]
    step, episodes, skipped = meta["step"], meta["episodes"], meta["skipped"]
    ep_success, last, summaries = meta["ep_success"], meta["last"], meta["summaries"]
    fingerprints, wall_before = meta["fingerprints"], meta["wall_time_s"]
    for r, state in zip(rngs, meta["rngs"]):
      r.bit_generator.state = state
    if is_main:
      print(f"resuming {workdir} from its checkpoint at step {step}")

  shard = shard_of(step) if rotate else None
  _, dataset, _ = load(shard=shard) if rotate else load(num_shards=config.env.num_shards)

  def check_fingerprint(dataset, shard):
    fp = checkpoint.dataset_fingerprint(dataset)
    key = str(shard)
    if fingerprints.setdefault(key, fp) != fp:
      raise checkpoint.CheckpointError(
          f"the dataset of {config.env.task} in {config.env.dataset_dir} differs from the one "
          f"this run's checkpoint trained on; restore it, or pass --overwrite to start again")

  check_fingerprint(dataset, shard)

  def make_buffers(dataset):
    capacity = None if tc.replay_keep_offline else tc.replay_capacity
    buffers = [ReplayBuffer(dataset, tc.online_steps, capacity) for _ in seeds]
    def sample_all():
      return _stack([b.sample(r, tc.batch_size, ac.chunk_len, ac.discount)
                     for b, r in zip(buffers, rngs)])
    return buffers, sample_all

  buffers, sample_all = make_buffers(dataset)
  online_started = step > tc.offline_steps
  if host_arrays is not None:
    for s in range(num_seeds):
      h = host_arrays[f"seed_{s}"]
      buffers[s].load_online_state(h["buffer"])
      actor.queues[s] = list(h["queue"])
      episode_actions[s] = list(h["episode_actions"])
    if online_started:  # environments mid-episode: replay each one's episode so far
      obs = [replay_episode(env, env_seed(seeds[s], episodes[s]), episode_actions[s])
             for s, env in enumerate(envs)]
      gap = max(float(np.max(np.abs(o - host_arrays[f"seed_{s}"]["obs"])))
                for s, o in enumerate(obs))
      if gap > 1e-5 and is_main:
        print(f"warning: replayed environments differ from the checkpoint's by {gap:.2e}; "
              "the resumed run will not exactly match an uninterrupted one")

  workdirs = run_dirs if is_main else []
  for d in workdirs:
    os.makedirs(d, exist_ok=True)
  for d, s in zip(workdirs, seeds):
    with open(os.path.join(d, "config.json"), "w") as f:
      json.dump(resolved(s), f, indent=2)
  loggers = [MetricsLogger(d, tensorboard=tc.tensorboard,
                           resume_step=step if mode == "resume" else None) for d in workdirs]
  bar = tqdm(total=total_steps, initial=step, desc="offline" if step < tc.offline_steps else "online",
             disable=not (tc.progress_bar and is_main), dynamic_ncols=True, mininterval=2.0)
  t_start = time.time()

  def on_fault(first, last_step, bad_seeds):
    if ckpt is not None:
      ckpt.wait()
    good = ckpt.latest_step() if ckpt is not None else None
    where = (f"the last good checkpoint is step {good} in {ckpt_dir}" if good is not None
             else "there is no checkpoint yet")
    raise NonFiniteError(
        f"NaN or inf in the losses or parameters in steps {first + 1}-{last_step} "
        f"(seed {', '.join(str(seeds[s]) for s in bad_seeds)}); stopped, {where}. "
        "Set train.on_nonfinite=skip to skip such updates instead")

  watch = _FaultWatch(skip_nonfinite, skipped, on_fault)

  def save(step):
    if ckpt is None:
      return
    watch.flush()  # never save a state that holds NaN/inf
    host = {f"seed_{s}": {
        "buffer": buffers[s].online_state(),
        "queue": np.array(actor.queues[s], np.float32).reshape(-1, action_dim),
        "episode_actions": np.array(episode_actions[s], np.float32).reshape(-1, action_dim),
        "obs": np.asarray(obs[s] if obs is not None else np.zeros(obs_dim), np.float32)}
        for s in range(num_seeds)}
    meta = {"step": step, "seeds": seeds, "config": resolved(seeds[0]), "episodes": episodes,
            "skipped": skipped, "ep_success": ep_success, "last": last, "summaries": summaries,
            "fingerprints": fingerprints, "wall_time_s": wall_before + time.time() - t_start,
            "rngs": [r.bit_generator.state for r in rngs]}
    ckpt.save(step, {"agent": states, "keys": keys, "eval_keys": eval_keys}, host, meta)

  def at_boundary(step, phase_end):
    """Checkpoint when due; on a stop signal, checkpoint and stop."""
    stop = signals.signum is not None
    if multi_host:  # processes agree on stopping at log boundaries (a collective)
      stop = (step % tc.log_interval == 0 or phase_end) and _any_process(stop)
    if stop or phase_end or (tc.checkpoint_interval and step % tc.checkpoint_interval == 0):
      save(step)
    if stop:
      if ckpt is not None:
        ckpt.wait()
      name = signal.Signals(signals.signum).name if signals.signum else "signal"
      where = f"checkpoint saved in {ckpt_dir}" if ckpt is not None else "no checkpointing"
      raise Interrupted(signals.signum or signal.SIGTERM,
                        f"{name} at step {step}: {where}; rerun the same command to resume")

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
    watch.flush()
    info = parallel.to_host(info)  # once, then one row per seed
    for s, logger in enumerate(loggers):
      row = {**to_scalars({k: v[s] for k, v in info.items() if k != "nonfinite"}), **extra[s]}
      if skip_nonfinite:
        row["skipped_steps"] = skipped[s]
      logger.write("train", step, row)

  signals = StopSignals()
  try:
    with signals:
      # Offline phase (for DFP: behaviour cloning by drifting, + top-K in the offline-RL variant).
      # Dispatches end on multiples of updates_per_dispatch and on every checkpoint, shard
      # and phase boundary, so a resumed run dispatches exactly as an uninterrupted one.
      k = max(1, tc.updates_per_dispatch)
      step_log, t_log = step, time.time()
      while step < tc.offline_steps:
        n = min(k - step % k, tc.offline_steps - step)
        if tc.checkpoint_interval:
          n = min(n, tc.checkpoint_interval - step % tc.checkpoint_interval)
        if rotate:
          n = min(n, config.env.shard_interval - step % config.env.shard_interval)
          if shard_of(step) != shard:
            shard = shard_of(step)
            _, dataset, _ = load(shard=shard)
            check_fingerprint(dataset, shard)
            buffers, sample_all = make_buffers(dataset)
        batches = global_batch(_stack([sample_all() for _ in range(n)]), 2)  # [n, S, B, ...]
        states, keys, info = offline_update(states, batches, keys)
        watch.push(info["nonfinite"], (step, step + n))
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
        if step == tc.offline_steps and tc.eval_episodes > 0:
          for s in range(num_seeds):
            summaries[s]["offline_success"] = last[s]["success"]
        at_boundary(step, step == tc.offline_steps)

      # Online phase: best-of-N' acting, chunk queues, one update per env step.
      if step < total_steps:
        bar.set_description("online")
        if not online_started:
          states = jax.jit(jax.vmap(method.start_online))(states)
          obs = [env.reset(seed=env_seed(s, 0))[0] for env, s in zip(envs, seeds)]
        step_log, t_log = step - tc.offline_steps, time.time()
        for env_step in range(step - tc.offline_steps + 1, tc.online_steps + 1):
          actions, keys = actor.actions(states, obs, keys, [True] * num_seeds)
          for s, env in enumerate(envs):
            next_obs, reward, terminated, truncated, env_info = env.step(actions[s])
            buffers[s].add({"observations": obs[s], "actions": actions[s], "rewards": reward,
                            "masks": 1.0 - float(terminated),
                            "terminals": float(terminated or truncated),
                            "next_observations": next_obs})
            obs[s] = next_obs
            episode_actions[s].append(np.asarray(actions[s], np.float32))
            if terminated or truncated:
              ep_success[s].append(float(env_info.get("success", 0.0)))
              episodes[s] += 1
              obs[s] = env.reset(seed=env_seed(seeds[s], episodes[s]))[0]
              episode_actions[s] = []
              actor.clear(s)
          step = tc.offline_steps + env_step
          if env_step >= tc.start_training:
            states, keys, info = online_update(states, global_batch(sample_all(), 1), keys)
            watch.push(info["nonfinite"], (step - 1, step))
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
              log_train(step, info, extra)
              step_log, t_log = env_step, time.time()
          bar.update(1)
          if env_step % tc.eval_interval == 0 or env_step == tc.online_steps:
            eval_keys = run_eval(step, "online", eval_keys)
            t_log = time.time()
          if env_step == tc.online_steps:
            for s in range(num_seeds):
              summaries[s]["online_success"] = last[s]["success"]
          at_boundary(step, env_step == tc.online_steps)
      watch.flush()
  finally:
    bar.close()
    for logger in loggers:
      logger.close()
    if ckpt is not None:
      ckpt.wait()
      ckpt.close()

  wall = wall_before + time.time() - t_start
  for s in range(num_seeds):
    summaries[s].update({
        "final_success": last[s]["success"], "final_return": last[s].get("return", np.nan),
        "wall_time_s": wall, "num_seeds_vectorised": num_seeds,
        "num_devices": jax.device_count(), "num_processes": jax.process_count(),
        "offline_steps": tc.offline_steps, "online_steps": tc.online_steps,
        "task": config.env.task, "seed": seeds[s]})
    if skip_nonfinite:
      summaries[s]["skipped_steps"] = skipped[s]
  for s, d in enumerate(workdirs):
    if tc.eval_episodes > 0:
      plot_learning_curve(d, tc.offline_steps)
    with open(os.path.join(d, "summary.json"), "w") as f:
      json.dump(summaries[s], f, indent=2)
  return summaries
