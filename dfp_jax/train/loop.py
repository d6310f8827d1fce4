"""Offline-then-online training and evaluation of S seeds at once (the paper's Algorithm 1).

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

from dfp_jax import agents, fileio, parallel
from dfp_jax.data import tasks
from dfp_jax.train import checkpoint, init_from, phases, population, updates, validation
from dfp_jax.train import workdir as workdir_lib
from dfp_jax.train import state as state_lib
from dfp_jax.train.env_pool import EnvWorkerError, usable_cores
from dfp_jax.train.envs import MemberEnvs, default_eval_envs
from dfp_jax.train.faults import (EnvironmentFailure, FaultWatch, Interrupted, NonFiniteError,
                                 StopSignals)
from dfp_jax.train.lock import LockedError
from dfp_jax.train.metrics import plot_learning_curve
from dfp_jax.train.run import OfflineData, Outputs, Run, make_buffers
from dfp_jax.train.state import RunState

__all__ = ["train_and_evaluate", "EnvironmentFailure", "Interrupted", "LockedError",
           "NonFiniteError"]


def _placement(config, num_members: int, requested_mesh, multi_host: bool):
  """Where the members run: a plain vmap on one device, or a (pop, data) mesh over all."""
  tc = config.train
  if multi_host and not tc.use_mesh:
    raise validation.ConfigError("a multi-process run needs train.use_mesh=True")
  if not tc.use_mesh or (jax.device_count() == 1 and requested_mesh is None):
    return parallel.Placement(num_members)
  try:
    pop, data = parallel.mesh_shape(num_members, jax.device_count(), tc.batch_size,
                                    requested_mesh)
  except ValueError as e:
    raise validation.ConfigError(str(e)) from e
  return parallel.Placement(num_members, parallel.population_mesh(pop, data))


def _fresh_state(method, config, layout, place, obs_dim: int, action_dim: int):
  """Initial agents and key streams of every member (padded members repeat the last)."""
  members = layout.members
  padded = [members[min(i, len(members) - 1)] for i in range(place.padded)]
  keys = jnp.stack([jax.random.PRNGKey(m.seed) for m in padded])
  keys, init_keys = updates.split_keys(keys)
  agent_states = jax.vmap(lambda k: method.create(config.agent, obs_dim, action_dim,
                                                  k))(init_keys)
  hparams = population.hparams(padded)
  if hparams:  # each member's swept values, read inside the update (agents.base.hparam)
    agent_states = agent_states.replace(hparams={k: jnp.asarray(v) for k, v in hparams.items()})
  # Evaluation draws from its own key stream so evaluating never changes training.
  keys, eval_keys = updates.split_keys(keys)
  if place.mesh is not None:
    agent_states, keys, eval_keys = parallel.to_global(
        jax.device_get((agent_states, keys, eval_keys)), place.mesh, parallel.P(parallel.POP_AXIS))
  return RunState.fresh(agent_states, keys, eval_keys, [members[i].seed for i in place.rows])


def _check_same_run(meta, layout):
  """CheckpointError unless checkpoint `meta` is this run's (members and config)."""
  if meta.get("members") != [m.name for m in layout.members]:
    raise checkpoint.CheckpointError(
        f"{layout.ckpt_dir} holds members {meta.get('members')}, this run asks for "
        f"{[m.name for m in layout.members]}; use the same --seeds and --sweep, another "
        "--workdir, or --overwrite")
  checkpoint.check_same_config(layout.ckpt_dir, meta.get("config", {}), layout.resolved(0))


