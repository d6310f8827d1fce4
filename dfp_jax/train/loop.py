"""Offline-then-online training and evaluation of S seeds at once (SPEC Algorithm 1).

The edge of the library: environments, replay buffers, logging and the
progress bar live here; all the math is in the agent's jitted `update` / `act`
(any method in `agents.METHODS`, picked by `config.method`). Seeds are a
leading axis of the agent state, the batch and the keys, and every update and
acting call is one `jax.vmap` over it. Each seed owns its random streams (init
and update keys, minibatch sampling, environment resets), so seed k of a
vectorised run computes what a run of seed k alone computes.

`train_and_evaluate` wires three things: the run's fixed parts (`run.Run`,
built once), its state (`state.RunState`, what a checkpoint holds) and the two
phases (`phases.offline_phase`, `phases.online_phase`).
"""

import functools
import json
import os
import time
from typing import Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dfp_jax import agents, parallel
from dfp_jax.data import tasks
from dfp_jax.train import checkpoint, phases, updates, validation, workdir as workdir_lib
from dfp_jax.train import state as state_lib
from dfp_jax.train.envs import SeedEnvs
from dfp_jax.train.faults import FaultWatch, Interrupted, NonFiniteError, StopSignals
from dfp_jax.train.metrics import plot_learning_curve
from dfp_jax.train.run import OfflineData, Outputs, Run, make_buffers
from dfp_jax.train.state import RunState

__all__ = ["train_and_evaluate", "Interrupted", "NonFiniteError"]


def _update_fn(method, train_config, multi_host: bool):
  """The agent's update, data-parallel over every device when there are several;
  returns (update, mesh or None)."""
  tc = train_config
  if multi_host and not tc.data_parallel:
    raise validation.ConfigError("a multi-process run needs train.data_parallel=True")
  if not (tc.data_parallel and jax.device_count() > 1):
    return method.update, None
  mesh = parallel.make_mesh()
  if tc.batch_size % mesh.size:
    raise validation.ConfigError(
        f"config train.batch_size={tc.batch_size}: must be divisible by the {mesh.size} devices")
  return parallel.data_parallel(method.update, mesh), mesh


def _fresh_state(method, config, layout, envs: SeedEnvs, multi_host: bool):
  """Initial agents and key streams of every seed; returns (state, update fn, batch placer)."""
  seeds = layout.seeds
  keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
  keys, init_keys = updates.split_keys(keys)
  agent_states = jax.vmap(lambda k: method.create(config.agent, envs.obs_dim, envs.action_dim,
                                                  k))(init_keys)
  agent_update, mesh = _update_fn(method, config.train, multi_host)
  # Evaluation draws from its own key stream so evaluating never changes training.
  keys, eval_keys = updates.split_keys(keys)
  global_batch = lambda batch, lead: batch
  if multi_host:
    # Every process samples the same global batch (same seeds) and transfers its shard.
    agent_states, keys, eval_keys = parallel.to_global(
        jax.device_get((agent_states, keys, eval_keys)), mesh, parallel.P())
    axis = lambda lead: parallel.P(*([None] * lead), parallel.DATA_AXIS)
    global_batch = lambda batch, lead: parallel.to_global(batch, mesh, axis(lead))
  return RunState.fresh(agent_states, keys, eval_keys, seeds), agent_update, global_batch


def _resume(ckpt, layout, state: RunState, is_main: bool):
  """`state` restored from the latest checkpoint; returns (state, host arrays)."""
  latest = ckpt.latest_step()
  meta = ckpt.read_meta(latest)
  if meta.get("seeds") != list(layout.seeds):
    raise checkpoint.CheckpointError(
        f"{layout.ckpt_dir} holds seeds {meta.get('seeds')}, this run asks for "
        f"{list(layout.seeds)}; use the same --seeds, another --workdir, or --overwrite")
  checkpoint.check_same_config(layout.ckpt_dir, meta.get("config", {}),
                               layout.resolved(layout.seeds[0]))
  device_like = {"agent": state.agents, "keys": state.keys, "eval_keys": state.eval_keys}
  device, host, meta = ckpt.restore(latest, device_like, meta)
  if is_main:
    print(f"resuming {layout.workdir} from its checkpoint at step {meta['step']}")
  return state_lib.restore(state, device, meta), host


def _resume_episodes(state: RunState, host, envs: SeedEnvs, online_steps_done: bool,
                     is_main: bool):
  """Online replay data and chunk queues from the checkpoint; environments rebuilt
  mid-episode when the online phase had started."""
  saved_obs = state_lib.load_host(state, host)
  if not online_steps_done:
    return
  state.episodes.obs = envs.replay(state.episodes)
  gap = max(float(np.max(np.abs(o - saved))) for o, saved in zip(state.episodes.obs, saved_obs))
  if gap > 1e-5 and is_main:
    print(f"warning: replayed environments differ from the checkpoint's by {gap:.2e}; "
          "the resumed run will not exactly match an uninterrupted one")


