"""The accelerator suite: what one short session on a GPU or TPU should measure, as files.

Run as `python -m experiments.benchmark --suite=accelerator --out=DIR [--smoke]`; `bench`
below is that module (its measurement functions).
Writes DIR/accelerator.json (every number) and DIR/accelerator.md (the tables):

  - the device, jax and jaxlib versions, the matmul precision in effect;
  - every method's offline and online ms per update and ms per best-of-N'
    action at the paper's sizes (4x512, batch 256), with compile times;
  - DFP with S = 1, 5, 10, 20 seeds vmapped: ms per update and throughput
    relative to S sequential updates;
  - a DFP population of M = 1 to 64 members over every device (the
    (pop, data) mesh when there are several);
  - DFP's online update under each `train.matmul_precision` (fp32, tf32, bf16, the
    backend's default): ms, and the distance of one update's result from fp32's;
  - peak device memory where the backend reports it.

  - the trainer end to end on `synthetic-cube-double` (cube-double's sizes, no simulator):
    offline updates/s, online environment steps/s with their updates, and the loop's
    overhead per online step beyond the update; beside it the real cube-double
    environment's CPU step time where ogbench is installed;
  - the trainer with real cube-double environments in environment workers for 1 and 16
    members (where ogbench is installed: `launch/prepare_accelerator.py --with_envs`).

`--smoke` runs the same suite at the `smoke` preset's tiny sizes with fewer
seeds and members (the test suite runs it on CPU).
"""

import functools
import json
import os
import platform
import time
from typing import Dict, List

import jax
import jaxlib
import numpy as np

from dfp_jax import agents
from experiments import measure


def _peak_memory_mb():
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**20


