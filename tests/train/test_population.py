"""Populations (seeds x swept hyperparameters) as one program: parsing, and equality of every
member with a lone run of that seed and those values on 1 device, on 8 host devices as
--mesh=8,1 and 4,2, with two processes of 4 devices, and after a kill -9 onto another mesh."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dfp_jax.data import synthetic
from dfp_jax.parallel import host_device_flags
from dfp_jax.train import population

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Members are compared with lone runs: no simulator needed.
TASK = synthetic.TINY
SWEEP = ["--sweep=agent.topk_weight=0.1;2", "--sweep=agent.temperatures=0.05;0.2"]
VALUES = [(w, r) for w in ("0.1", "2") for r in ("0.05", "0.2")]


def test_sweeps_parse_into_members_and_shape_changing_fields_are_refused():
  sweep = population.parse_sweeps(["agent.topk_weight=0.1;0.5", "agent.temperatures=0.05;0.2"])
  assert sweep == {"agent.topk_weight": [0.1, 0.5], "agent.temperatures": [(0.05,), (0.2,)]}
  members = population.members([3, 4], sweep)
  assert [m.name for m in members][:3] == ["topk_weight=0.1/temperatures=0.05/seed_3",
                                           "topk_weight=0.1/temperatures=0.05/seed_4",
                                           "topk_weight=0.1/temperatures=0.2/seed_3"]
  hp = population.hparams(members)
  np.testing.assert_allclose(hp["topk_weight"], [0.1] * 4 + [0.5] * 4)
  assert hp["temperatures"].shape == (8, 1)
  c = members[-1].apply(__import__("experiments.configs.dfp", fromlist=["x"]).get_config("smoke"))
  assert (c.seed, c.agent.topk_weight, tuple(c.agent.temperatures)) == (4, 0.5, (0.2,))
  for bad, message in [("agent.top_k=2;4", "changes array shapes"),
                       ("agent.actor_hidden=1;2", "separate runs"),
                       ("agent.topk_weight", "expected FIELD=V1;V2"),
                       ("agent.topk_weight=0.1;0.1", "given twice"),
                       ("agent.temperatures=0.05;(0.05,0.2)", "same number of temperatures"),
                       ("agent.lr=fast", "not a number")]:
    with pytest.raises(population.SweepError, match=message.replace("(", r"\(")):
      population.parse_sweeps([bad])


def _train(workdir, *extra, devices=None, timeout=900):
  env = dict(os.environ)
  if devices:
    env["XLA_FLAGS"] = host_device_flags(devices, os.environ.get("XLA_FLAGS", ""))
  return subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config=experiments/configs/dfp.py:smoke",
       f"--workdir={workdir}", f"--config.env.task={TASK}",
       "--config.train.tensorboard=False", "--config.train.online_steps=20", *extra],
      cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def _assert_same(a_dir, b_dir, rtol=1e-4):
  """Every CSV number of two member dirs equal up to float error (wall-clock columns aside)."""
  for stream in ("train.csv", "eval.csv"):
    a, b = _rows(os.path.join(a_dir, stream)), _rows(os.path.join(b_dir, stream))
    assert len(a) == len(b) and set(a[0]) == set(b[0]), (a_dir, stream)
    for x, y in zip(a, b):
      for k in x:
        if k in ("steps_per_s", "eval_time_s") or x[k] == y[k]:
          continue
        np.testing.assert_allclose(float(x[k]), float(y[k]), rtol=rtol, atol=1e-5,
                                   err_msg=f"{a_dir} {stream} {k}")


@pytest.fixture(scope="module")
def lone(tmp_path_factory):
  """Lone runs: each swept value pair as its own (2-seed vectorised) run, in this process (the
  command line's config, `_train`'s overrides, and its layout: <workdir>/<task>/seed_<k>)."""
  from dfp_jax.train import loop as trainer
  from experiments.configs import dfp as dfp_configs
  root = tmp_path_factory.mktemp("population")
  for w, r in VALUES:
    c = dfp_configs.get_config("smoke")
    c.env.task = TASK
    c.train.tensorboard, c.train.online_steps = False, 20
    c.agent.topk_weight, c.agent.temperatures = float(w), (float(r),)
    trainer.train_and_evaluate(c, str(root / f"lone-{w}-{r}" / TASK), seeds=(0, 1))
  return root


def _member_dir(workdir, w, r, seed):
  return os.path.join(workdir, TASK, f"topk_weight={w}", f"temperatures={r}", f"seed_{seed}")


def _assert_members_equal_lone(workdir, lone):
  for w, r in VALUES:
    for seed in (0, 1):
      _assert_same(_member_dir(workdir, w, r, seed),
                   os.path.join(lone, f"lone-{w}-{r}", TASK, f"seed_{seed}"))


# The population on one device here; on meshes (8,1 until a kill, then 4,2 in one process,
# and 4,2 over two processes) in the next test, against the same lone runs.
@pytest.mark.subprocess
@pytest.mark.parametrize("mesh, devices", [(None, None)])
def test_members_equal_lone_runs(lone, mesh, devices):
  workdir = str(lone / f"pop-{mesh or 'one'}")
  res = _train(workdir, "--seeds=0,1", *SWEEP, *([f"--mesh={mesh}"] if mesh else []),
               devices=devices)
  assert res.returncode == 0, res.stderr[-3000:]
  _assert_members_equal_lone(workdir, str(lone))
  if mesh is None:  # the report tables the members like separate runs, 2 seeds per row
    out = lone / "report"
    rep = subprocess.run([sys.executable, "-m", "experiments.report", workdir, f"--out={out}",
                          "--label_key=agent.topk_weight,agent.temperatures"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-3000:]
    rows = _rows(str(out / "results.csv"))
    assert len(rows) == len(VALUES) and all(r["num_seeds"] == "2" for r in rows), rows


@pytest.mark.multiprocess
def test_two_processes_each_step_only_their_members_and_resume_onto_another_mesh(lone):
  import json
  workdir = str(lone / "pop-2proc")
  cmd = [sys.executable, "launch/local.py", "--num_processes=2", "--devices_per_process=4", "--",
         "--config=experiments/configs/dfp.py:smoke", f"--workdir={workdir}",
         f"--config.env.task={TASK}", "--config.train.tensorboard=False",
         "--config.train.online_steps=20", "--seeds=0,1", *SWEEP, "--mesh=4,2"]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert res.returncode == 0, res.stderr[-3000:]
  _assert_members_equal_lone(workdir, str(lone))
  # Each process wrote (and stepped) half of the members, none twice.
  owners = [json.load(open(os.path.join(_member_dir(workdir, w, r, s), "summary.json")))
            ["process_index"] for w, r in VALUES for s in (0, 1)]
  assert sorted(owners) == [0, 0, 0, 0, 1, 1, 1, 1]

  # kill -9 a one-process 8-device run of the same population inside the online phase, then
  # resume it on another mesh: it ends where the uninterrupted run ended.
  killed = str(lone / "pop-killed")
  env = dict(os.environ, XLA_FLAGS=host_device_flags(8, os.environ.get("XLA_FLAGS", "")))
  args = [sys.executable, "-m", "experiments.train", "--config=experiments/configs/dfp.py:smoke",
          f"--workdir={killed}", f"--config.env.task={TASK}",
          "--config.train.tensorboard=False", "--config.train.online_steps=20", "--seeds=0,1",
          *SWEEP, "--mesh=8,1"]
  proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpt = os.path.join(killed, TASK, "checkpoints")
  deadline = time.time() + 600
  while not (os.path.isdir(ckpt) and "30" in os.listdir(ckpt)) and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  res = subprocess.run([*args[:-1], "--mesh=4,2"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "from its checkpoint at step" in res.stdout
  _assert_members_equal_lone(killed, str(lone))


@pytest.mark.multiprocess
def test_a_separate_offline_buffer_in_two_processes_equals_one_process(tmp_path):
  """train.offline_batch_ratio with each process sampling its own member's minibatches from
  its own buffers: the same CSVs as the one-process run of both members."""
  common_args = ["--config=experiments/configs/dfp.py:smoke",
                 f"--config.env.task={TASK}", "--config.train.tensorboard=False",
                 "--config.train.online_steps=20",
                 "--seeds=0,1", "--config.train.offline_batch_ratio=0.5",
                 "--config.train.bc_offline_only=True"]
  one = str(tmp_path / "one")
  res = subprocess.run([sys.executable, "-m", "experiments.train", f"--workdir={one}",
                        *common_args], cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert res.returncode == 0, res.stderr[-3000:]
  two = str(tmp_path / "two")
  res = subprocess.run([sys.executable, "launch/local.py", "--num_processes=2",
                        "--devices_per_process=1", "--", f"--workdir={two}", *common_args],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert res.returncode == 0, res.stderr[-3000:]
  for seed in (0, 1):
    _assert_same(os.path.join(two, TASK, f"seed_{seed}"), os.path.join(one, TASK, f"seed_{seed}"))
