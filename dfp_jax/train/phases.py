"""The two phases of a run (the paper's Algorithm 1) and the periodic actions between steps.

`offline_phase` pretrains on the offline data (for DFP behaviour cloning by
drifting); `online_phase` acts best-of-N' in the environments, stores the
transitions and updates once per environment step. Both take the run's fixed
parts and its state, and return the state. Whether to log, evaluate or save
is decided in one place, `due`.
"""

import contextlib
import signal
import time
from typing import Dict, List, Optional

import jax
import numpy as np

from dfp_jax import parallel, video
from dfp_jax.train import state as state_lib
from dfp_jax.train.env_pool import EnvWorkerError
from dfp_jax.train.faults import EnvironmentFailure, Interrupted
from dfp_jax.train.metrics import to_scalars
from dfp_jax.train.run import Run, make_buffers, sample_batch, stack
from dfp_jax.train.state import RunState


def due(prev: int, now: int, every: int, end: Optional[int] = None) -> bool:
  """A periodic action of period `every` falls in (prev, now], or `now` ends the phase."""
  return (every > 0 and now // every > prev // every) or now == end


def save(run: Run, state: RunState):
  """Checkpoint the run state (never one that holds NaN/inf)."""
  if run.ckpt is None:
    return
  run.watch.flush()
  layout, place = run.layout, run.placement
  meta = {"seeds": list(layout.seeds), "members": [m.name for m in layout.members],
          "config": layout.resolved(0),
          "wall_time_s": state.wall_time_s + time.time() - run.t_start}
  items = state_lib.checkpoint_items(state, place.rows, set(place.writes), meta,
                                     run.envs.obs_dim, run.envs.action_dim)
  run.ckpt.save(state.step, *items)


def at_boundary(run: Run, state: RunState, prev: int, phase_end: bool):
  """Checkpoint when due; on a stop signal, checkpoint and stop."""
  tc, step = run.tc, state.step
  stop = run.signals.signum is not None
  if run.multi_host:  # processes agree on stopping at log boundaries (a collective)
    stop = due(prev, step, tc.log_interval) or phase_end
    stop = stop and parallel.any_process(run.signals.signum is not None)
  if stop or phase_end or due(prev, step, tc.checkpoint_interval):
    with run.timed("checkpoints"):
      save(run, state)
  if stop:
    if run.ckpt is not None:
      run.ckpt.wait()
    signum = run.signals.signum
    name = signal.Signals(signum).name if signum else "signal"
    where = (f"checkpoint saved in {run.layout.ckpt_dir}" if run.ckpt is not None
             else "no checkpointing")
    raise Interrupted(signum or signal.SIGTERM,
                      f"{name} at step {step}: {where}; rerun the same command to resume")


@contextlib.contextmanager
def environment_failures(run: Run, doing: str, step: int):
  """An EnvWorkerError as one EnvironmentFailure naming the members, the step and the
  checkpoint to resume from."""
  try:
    yield
  except EnvWorkerError as e:
    members = [run.layout.members[run.placement.rows[s]].name
               for s in run.envs.members_of(e.slots)]
    whose = f" ({', '.join(members[:4])}{', ...' if len(members) > 4 else ''})" if members else ""
    if run.ckpt is not None:
      run.ckpt.wait()
    good = run.ckpt.latest_step() if run.ckpt is not None else None
    where = (f"the checkpoint at step {good} in {run.layout.ckpt_dir} is intact; rerun the same "
             "command to resume" if good is not None else "there is no checkpoint yet")
    raise EnvironmentFailure(f"{e}{whose} {doing} at step {step}; {where}") from None


def evaluate(run: Run, state: RunState, phase: str):
  """Evaluate every member on the same seeded episodes; log the rows."""
  tc = run.tc
  if tc.eval_episodes <= 0:
    return
  t0 = time.time()
  videos = video.evaluation_videos(tc, run.config.env.task, run.outputs.loggers,
                                    run.outputs.positions, state.step)
  with run.timed("evaluation"), videos as watch, \
      environment_failures(run, "in the evaluation", state.step):
    results, state.eval_keys, _ = run.envs.evaluate(state.agents, state.eval_keys,
                                                    tc.eval_episodes, tc.eval_seed, watch)
  for s, res in enumerate(results):
    res["eval_time_s"] = time.time() - t0
    res["online"] = float(phase == "online")
    state.last[s].update(res)
  run.outputs.write("eval", state.step, results)
  run.outputs.bar.set_postfix(phase=phase,
                              success=f"{np.mean([r['success'] for r in results]):.2f}")


def metric_name(key: str, member) -> str:
  """A population's per-position temperature metric ('..._t0') named by the member's own R,
  as a lone run names it ('..._r0.05')."""
  temps = dict(member.values).get("agent.temperatures")
  head, sep, tail = key.rpartition("_t")
  if temps is None or not sep or not tail.isdigit():
    return key
  return f"{head}_r{temps[int(tail)]}"


def log_train(run: Run, state: RunState, info, extra: List[Dict[str, float]]):
  """One train row per member this process holds: the update's metrics plus `extra`."""
  run.watch.flush()
  info = run.placement.to_host(info)  # once, then one row per member
  rows = []
  for s, index in enumerate(run.placement.rows):
    member = run.layout.members[index]
    row = {**to_scalars({metric_name(k, member): v[s] for k, v in info.items()
                         if k != "nonfinite"}), **extra[s]}
    if run.tc.on_nonfinite == "skip":
      row["skipped_steps"] = state.skipped[s]
    rows.append(row)
  run.outputs.write("train", state.step, rows)


def offline_phase(run: Run, state: RunState) -> RunState:
  """Offline pretraining, k updates per dispatch (one jitted scan).

  Dispatches end on multiples of updates_per_dispatch and on every checkpoint,
  shard and phase boundary, so a resumed run dispatches exactly as an
  uninterrupted one.
  """
  tc, ac = run.tc, run.ac
  k, end = max(1, tc.updates_per_dispatch), tc.offline_steps
  step_log, t_log = state.step, time.time()
  t_phase, before = time.perf_counter(), run.timing["evaluation"] + run.timing["checkpoints"]
  while state.step < end:
    step = state.step
    n = min(k - step % k, end - step)
    if tc.checkpoint_interval:
      n = min(n, tc.checkpoint_interval - step % tc.checkpoint_interval)
    if run.data.rotate:
      interval = run.config.env.shard_interval
      n = min(n, interval - step % interval)
      if run.data.needs_reload(step):
        state.buffers = make_buffers(run.data.load(step, state.fingerprints),
                                     len(run.placement.rows), tc)
    batches = stack([sample_batch(state.buffers, state.rngs, tc, ac.chunk_len, run.discounts)
                     for _ in range(n)])  # [n, M, B, ...]
    state.agents, state.keys, info = run.offline_update(
        state.agents, run.placement.to_device(batches, lead=1), state.keys)
    run.watch.push(info["nonfinite"], (step, step + n))
    state.step = step + n
    run.outputs.bar.update(n)
    if due(step, state.step, tc.log_interval, end):
      jax.block_until_ready(info)  # so the rate below is a real one
      rate = (state.step - step_log) / max(time.time() - t_log, 1e-9)
      log_train(run, state, info, [{"steps_per_s": rate}] * len(run.placement.rows))
      step_log, t_log = state.step, time.time()
    if due(step, state.step, tc.eval_interval, end):
      jax.block_until_ready(state.agents)  # the updates' time is not the evaluation's
      evaluate(run, state, "offline")
      t_log = time.time()  # steps/s counts training only
    if state.step == end and tc.eval_episodes > 0:
      for summary, last in zip(state.summaries, state.last):
        summary["offline_success"] = last["success"]
    at_boundary(run, state, step, state.step == end)
  jax.block_until_ready(state.agents)
  run.timing["offline_updates"] += (time.perf_counter() - t_phase - run.timing["evaluation"]
                                    - run.timing["checkpoints"] + before)
  return state


def _online_extras(state: RunState, rate: float) -> List[Dict[str, float]]:
  """Per-seed steps/s, episode count and the training episodes' success since the last row."""
  rows = []
  for s, successes in enumerate(state.episodes.successes):
    row = {"steps_per_s": rate, "episodes": state.episodes.count[s]}
    if successes:
      row["train_success"] = float(np.mean(successes))
      state.episodes.successes[s] = []
    rows.append(row)
  return rows


def online_phase(run: Run, state: RunState) -> RunState:
  """Online fine-tuning: best-of-N' acting, chunk queues, `train.utd_ratio` updates (one
  dispatch) per environment step."""
  tc, ac = run.tc, run.ac
  if state.step >= tc.offline_steps + tc.online_steps:
    return state
  run.outputs.bar.set_description("online")
  if state.step == tc.offline_steps:  # entering the phase (not resuming inside it)
    state.agents = run.start_online(state.agents)
    with environment_failures(run, "starting the online phase", state.step):
      run.envs.start(state.episodes)
  step_log, t_log = state.step - tc.offline_steps, time.time()
  for env_step in range(state.step - tc.offline_steps + 1, tc.online_steps + 1):
    with run.timed("env_steps"), \
        environment_failures(run, "stepping the environments", state.step + 1):
      state.keys = run.envs.step(state.agents, state.keys, state.episodes, state.buffers)
    prev, state.step = state.step, tc.offline_steps + env_step
    if env_step >= tc.start_training:
      with run.timed("online_updates"):  # the next act waits for the update anyway
        utd = tc.get("utd_ratio", 1)
        if utd > 1:  # train.utd_ratio updates per environment step, one dispatch
          batch = run.placement.to_device(stack([
              sample_batch(state.buffers, state.rngs, tc, ac.chunk_len, run.discounts)
              for _ in range(utd)]), lead=1)  # [u, M, B, ...]
        else:
          batch = run.placement.to_device(
              sample_batch(state.buffers, state.rngs, tc, ac.chunk_len, run.discounts))
        state.agents, state.keys, info = run.online_update(state.agents, batch, state.keys)
        jax.block_until_ready(state.agents)
      run.watch.push(info["nonfinite"], (prev, state.step))
      if due(env_step - 1, env_step, tc.log_interval):
        jax.block_until_ready(info)
        rate = (env_step - step_log) / max(time.time() - t_log, 1e-9)
        log_train(run, state, info, _online_extras(state, rate))
        step_log, t_log = env_step, time.time()
    run.outputs.bar.update(1)
    if due(env_step - 1, env_step, tc.eval_interval, tc.online_steps):
      evaluate(run, state, "online")
      t_log = time.time()
    if env_step == tc.online_steps:
      for summary, last in zip(state.summaries, state.last):
        summary["online_success"] = last["success"]
    at_boundary(run, state, prev, env_step == tc.online_steps)
  return state