def device_info() -> Dict:
  dev = jax.devices()[0]
  return {"platform": dev.platform, "device_kind": dev.device_kind,
          "device_count": jax.device_count(), "process_count": jax.process_count(),
          "host": platform.processor() or platform.machine(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__,
          "matmul_precision": str(jax.config.jax_default_matmul_precision or "default")}


def methods_table(bench, preset: str, iters: int, obs_dim: int, action_dim: int, overrides=()) -> List[Dict]:
  rows = []
  for method in agents.METHODS:
    row = bench.measure(bench.get_config(method, preset, overrides), obs_dim,
                        action_dim, iters)
    rows.append({"preset": preset, "method": method, **row})
  return rows


def seeds_table(bench, preset: str, counts, iters: int, obs_dim: int, action_dim: int, overrides=()) -> List[Dict]:
  config = bench.get_config("dfp", preset, overrides)
  single = bench.measure_seeds(config, obs_dim, action_dim, 1, iters)
  rows = []
  for s in counts:
    ms = single if s == 1 else bench.measure_seeds(config, obs_dim, action_dim, s, iters)
    rows.append({"preset": preset, "S": s, "vmapped_ms": ms, "sequential_ms": s * single,
                 "speedup": s * single / ms})
  return rows


def population_table(bench, preset: str, sizes, iters: int, obs_dim: int, action_dim: int, overrides=()):
  config = bench.get_config("dfp", preset, overrides)
  rows = []
  for m in sizes:
    pop, data, ms = bench.measure_population(config, obs_dim, action_dim, m, iters)
    rows.append({"preset": preset, "M": m, "pop": pop, "data": data, "ms": ms,
                 "member_updates_per_s": 1e3 * m / ms})
  return rows


def precision_table(bench, preset: str, iters: int, obs_dim: int, action_dim: int, overrides=()) -> List[Dict]:
  """DFP's online update under each train.matmul_precision: ms, and how far one update's
  losses and actor parameters move from fp32's (same state, batch, key)."""
  from dfp_jax.train.updates import MATMUL_PRECISIONS, matmul_precision
  config = bench.get_config("dfp", preset, overrides)
  lib = agents.get("dfp")
  agent = lib.create(config.agent, obs_dim, action_dim, jax.random.PRNGKey(0))
  batch = bench.random_batch(np.random.default_rng(0), config.train.batch_size, obs_dim,
                             config.agent.chunk_len * action_dim)
  results = {}
  for name in MATMUL_PRECISIONS:
    with matmul_precision(name):
      update = jax.jit(functools.partial(lib.update, online=True))
      new, info = update(agent, batch, jax.random.PRNGKey(0))
      ms = bench.time_calls(lambda a, k: update(a, batch, k)[0],
                            lambda i: (agent, jax.random.PRNGKey(i)), iters)
    results[name] = (ms, new, info)
  ref_new, ref_info = results["fp32"][1:]
  rows = []
  for name, (ms, new, info) in results.items():
    rel = [float(np.max(np.abs(np.asarray(a) - np.asarray(b)))
                 / (np.max(np.abs(np.asarray(b))) + 1e-12))
           for a, b in zip(jax.tree.leaves(new.actor_params), jax.tree.leaves(ref_new.actor_params))]
    rows.append({"precision": name, "online ms/step": ms,
                 "actor loss": float(info["actor/loss"]), "critic loss": float(info["critic/loss"]),
                 "max rel. param diff to fp32": max(rel),
                 "finite": bool(np.isfinite(float(info["actor/loss"]))
                                and np.isfinite(float(info["critic/loss"])))})
  del ref_info
  return rows


def pipelined_update_ms(bench, config, obs_dim: int, action_dim: int, iters: int) -> float:
  """ms per online update of one member as the trainer dispatches it (its jitted program, each
  call fed the last one's state, no wait in between), under the config's matmul precision."""
  from dfp_jax.train import updates
  states, keys, batch = bench.members(config, obs_dim, action_dim, 1, 1)
  batch = jax.device_put(batch)  # on the device, as the loop's minibatch is when it dispatches
  with updates.matmul_precision(config.train.matmul_precision):
    _, online = updates.make_update_fns(agents.get(config.method).update,
                                        config.train.on_nonfinite == "skip")
    states, keys, _ = jax.block_until_ready(online(states, batch, keys))  # compiles
    started = time.perf_counter()
    for _ in range(iters):
      states, keys, _ = online(states, batch, keys)
    jax.block_until_ready(states)
  return 1e3 * (time.perf_counter() - started) / iters


def _env_step_ms(env, steps: int) -> float:
  """ms per step of `env` with uniform random actions, resetting at episode ends."""
  env.reset(seed=0)
  rng = np.random.default_rng(0)
  started = time.perf_counter()
  for _ in range(steps):
    _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
    if terminated or truncated:
      env.reset()
  return 1e3 * (time.perf_counter() - started) / steps


def synthetic_env_step_ms(task: str, steps: int = 2000) -> float:
  """ms per step of a synthetic environment with random actions (its own Python cost)."""
  from dfp_jax.data import synthetic
  return _env_step_ms(synthetic.make_env(task), steps)


def trainer_table(bench, preset: str, smoke: bool, iters: int, overrides=()) -> List[Dict]:
  """The trainer end to end on `synthetic-cube-double` (cube-double's sizes and 500-step
  episodes, no simulator): offline updates/s with the scanned dispatch and online environment
  steps/s including one update each, from the run's train.csv (the first row of each phase,
  which compiles, left out); and the loop's overhead per online step: its ms per environment
  step minus the online update dispatched as the loop dispatches it, minus the environment's
  own step."""
  import tempfile
  from dfp_jax.data import synthetic
  from dfp_jax.train import loop
  from dfp_jax.train.metrics import read_csv
  config = bench.get_config("dfp", preset, overrides)
  offline, online, log = (40, 60, 10) if smoke else (2_000, 1_500, 250)
  start = 10 if smoke else 250
  config.env.task = "synthetic-cube-double"
  config.env.generate_episodes = 0
  config.train.update(offline_steps=offline, online_steps=online, start_training=start,
                      log_interval=log, eval_interval=offline + online, eval_episodes=1,
                      checkpoint_interval=0, tensorboard=False, progress_bar=False)
  with tempfile.TemporaryDirectory() as work:
    started = time.perf_counter()
    loop.train_and_evaluate(config, work)
    wall = time.perf_counter() - started
    rows = read_csv(os.path.join(work, "train.csv"))
  steps, rate = rows["step"], rows["steps_per_s"]
  off = rate[(steps <= offline)][1:]
  on = rate[steps > offline + start + log]  # past the first online row that updates
  obs_dim, action_dim, _ = synthetic.shapes(config.env.task)
  update_ms = pipelined_update_ms(bench, config, obs_dim, action_dim, max(iters, 10))
  env_ms = synthetic_env_step_ms(config.env.task)
  step_ms = 1e3 / float(np.median(on)) if on.size else None
  overhead = None if step_ms is None else step_ms - update_ms - env_ms
  return [{"preset": preset, "task": config.env.task, "hidden": "x".join(
      str(w) for w in config.agent.actor_hidden), "batch": config.train.batch_size,
      "updates_per_dispatch": config.train.updates_per_dispatch,
      "offline updates/s": float(np.median(off)) if off.size else None,
      "online env steps/s": float(np.median(on)) if on.size else None,
      "online ms/env step": step_ms, "update ms (as dispatched)": update_ms,
      "env ms/step": env_ms, "loop overhead ms/env step": overhead,
      "loop overhead %": None if overhead is None else 100 * overhead / (update_ms + env_ms),
      "run wall s": wall}]


def real_env_step_ms(task: str = "cube-double-play-singletask-task2-v0", steps: int = 300):
  """ms per step of the real OGBench environment with random actions on this host's CPU
  (None where ogbench is not installed, as on an accelerator machine prepared offline)."""
  try:
    from dfp_jax.data import ogbench_data
    env = ogbench_data.make_env(task)
  except Exception:  # noqa: BLE001  (ogbench or mujoco missing)
    return None
  try:
    return _env_step_ms(env, steps)
  finally:
    env.close()


def real_trainer_table(bench, preset: str, smoke: bool, overrides=()) -> List[Dict]:
  """The trainer end to end with real cube-double environments stepped by environment workers
  (one per usable core), for 1 and 16 members (smoke: 1 and 2), from summary.json's time_s:
  whether the host's cores keep up with the accelerator. Offline data: a few generated play
  episodes (the phase is short; the online phase is what is measured). None where ogbench is
  not installed."""
  import tempfile
  try:
    from dfp_jax.data import ogbench_generate
  except Exception:  # noqa: BLE001  (ogbench or mujoco missing)
    return None
  from dfp_jax.train import loop
  from dfp_jax.train.env_pool import usable_cores
  from dfp_jax.train.metrics import read_csv
  offline, online, log = (20, 40, 10) if smoke else (200, 1_000, 250)
  rows = []
  with tempfile.TemporaryDirectory() as data:
    ogbench_generate.generate("cube-double-play-v0", 2, data, episode_length=100,
                              val_episodes=1, num_workers=1, progress=False)
    for members in ((1, 2) if smoke else (1, 16)):
      config = bench.get_config("dfp", preset, overrides)
      config.env.task, config.env.dataset_dir = "cube-double-play-singletask-task2-v0", data
      config.env.generate_episodes = 0
      config.train.update(offline_steps=offline, online_steps=online, start_training=10,
                          log_interval=log, eval_interval=offline + online, eval_episodes=1,
                          checkpoint_interval=0, tensorboard=False, progress_bar=False,
                          env_workers=usable_cores())
      with tempfile.TemporaryDirectory() as work:
        summary = loop.train_and_evaluate(config, work, seeds=list(range(members)))[0]
        train = read_csv(os.path.join(work, "seed_0", "train.csv"))
      t = summary["time_s"]
      on = train["steps_per_s"][train["step"] > offline + log]
      rows.append({"members": members, "env_workers": usable_cores(),
                   "online env steps/s (per member)": float(np.median(on)) if on.size else None,
                   "env ms/step (all members, acting incl.)": 1e3 * t["env_steps"] / online,
                   "update ms/step": 1e3 * t["online_updates"] / online,
                   "env share of online %": 100 * t["env_steps"] / max(
                       t["env_steps"] + t["online_updates"], 1e-9)})
  return rows


def _md_table(rows: List[Dict], cols: List[str]) -> str:
  def cell(v):
    return f"{v:.2f}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
  return "\n".join(lines)


# (heading, result key, columns) of each table, in the order the suite measures them.
TABLES = [
    ("Every method (ms per update / per best-of-N' action)", "methods",
     ["method", "hidden", "batch", "h", "samples (act/target)", "online compile s",
      "offline ms/step", "online ms/step", "online/offline", "act ms/call"]),
    ("DFP, S seeds vmapped (online update)", "seeds",
     ["S", "vmapped_ms", "sequential_ms", "speedup"]),
    ("DFP population over every device (online update)", "population",
     ["M", "pop", "data", "ms", "member_updates_per_s"]),
    ("DFP under each train.matmul_precision (online update, one update from the same state)",
     "precision", ["precision", "online ms/step", "actor loss", "critic loss",
                   "max rel. param diff to fp32", "finite"]),
    ("The trainer end to end on a synthetic environment (DFP)", "trainer",
     ["task", "hidden", "batch", "updates_per_dispatch", "offline updates/s",
      "online env steps/s", "online ms/env step", "update ms (as dispatched)", "env ms/step",
      "loop overhead ms/env step", "loop overhead %", "run wall s"]),
    ("The trainer with real cube-double environments and environment workers (DFP)",
     "real_trainer", ["members", "env_workers", "online env steps/s (per member)",
                      "env ms/step (all members, acting incl.)", "update ms/step",
                      "env share of online %"]),
]


def markdown(result: Dict) -> str:
  """accelerator.md: every table measured so far (a suite cut short says which are missing)."""
  d = result["device"]
  peak = result.get("peak_memory_mb")
  md = [f"# Accelerator suite: {d['device_kind']} x{d['device_count']} ({d['platform']})",
        "", f"jax {d['jax']}, jaxlib {d['jaxlib']}, matmul precision {d['matmul_precision']}, "
        f"preset `{result['preset']}`, median of {result['iters']} calls after a compiling call; "
        "peak device memory " + (f"{peak:.0f} MB; " if peak is not None else "not reported; ")
        + (f"suite wall time {result['wall_s']:.0f} s." if result.get("complete") else
           f"suite wall time so far {result['wall_s']:.0f} s (NOT COMPLETE: tables below stop "
           "where the suite stopped).")]
  for heading, key, cols in TABLES:
    md += ["", f"## {heading}", ""]
    if key in result and result[key] is None:
      md.append("not measured (ogbench is not installed here)")
    else:
      md.append(_md_table(result[key], cols) if key in result else "not measured")
  if "trainer" in result:
    real = result.get("real_env_step_ms")
    md += ["", "Loop overhead = online ms per environment step minus DFP's online update "
           "dispatched as the loop dispatches it (same program and precision, back to back) "
           "minus the synthetic environment's own step: acting (a best-of-N' call every chunk), "
           "batch sampling and transfers, logging, waits; % of update + environment. The real "
           "cube-double environment's step on this host's CPU: " + (
               "not measured (the suite stopped before it)." if "real_env_step_ms" not in result
               else f"{real:.2f} ms." if real is not None
               else "not measured (ogbench is not installed here).")]
  return "\n".join(md) + "\n"


def _write(out: str, result: Dict, started: float):
  result["wall_s"] = time.perf_counter() - started
  result["peak_memory_mb"] = _peak_memory_mb()
  with open(os.path.join(out, "accelerator.json"), "w") as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(out, "accelerator.md"), "w") as f:
    f.write(markdown(result))