def _newest_restorable(ckpt, layout, state: RunState, rows, is_main: bool):
  """(device tree, member files, meta) of the newest checkpoint that restores. Newer ones
  that cannot be restored (truncated, files missing) are moved aside, never deleted, with
  one warning each; when none restores, one CheckpointError."""
  device_like = {"agent": state.agents, "keys": state.keys, "eval_keys": state.eval_keys}
  damaged, found = [], None
  for step in reversed(ckpt.all_steps()):
    try:
      meta = ckpt.read_meta(step)
      _check_same_run(meta, layout)  # another run's checkpoint is an error, not damage
      found = ckpt.restore(step, device_like, rows, meta)
      break
    except checkpoint.UnreadableCheckpoint as e:
      damaged.append(e)
  parallel.sync("checkpoints read")  # every process has read before any is moved
  if is_main:
    for e in damaged:
      where = ckpt.move_aside(e.step)
      resume = (f"resuming from step {found[2]['step']}" if found is not None
                else "no older checkpoint restores")
      print(f"warning: checkpoint {e.step} in {layout.ckpt_dir} cannot be restored "
            f"({e.cause}); moved it to {where}; {resume}")
  parallel.sync("damaged checkpoints moved aside")
  ckpt.reload()
  if found is None:
    first = f" (the newest: {damaged[0].cause})" if damaged else ""
    raise checkpoint.CheckpointError(
        f"no checkpoint in {layout.ckpt_dir} can be restored{first}; they are kept there as "
        "damaged-<step>; pass --overwrite to start again")
  return found


def _resume(run_parts, state: RunState, restored, is_main: bool):
  """`state` with a restored checkpoint; environments rebuilt mid-episode when the online
  phase had started."""
  ckpt, layout, place, envs, tc = run_parts
  device, members, meta = restored
  state, saved_obs = state_lib.restore(state, device, members, place.rows, meta)
  if is_main:
    print(f"resuming {layout.workdir} from its checkpoint at step {state.step}")
  if state.step > tc.offline_steps:
    try:
      state.episodes.obs = envs.replay(state.episodes)
    except EnvWorkerError as e:
      raise EnvironmentFailure(f"{e} rebuilding the environments of the checkpoint at step "
                               f"{state.step}") from None
    gap = max(float(np.max(np.abs(o - saved))) for o, saved in zip(state.episodes.obs, saved_obs))
    if gap > 1e-5:
      print(f"warning: replayed environments differ from the checkpoint's by {gap:.2e}; "
            "the resumed run will not exactly match an uninterrupted one")
  return state


def _fault_handler(ckpt, ckpt_dir: str, members):
  def on_fault(first, last_step, bad):
    if ckpt is not None:
      ckpt.wait()
    good = ckpt.latest_step() if ckpt is not None else None
    where = (f"the last good checkpoint is step {good} in {ckpt_dir}" if good is not None
             else "there is no checkpoint yet")
    raise NonFiniteError(
        f"NaN or inf in the losses or parameters in steps {first + 1}-{last_step} "
        f"({', '.join(members[s].name for s in bad)}); stopped, {where}. "
        "Set train.on_nonfinite=skip to skip such updates instead")
  return on_fault


def _member_envs(config, method, place, seeds: Sequence[int]) -> MemberEnvs:
  """The training and evaluation environments of this process's members (`seeds`, one per
  member), stepped in `train.env_workers` worker processes (default: the usable cores; 0: in
  this process)."""
  tc = config.train
  workers = usable_cores() if tc.get("env_workers") is None else tc.env_workers
  width = tc.get("eval_envs") or default_eval_envs(tc.eval_episodes, len(seeds), workers)
  return MemberEnvs(functools.partial(tasks.make_env, config.env), seeds, config.agent.chunk_len,
                    updates.make_act_fn(method), place,
                    eval_act_fn=updates.make_eval_act_fn(method), workers=workers,
                    eval_envs=min(width, max(tc.eval_episodes, 1)))


def _checkpointer(tc, layout, mode: str) -> Optional[checkpoint.Checkpointer]:
  """The run's checkpointer (None when it neither saves nor resumes); the end of the offline
  phase is kept whatever keep_checkpoints says (--init_from starts there)."""
  if tc.checkpoint_interval <= 0 and mode != "resume":
    return None
  return checkpoint.Checkpointer(layout.ckpt_dir, tc.keep_checkpoints, tc.async_checkpointing,
                                 keep_steps=[tc.offline_steps])


