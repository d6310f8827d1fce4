"""What the protocol around the update costs: environment stepping, evaluation, a whole run.

  python -m experiments.benchmark --suite=protocol [--out=DIR] [--smoke]
      [--protocol_members=1,2,4,8,16] [--protocol_episodes=20,50] [--protocol_quick]

Three tables, written to DIR/protocol.md (and protocol.json):
  1. environment steps per second of M cube-double environments (random actions, episodes
     reset as they end), stepped in this process vs in worker processes (`EnvPool`);
  2. one evaluation of E episodes by a fresh quick-size DFP policy on the quick task: the
     serial pattern (one episode after another, one act call per chunk: eval_envs=1,
     env_workers=0) against batched evaluation with workers (the trainer's defaults);
  3. with --protocol_quick, the `quick` run end to end, serial protocol vs the defaults, with
     the trainer's own breakdown of where the time went (summary.json's time_s).
"""

import functools
import json
import os
import platform
import tempfile
import time
from typing import Dict, List, Sequence

import jax
import numpy as np

from dfp_jax import agents, fileio
from dfp_jax.data import tasks
from dfp_jax.train import updates
from dfp_jax.train.env_pool import EnvPool, usable_cores
from dfp_jax.train.envs import MemberEnvs, default_eval_envs
from experiments.configs import dfp as dfp_configs

ENV_TASK = "cube-double-play-singletask-task2-v0"


def host() -> str:
  dev = jax.devices()[0]
  return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
          f"({usable_cores()} usable), jax {jax.__version__} on {dev.platform}")


def env_steps_per_s(env_config, members: int, workers: int, steps: int) -> float:
  """Environment steps per second (all members together) of `members` environments."""
  make = functools.partial(tasks.make_env, env_config)
  first = make()
  pool = EnvPool(make, members, workers, first.observation_space, first.action_space,
                 first=first)
  try:
    rng = np.random.default_rng(0)
    low, high = first.action_space.low, first.action_space.high
    pool.reset({s: s for s in range(members)})
    episode = members

    def step_all():
      nonlocal episode
      out = pool.step({s: rng.uniform(low, high).astype(np.float32) for s in range(members)})
      done = {s: r for s, r in out.items() if r[2] or r[3]}
      if done:
        pool.reset({s: episode + i for i, s in enumerate(done)})
        episode += len(done)

    for _ in range(min(10, steps)):  # warm-up: workers started, first resets done
      step_all()
    t0 = time.perf_counter()
    for _ in range(steps):
      step_all()
    return members * steps / (time.perf_counter() - t0)
  finally:
    pool.close()


def evaluation_seconds(config, episodes: int, workers: int, eval_envs: int) -> Dict:
  """Seconds and act calls of one evaluation of `episodes` episodes of a fresh agent (after a
  compiling evaluation of the same shape)."""
  method = agents.get(config.method)
  calls = []

  def counted(fn):
    def call(*args):
      calls.append(1)
      return fn(*args)
    return call

  envs = MemberEnvs(functools.partial(tasks.make_env, config.env), [0], config.agent.chunk_len,
                    updates.make_act_fn(method),
                    eval_act_fn=counted(updates.make_eval_act_fn(method)), workers=workers,
                    eval_envs=eval_envs)
  try:
    state = jax.vmap(lambda k: method.create(config.agent, envs.obs_dim, envs.action_dim, k))(
        jax.random.split(jax.random.PRNGKey(0), 1))
    keys = jax.random.split(jax.random.PRNGKey(1), 1)
    envs.evaluate(state, keys, min(episodes, eval_envs), 0)  # compiles
    calls.clear()
    t0 = time.perf_counter()
    _, _, stats = envs.evaluate(state, keys, episodes, config.train.eval_seed)
    seconds = time.perf_counter() - t0
  finally:
    envs.close()
  return {"seconds": seconds, "act_calls": len(calls),
          "episode_length": float(stats["length"].mean())}


