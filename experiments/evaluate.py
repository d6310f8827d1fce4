"""Evaluate a trained run: `python -m experiments.evaluate --workdir=RUN [--step=N] [--episodes=50]
[--videos=K] [--out=DIR] [--seed=k] [--sheet] [--perturb=NAME=STRENGTH,...]`.

RUN is the directory that holds the run's `checkpoints/` (the `--workdir` of a
lone run, `<workdir>/<task>` of a `--seeds` or `--sweep` run). The checkpoint
(the latest, or step N) is restored onto this machine's devices, whatever it
was saved on; every member of the population is evaluated, or those with
`--seed=k`. Episodes are the training evaluation's: seeded resets
`train.eval_seed + i`, best-of-N' acting (`MemberEnvs.evaluate` and the agent's
`act`), acting keys from the checkpoint's evaluation stream. Prints success
rate and return per member and writes `<out>/results.json` (out defaults to
`RUN/evaluate/step_<N>`, plus `+NAME=S` per perturbation); `--videos=K` records the
first K episodes of each member as `<out>/<member>/ep<k>.mp4` (GIF without an
ffmpeg), `--sheet` also a PNG strip of frames per video. `--perturb=obs_noise=0.1,latency=2` evaluates under
perturbations (`dfp_jax.perturbations`; the same perturbation on the same episode for every
run; strength 0 is no perturbation).
"""

import functools
import json
import os
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from dfp_jax import agents, fileio, perturbations, video
from dfp_jax.data import DatasetError, tasks
from dfp_jax.train import checkpoint, updates
from dfp_jax.train.env_pool import EnvWorkerError, usable_cores
from dfp_jax.train.envs import MemberEnvs, default_eval_envs
from experiments.configs import common