def setup(config, layout, mode: str, is_main: bool, mesh=None, source=None):
  """The run's fixed parts and its state (fresh, restored from the latest checkpoint, or, for a
  fresh run with `source` = (init_from.Source, source member of each member), the source's
  offline-phase state)."""
  t_setup = time.perf_counter()
  tc = config.train
  multi_host = jax.process_count() > 1
  method = agents.get(config.method)
  place = _placement(config, len(layout.members), mesh, multi_host)
  envs = _member_envs(config, method, place, [layout.members[i].seed for i in place.rows])
  try:  # the environment workers stop if the rest fails
    state = _fresh_state(method, config, layout, place, envs.obs_dim, envs.action_dim)
    offline_update, online_update = updates.make_update_fns(
        method.update, tc.on_nonfinite == "skip", place.mesh, tc.get("utd_ratio", 1))
    ckpt = _checkpointer(tc, layout, mode)
    restored = (_newest_restorable(ckpt, layout, state, place.rows, is_main)
                if mode == "resume" else None)
    meta = restored[2] if restored else None
    source = source if mode == "fresh" else None
    if meta is not None:
      state.fingerprints = meta["fingerprints"]
    elif source is not None:
      state.fingerprints = dict(source[0].meta["fingerprints"])  # the same offline data
    data = OfflineData(config.env, tc.offline_steps)
    start = meta["step"] if meta else source[0].step if source else 0
    state.buffers = make_buffers(data.load(start, state.fingerprints), len(place.rows), tc)
    if meta is not None:
      state = _resume((ckpt, layout, place, envs, tc), state, restored, is_main)
    elif source is not None:
      state = init_from.start(source[0], state, place.rows, source[1], place)
      init_from.copy_offline_rows(source[0], source[1],
                                  [layout.run_dirs[i] for i in place.writes], place.writes)
      if is_main:
        print(f"{layout.workdir}: starting the online phase from {source[0].workdir} at step "
              f"{source[0].step}")
    layout.write_configs(place.writes)
    outputs = Outputs([layout.run_dirs[i] for i in place.writes],
                      [place.rows.index(i) for i in place.writes], tc,
                      state.step if mode == "resume" or source else None, state.step, is_main)
    watch = FaultWatch(tc.on_nonfinite == "skip",
                       _fault_handler(ckpt, layout.ckpt_dir, [layout.members[i] for i in place.rows]),
                       place.to_host)
    watch.skipped = state.skipped
    run = Run(config=config, layout=layout, envs=envs, offline_update=offline_update,
              online_update=online_update, start_online=jax.jit(jax.vmap(method.start_online)),
              placement=place,
              discounts=[layout.member_config(i).agent.discount for i in place.rows],
              data=data, ckpt=ckpt, outputs=outputs, watch=watch, signals=StopSignals(),
              is_main=is_main, multi_host=multi_host, t_start=time.time())
    run.timing["setup"] = time.perf_counter() - t_setup
    return run, state
  except BaseException:
    envs.close()
    raise