def quick_run(workdir: str, overrides: Dict, smoke: bool) -> Dict:
  """summary.json of a `quick` DFP run (smoke: a tiny one) with `overrides`, and its dataset
  generation time."""
  from dfp_jax.train import loop
  config = dfp_configs.get_config("smoke" if smoke else "quick")
  config.train.progress_bar = False
  config.update_from_flattened_dict(overrides)
  t0 = time.perf_counter()
  tasks.ensure_dataset(config.env)
  generated = time.perf_counter() - t0
  t0 = time.perf_counter()
  summary = loop.train_and_evaluate(config, workdir)[0]
  return {"summary": summary, "dataset_s": generated, "train_s": time.perf_counter() - t0}


def _table(cols: Sequence[str], rows: List[Sequence]) -> List[str]:
  fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)  # noqa: E731
  return (["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
          + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows])


def run(out: str, members: Sequence[int], episodes: Sequence[int], quick: bool, smoke: bool):
  """The tables above into `out`/protocol.md and protocol.json; returns the markdown."""
  fileio.makedirs(out)
  workers = usable_cores()
  lines = ["# Protocol costs", "", f"Host: {host()}. Command: `python -m experiments.benchmark "
           f"--suite=protocol{' --smoke' if smoke else ''}`.", ""]
  record: Dict = {"host": host(), "workers": workers}

  env_config = dfp_configs.get_config("cube-double-task2").env
  if smoke:  # the tests' tiny cube-single data is not needed: the environment alone is built
    env_config = dfp_configs.get_config("smoke").env
  steps = 20 if smoke else 300
  rows = []
  for m in members:
    serial = env_steps_per_s(env_config, m, 0, steps)
    pooled = env_steps_per_s(env_config, m, workers, steps)
    rows.append((m, serial, pooled, f"{pooled / serial:.2f}x"))
  record["env_steps"] = [dict(zip(("members", "in_process", "workers", "ratio"), r)) for r in rows]
  lines += [f"## Environment steps per second ({env_config.task}, random actions)", "",
            f"All members together; workers: {workers} processes (gymnasium AsyncVectorEnv, "
            "shared memory).", ""]
  lines += _table(["members", "in-process steps/s", f"{workers} workers steps/s", "ratio"], rows)

  config = dfp_configs.get_config("smoke" if smoke else "quick")
  rows = []
  for n in episodes:
    before = evaluation_seconds(config, n, 0, 1)
    width = default_eval_envs(n, 1, workers)
    after = evaluation_seconds(config, n, workers, width)
    rows.append((n, before["seconds"], before["act_calls"], after["seconds"], after["act_calls"],
                 width, f"{before['seconds'] / after['seconds']:.2f}x"))
  record["evaluation"] = [dict(zip(("episodes", "serial_s", "serial_act_calls", "batched_s",
                                    "batched_act_calls", "eval_envs", "speedup"), r))
                          for r in rows]
  lines += ["", f"## One evaluation ({config.env.task}, a fresh {config.method} policy at "
            f"{'smoke' if smoke else 'quick'} size: every episode runs to the time limit)", ""]
  lines += _table(["episodes", "serial s", "serial act calls", "batched s", "batched act calls",
                   "eval_envs", "speed-up"], rows)

  if quick:
    serial = {"train.env_workers": 0, "train.eval_envs": 1}
    runs = {}
    for name, overrides in (("serial", serial), ("default", {})):
      with tempfile.TemporaryDirectory() as d:
        runs[name] = quick_run(d, overrides, smoke)
    record["quick"] = runs
    parts = sorted(runs["default"]["summary"]["time_s"])
    lines += ["", "## The quick run end to end (seconds; the trainer's summary.json time_s)", ""]
    lines += _table(["protocol", "dataset"] + parts, [
        (name, r["dataset_s"], *[r["summary"]["time_s"][p] for p in parts])
        for name, r in runs.items()])
  text = "\n".join(lines) + "\n"
  fileio.write_text(os.path.join(out, "protocol.md"), text)
  fileio.write_text(os.path.join(out, "protocol.json"), json.dumps(record, indent=2, default=float))
  return text