def _fault_handler(ckpt, ckpt_dir: str, seeds):
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
  return on_fault


def setup(config, layout, mode: str, is_main: bool):
  """The run's fixed parts and its state (fresh, or restored from the latest checkpoint)."""
  tc, ac = config.train, config.agent
  multi_host = jax.process_count() > 1
  method = agents.get(config.method)
  act_fn = updates.make_act_fn(method)
  make_env = functools.partial(tasks.make_env, config.env)
  envs = SeedEnvs(make_env, layout.seeds, ac.chunk_len, act_fn)
  eval_envs = SeedEnvs(make_env, layout.seeds, ac.chunk_len, act_fn)
  state, agent_update, global_batch = _fresh_state(method, config, layout, envs, multi_host)
  offline_update, online_update = updates.make_update_fns(agent_update,
                                                          tc.on_nonfinite == "skip")
  ckpt = (checkpoint.Checkpointer(layout.ckpt_dir, tc.keep_checkpoints, tc.async_checkpointing)
          if tc.checkpoint_interval > 0 or mode == "resume" else None)
  host = None
  if mode == "resume":
    state, host = _resume(ckpt, layout, state, is_main)
  data = OfflineData(config.env, tc.offline_steps)
  state.buffers = make_buffers(data.load(state.step, state.fingerprints), len(layout.seeds), tc)
  if host is not None:
    _resume_episodes(state, host, envs, state.step > tc.offline_steps, is_main)
  if is_main:
    layout.write_configs()
  outputs = Outputs(layout.run_dirs if is_main else [], tc,
                    state.step if mode == "resume" else None, state.step, is_main)
  watch = FaultWatch(tc.on_nonfinite == "skip", _fault_handler(ckpt, layout.ckpt_dir,
                                                               layout.seeds))
  watch.skipped = state.skipped
  run = Run(config, layout, envs, eval_envs, offline_update, online_update,
            jax.jit(jax.vmap(method.start_online)), global_batch, data, ckpt, outputs, watch,
            StopSignals(), is_main, multi_host, time.time())
  return run, state


def _finish(run: Run, state: RunState) -> List[Dict]:
  """Per-seed summaries, written with the learning curves by process 0."""
  tc = run.tc
  wall = state.wall_time_s + time.time() - run.t_start
  for s, summary in enumerate(state.summaries):
    last = state.last[s]
    summary.update({
        "final_success": last["success"], "final_return": last.get("return", np.nan),
        "wall_time_s": wall, "num_seeds_vectorised": len(run.layout.seeds),
        "num_devices": jax.device_count(), "num_processes": jax.process_count(),
        "offline_steps": tc.offline_steps, "online_steps": tc.online_steps,
        "task": run.config.env.task, "seed": run.layout.seeds[s]})
    if tc.on_nonfinite == "skip":
      summary["skipped_steps"] = state.skipped[s]
  for d, summary in zip(run.layout.run_dirs if run.is_main else [], state.summaries):
    if tc.eval_episodes > 0:
      plot_learning_curve(d, tc.offline_steps)
    with open(os.path.join(d, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  return state.summaries


def train_and_evaluate(config, workdir: str, seeds: Optional[Sequence[int]] = None,
                       seed_dirs: Optional[bool] = None, overwrite: bool = False) -> List[Dict]:
  """Train one task for one or several seeds (vectorised); returns per-seed summaries.

  `seeds` defaults to [config.seed]. Seed k writes to `<workdir>/seed_<k>/`
  when `seed_dirs` (default: when `seeds` is given), else to `workdir`. Each
  run dir gets config.json, train.csv, eval.csv, TensorBoard events,
  learning_curve.png and summary.json; checkpoints of all seeds go to
  `<workdir>/checkpoints/`.

  A workdir that already holds this run resumes from its latest checkpoint
  (or returns the summaries of a finished run); one that holds another run is
  an error unless `overwrite`. SIGTERM/SIGINT save a checkpoint and raise
  Interrupted; a NaN/inf raises NonFiniteError (train.on_nonfinite='stop').
  """
  validation.check_config(config)
  layout = workdir_lib.Layout.create(config, workdir, seeds, seed_dirs)
  is_main = jax.process_index() == 0  # the one process that writes
  mode, found = workdir_lib.prepare(layout, overwrite, is_main)
  if mode == "complete":
    if is_main:
      print(f"{workdir}: this run is already complete; pass --overwrite to train it again")
    return found
  run, state = setup(config, layout, mode, is_main)
  try:
    with run.signals:
      state = phases.offline_phase(run, state)
      state = phases.online_phase(run, state)
      run.watch.flush()
  finally:
    run.close()
  return _finish(run, state)