def define_flags():
  """The command's flags (defined when it runs, so other commands can import it)."""
  flags.DEFINE_string("workdir", None, "The run's directory (the one holding checkpoints/).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_integer("episodes", 50, "Seeded evaluation episodes per member.")
  flags.DEFINE_integer("videos", 0, "Record the first K episodes of each member.")
  flags.DEFINE_string("out", None, "Output directory (default RUN/evaluate/step_<N>).")
  flags.DEFINE_integer("seed", None, "Evaluate only the members with this seed.")
  flags.DEFINE_bool("sheet", False, "Also write one PNG strip of frames per video.")
  flags.DEFINE_integer("size", 256, "Video frame width and height in pixels.")
  flags.DEFINE_integer("stride", 1, "Render every n-th environment step.")
  flags.DEFINE_integer("env_workers", None, "Environment worker processes (default: the usable "
                       "cores; 0: step in this process).")
  flags.DEFINE_string("dataset_dir", None, "Override env.dataset_dir (Robomimic environments are "
                      "built from their dataset file).")
  flags.DEFINE_string("perturb", "", "NAME=STRENGTH[,...]: evaluate under these perturbations "
                      f"({', '.join(perturbations.NAMES)}; dfp_jax/perturbations.py).")


FLAGS = flags.FLAGS


def _merge(target, saved):
  """`saved` (a config.json dict) into ConfigDict `target`, field by field; fields the current
  code does not know are dropped, fields the run did not have keep today's defaults."""
  for k, v in saved.items():
    if k not in target:
      continue
    if isinstance(target[k], ml_collections.ConfigDict) and isinstance(v, dict):
      _merge(target[k], v)
    else:
      target[k] = tuple(v) if isinstance(v, list) else v


def run_config(saved):
  """The ConfigDict of a run from its checkpoint's resolved config."""
  method = agents.get(saved["method"])
  config = common.base_config(saved["method"], method.get_config())
  _merge(config, saved)
  return config


def restore(workdir, step=None):
  """(config, member names, agents [M, ...], eval keys [M, 2], step) of a run's checkpoint."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not fileio.isdir(ckpt_dir):
    raise ValueError(f"{workdir} holds no checkpoints/; pass the directory a run was trained in "
                     "(for --seeds or --sweep runs, <workdir>/<task>)")
  ckpt = checkpoint.Checkpointer(ckpt_dir, read_only=True)
  steps = ckpt.all_steps()
  if not steps:
    raise ValueError(f"{ckpt_dir} holds no finished checkpoint")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise ValueError(f"{ckpt_dir} has no checkpoint at step {step}; it has {steps}")
  meta = ckpt.read_meta(step)
  config = run_config(meta["config"])
  method = agents.get(config.method)
  members = meta.get("members") or [f"seed_{s}" for s in meta["seeds"]]
  device = ckpt.restore_saved(step, meta)
  env = tasks.make_env(config.env)
  obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
  env.close()
  template = jax.vmap(lambda k: method.create(config.agent, obs_dim, action_dim, k))(
      device["keys"])
  if device["agent"].get("hparams"):  # a population's swept values
    template = template.replace(hparams=dict(device["agent"]["hparams"]))
  agent = checkpoint.fill(template, checkpoint.by_path(device["agent"]), f"{ckpt_dir}/{step}",
                          f"a {config.method} agent")
  ckpt.close()
  return config, members, agent, device["eval_keys"], step


def default_out(workdir, step, perturb=()) -> str:
  """RUN/evaluate/step_<N>, with `+name=strength` per perturbation."""
  return os.path.join(workdir, "evaluate", f"step_{step}" + "".join(
      f"+{name}={strength:g}" for name, strength in perturb))


def member_seed(name: str) -> int:
  return int(name.rsplit("seed_", 1)[1])


def evaluate(workdir, step=None, episodes=50, videos=0, out=None, seed=None, sheet=False,
             size=256, stride=1, dataset_dir=None, workers=None, perturb=(), restored=None):
  """Evaluate the members of a run's checkpoint; returns the results dict written to JSON.

  `perturb`: (name, strength) pairs, applied in order (`perturbations.wrap`). `restored`:
  `restore(workdir, step)`'s result, when the caller already has it.
  """
  for name, strength in perturb:
    perturbations.check(name, strength)
  if workers is not None and workers < 0:
    raise ValueError(f"--env_workers={workers}: must be >= 0 (0: step in this process)")
  if episodes < 1 or videos < 0 or videos > episodes:
    raise ValueError(f"need 1 <= --episodes and 0 <= --videos <= --episodes "
                     f"(got {episodes}, {videos})")
  if videos:
    video.check_renderer()
  config, members, agent_states, eval_keys, step = restored or restore(workdir, step)
  if dataset_dir is not None:
    config.env.dataset_dir = dataset_dir
  obs_std = (perturbations.observation_std(config.env)
             if any(name == "obs_noise" for name, _ in perturb) else None)
  rows = [i for i, m in enumerate(members) if seed is None or member_seed(m) == seed]
  if not rows:
    raise ValueError(f"no member with seed {seed}; the run has {', '.join(members)}")
  pick = np.array(rows)
  agent_states = jax.tree.map(lambda x: x[pick], agent_states)
  seeds = [member_seed(members[i]) for i in rows]
  method = agents.get(config.method)
  workers = usable_cores() if workers is None else workers
  envs = MemberEnvs(functools.partial(perturbations.make_env, config.env, tuple(perturb), obs_std),
                    seeds, config.agent.chunk_len,
                    updates.make_act_fn(method), eval_act_fn=updates.make_eval_act_fn(method),
                    workers=workers, eval_envs=default_eval_envs(episodes, len(seeds), workers))
  out = out or default_out(workdir, step, perturb)
  recorder = video.Recorder(range(len(rows)), videos, size, stride) if videos else None
  try:
    with updates.matmul_precision(config.train.get("matmul_precision", "default")):
      results, _, per_episode = envs.evaluate(agent_states, eval_keys[pick], episodes,
                                              config.train.eval_seed, recorder)
    report = {"workdir": fileio.absolute(workdir), "step": step, "task": config.env.task,
              "method": config.method, "episodes": episodes,
              "eval_seed": config.train.eval_seed,
              "perturb": [[name, strength] for name, strength in perturb], "members": []}
    for s, (i, res) in enumerate(zip(rows, results)):
      entry = {"member": members[i], "seed": seeds[s], **res,
               "per_episode": {k: v[s].tolist() for k, v in per_episode.items()}}
      if recorder is not None:
        dest = os.path.join(out, members[i])
        with fileio.staged(dest) as local:  # ffmpeg writes a local file; uploaded for a URL
          written = video.save(recorder, s, local, "", config.env.task, step, sheet)
        entry["videos"] = [{k: v.replace(local, dest, 1) if isinstance(v, str) else v
                            for k, v in w.items() if k != "frames"} for w in written]
      report["members"].append(entry)
  finally:
    if recorder is not None:
      recorder.close()
    envs.close()
  fileio.makedirs(out)
  fileio.write_text(os.path.join(out, "results.json"), json.dumps(report, indent=2))
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)  # orbax warns about items it does not read
  if not FLAGS.workdir:
    sys.exit("error: --workdir is required (the directory holding the run's checkpoints/)")
  try:
    report = evaluate(FLAGS.workdir, FLAGS.step, FLAGS.episodes, FLAGS.videos, FLAGS.out,
                      FLAGS.seed, FLAGS.sheet, FLAGS.size, FLAGS.stride, FLAGS.dataset_dir,
                      FLAGS.env_workers, perturbations.parse(FLAGS.perturb))
  except (ValueError, DatasetError, checkpoint.CheckpointError, EnvWorkerError) as e:
    sys.exit(f"error: {e}")
  out = FLAGS.out or default_out(FLAGS.workdir, report["step"], report["perturb"])
  under = "".join(f", {name}={strength:g}" for name, strength in report["perturb"])
  print(f"{report['task']} step {report['step']}, {report['episodes']} episodes each{under}:")
  for m in report["members"]:
    print(f"  {m['member']}: success {m['success']:.3f}, return {m['return']:.2f}, "
          f"length {m['length']:.1f}")
    for v in m.get("videos", []):
      print(f"    {v['video']}" + (f"  {v['sheet']}" if "sheet" in v else ""))
  print(f"wrote {os.path.join(out, 'results.json')}")


if __name__ == "__main__":
  from experiments import cli
  define_flags()
  cli.run(main)