def _finish(run: Run, state: RunState) -> List[Dict]:
  """Summaries of the members this process holds; their writers also save them with the
  learning curves."""
  tc, layout, place = run.tc, run.layout, run.placement
  wall = state.wall_time_s + time.time() - run.t_start
  for s, (summary, index) in enumerate(zip(state.summaries, place.rows)):
    last = state.last[s]
    summary.update({
        "final_success": last["success"], "final_return": last.get("return", np.nan),
        "wall_time_s": wall, "num_seeds_vectorised": len(layout.members),
        "num_devices": jax.device_count(), "num_processes": jax.process_count(),
        "offline_steps": tc.offline_steps, "online_steps": tc.online_steps,
        "task": run.config.env.task, "seed": layout.members[index].seed,
        "member": layout.members[index].name, "process_index": jax.process_index()})
    if tc.on_nonfinite == "skip":
      summary["skipped_steps"] = state.skipped[s]
    # Where this process's time went (a resumed run: since it resumed); "other" is logging,
    # the progress bar and the rest, so the parts add up to "total".
    total = run.timing["setup"] + time.time() - run.t_start
    parts = {k: round(v, 3) for k, v in sorted(run.timing.items())}
    summary["time_s"] = {**parts, "other": round(total - sum(run.timing.values()), 3),
                         "total": round(total, 3)}
  for logger, index in zip(run.outputs.loggers, place.writes):
    d, summary = layout.run_dirs[index], state.summaries[place.rows.index(index)]
    if tc.eval_episodes > 0:
      plot_learning_curve(d, tc.offline_steps)
    fileio.write_text(os.path.join(d, "summary.json"), json.dumps(summary, indent=2))
    logger.summary(summary)  # W&B's run summary, when on
  return state.summaries


def train_and_evaluate(config, workdir: str, seeds: Optional[Sequence[int]] = None,
                       seed_dirs: Optional[bool] = None, overwrite: bool = False,
                       sweep: Optional[Dict[str, List]] = None, mesh=None,
                       checkpoint_subdir: str = "checkpoints") -> List[Dict]:
  """Train one task for a population of seeds x swept values (vectorised); returns the
  summaries of the members this process holds.

  `seeds` defaults to [config.seed]; `sweep` maps swept fields to their values
  (`population.SWEEPABLE`). Member (seed k, values v) writes to
  `<workdir>/<field>=<v>/.../seed_<k>/` when `seed_dirs` (default: when `seeds` or `sweep` is
  given), else to `workdir`. Each member's dir gets config.json, train.csv, eval.csv,
  TensorBoard events, learning_curve.png and summary.json; checkpoints of the whole
  population go to `<workdir>/<checkpoint_subdir>/`. `mesh=(pop, data)` lays the population over
  the devices (default: parallel.mesh_shape).

  A workdir that already holds this run resumes from its latest checkpoint
  (or returns the summaries of a finished run); one that holds another run is
  an error unless `overwrite`. With `train.init_from` a fresh run starts its online phase
  from another run's offline checkpoint (`init_from`). SIGTERM/SIGINT save a checkpoint and raise
  Interrupted; a NaN/inf raises NonFiniteError (train.on_nonfinite='stop').
  """
  validation.check_config(config)
  if sweep:
    population.check_sweep(sweep)
  layout = workdir_lib.Layout.create(config, workdir, seeds, seed_dirs, sweep, checkpoint_subdir)
  validation.check_members(config, layout.members)
  is_main = jax.process_index() == 0  # the one process that prints
  _placement(config, len(layout.members), mesh, jax.process_count() > 1)  # before any write
  source = None
  if config.train.get("init_from") and (overwrite or not workdir_lib.has_checkpoint(layout)):
    found = init_from.open_source(config.train.init_from, config)
    source = (found, found.match([layout.resolved(i) for i in range(len(layout.members))]))
  with workdir_lib.locked(layout, is_main):
    mode, found = workdir_lib.prepare(layout, overwrite, is_main)
    if mode == "complete":
      if is_main:
        print(f"{workdir}: this run is already complete; pass --overwrite to train it again")
      return found
    run, state = setup(config, layout, mode, is_main, mesh, source)
    try:
      with run.signals, updates.matmul_precision(config.train.get("matmul_precision", "fp32")):
        state = phases.offline_phase(run, state)
        state = phases.online_phase(run, state)
        run.watch.flush()
      summaries = _finish(run, state)  # before the loggers close: they log the summary too
    finally:
      run.close()
    return summaries