def run(out: str, smoke: bool, iters: int, obs_dim: int, action_dim: int, overrides=(),
        bench=measure) -> Dict:
  """Measure every table in turn, rewriting DIR/accelerator.{json,md} after each one, so a
  session cut short still returns what it measured. `overrides` (field=value) are set in
  every measured config; `bench` is the timing module (`experiments.measure`)."""
  preset = "smoke" if smoke else "cube-double-task2"
  seeds = (1, 2) if smoke else (1, 5, 10, 20)
  members = (1, 2) if smoke else (1, 2, 4, 8, 16, 32, 64)
  started = time.perf_counter()
  os.makedirs(out, exist_ok=True)
  result = {"device": device_info(), "preset": preset, "iters": iters, "complete": False}
  steps = [
      ("methods", lambda: methods_table(bench, preset, iters, obs_dim, action_dim, overrides)),
      ("seeds", lambda: seeds_table(bench, preset, seeds, iters, obs_dim, action_dim, overrides)),
      ("population", lambda: population_table(bench, preset, members, iters, obs_dim,
                                              action_dim, overrides)),
      ("precision", lambda: precision_table(bench, preset, iters, obs_dim, action_dim, overrides)),
      ("trainer", lambda: trainer_table(bench, preset, smoke, iters, overrides)),
      ("real_env_step_ms", real_env_step_ms),
      ("real_trainer", lambda: real_trainer_table(bench, preset, smoke, overrides)),
  ]
  for key, table in steps:
    result[key] = table()
    _write(out, result, started)
    print(f"[{result['wall_s']:.0f} s] {key} done", flush=True)
  result["complete"] = True
  _write(out, result, started)
  return result
