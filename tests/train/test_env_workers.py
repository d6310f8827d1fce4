"""Training with environment workers: the same run as in-process stepping, a dead worker stops
the run with one error and the rerun resumes, and workers never outlive the trainer."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dfp_jax.data import synthetic
from dfp_jax.train import checkpoint, loop
from dfp_jax.train.envs import MemberEnvs
from dfp_jax.train.metrics import read_csv
from experiments.configs import dfp as dfp_configs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(data_dir, workers, task=None):
  """cube-single from `data_dir`, or `task` (the simulator-free synthetic one, where workers
  and in-process stepping are compared for the loop's bookkeeping rather than the physics)."""
  c = dfp_configs.get_config("smoke")
  c.env.dataset_dir, c.env.generate_episodes = data_dir, 0
  c.env.task = task or c.env.task
  # cube-single episodes are 200 steps: the online phase ends one episode and starts another.
  c.train.offline_steps, c.train.online_steps, c.train.start_training = 10, 220, 5
  c.train.eval_interval, c.train.log_interval, c.train.checkpoint_interval = 115, 10, 100
  c.train.eval_episodes = 2
  c.train.tensorboard, c.train.progress_bar = False, False
  c.train.env_workers = workers
  return c


def _rows(path):
  rows = read_csv(path)
  return {k: v for k, v in rows.items() if not k.endswith("time_s") and k != "steps_per_s"}


def _assert_same_run(a, b, members):
  for m in members:
    for name in ("train.csv", "eval.csv"):
      x, y = _rows(os.path.join(a, m, name)), _rows(os.path.join(b, m, name))
      assert x.keys() == y.keys()
      for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=f"{m}/{name}: {k}")
  x, y = (_final_device_tree(d) for d in (a, b))
  assert x.keys() == y.keys()
  for k in x:
    np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


def _final_device_tree(workdir):
  """The latest checkpoint's agents and keys, by path."""
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  try:
    return checkpoint.by_path(ckpt.restore_saved(ckpt.latest_step()))
  finally:
    ckpt.close()


@pytest.fixture(scope="module")
def in_process_and_workers(tiny_cube_single, tmp_path_factory):
  """The same two-member run stepped in this process and in two workers."""
  out = {}
  for workers in (0, 2):
    work = tmp_path_factory.mktemp(f"workers{workers}")
    loop.train_and_evaluate(_config(tiny_cube_single, workers), str(work), seeds=[0, 1])
    out[workers] = str(work)
  return out


@pytest.mark.slow
def test_workers_give_the_same_two_member_run_as_in_process_stepping(in_process_and_workers):
  episodes = read_csv(os.path.join(in_process_and_workers[2], "seed_0", "train.csv"))["episodes"]
  assert np.nanmax(episodes) >= 1  # an episode ended and the next one began
  _assert_same_run(in_process_and_workers[0], in_process_and_workers[2], ["seed_0", "seed_1"])


@pytest.mark.slow
def test_workers_give_the_same_population_as_in_process_stepping(tmp_path):
  sweep = {"agent.topk_weight": [0.5, 2.0]}
  dirs = {}
  for workers in (0, 2):
    c = _config(None, workers, task=synthetic.TINY)
    c.train.online_steps = 60
    dirs[workers] = str(tmp_path / f"w{workers}")
    loop.train_and_evaluate(c, dirs[workers], seeds=[0, 1], sweep=sweep)
  members = [f"topk_weight={v}/seed_{s}" for v in ("0.5", "2") for s in (0, 1)]
  assert all(os.path.isdir(os.path.join(dirs[0], m)) for m in members)
  _assert_same_run(dirs[0], dirs[2], members)


@pytest.mark.slow
def test_a_killed_worker_stops_the_run_with_one_error_and_the_rerun_resumes(
    in_process_and_workers, tiny_cube_single, tmp_path, monkeypatch):
  step = MemberEnvs.step
  calls = []

  def step_then_kill(self, *args):
    calls.append(1)
    if len(calls) == 150:  # online step 150: after the checkpoint at step 100
      os.kill(self.pool.processes[1].pid, signal.SIGKILL)
    return step(self, *args)

  monkeypatch.setattr(MemberEnvs, "step", step_then_kill)
  config = _config(tiny_cube_single, 2)
  with pytest.raises(loop.EnvironmentFailure) as e:
    loop.train_and_evaluate(config, str(tmp_path), seeds=[0, 1])
  message = str(e.value)
  assert message.startswith("environment worker 1 stopped (killed by SIGKILL) (seed_")
  assert "stepping the environments at step 160; the checkpoint at step 100 in " in message
  assert message.endswith("is intact; rerun the same command to resume")
  assert "\n" not in message
  monkeypatch.setattr(MemberEnvs, "step", step)
  loop.train_and_evaluate(config, str(tmp_path), seeds=[0, 1])  # resumes from step 100
  _assert_same_run(in_process_and_workers[2], str(tmp_path), ["seed_0", "seed_1"])


def _children(pid):
  try:
    tasks = os.listdir(f"/proc/{pid}/task")
  except FileNotFoundError:
    return []
  out = []
  for t in tasks:
    try:
      with open(f"/proc/{pid}/task/{t}/children") as f:
        out += [int(c) for c in f.read().split()]
    except FileNotFoundError:
      pass
  return out


def _logging(workdir):
  return any(name == "train.csv" for _, _, names in os.walk(workdir) for name in names)


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
  except FileNotFoundError:
    return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_workers_never_outlive_the_trainer(signum, tmp_path):
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.train", "--config=experiments/configs/dfp.py:smoke",
       f"--config.env.task={synthetic.TINY}", "--config.train.env_workers=2",
       "--seeds=0,1", "--config.train.eval_episodes=2",  # 2 training + 2 evaluation workers
       "--config.train.offline_steps=100000", "--config.train.progress_bar=False",
       f"--workdir={tmp_path / 'run'}"], cwd=ROOT, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 240
    workers = []
    while len(workers) < 4 and time.time() < deadline and proc.poll() is None:
      time.sleep(0.5)
      workers = _children(proc.pid)
    assert len(workers) == 4, proc.stderr.read() if proc.poll() is not None else workers
    # Signal once the offline phase is logging: the trainer's signal handlers are in place.
    while not _logging(tmp_path / "run") and time.time() < deadline and proc.poll() is None:
      time.sleep(0.5)
    assert _logging(tmp_path / "run"), proc.stderr.read() if proc.poll() is not None else "no log"
    proc.send_signal(signum)
    proc.wait(120)
    deadline = time.time() + 15
    while any(_alive(w) for w in workers) and time.time() < deadline:
      time.sleep(0.2)
    assert not any(_alive(w) for w in workers)
    if signum != signal.SIGKILL:
      assert proc.returncode == 128 + signum, proc.stderr.read()[-2000:]
  finally:
    if proc.poll() is None:
      proc.kill()
