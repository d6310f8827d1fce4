"""Checkpointing: kill -9 and resume equality in both phases, SIGTERM, device counts, bad input, NaN."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfp_jax import agents
from dfp_jax.agents import dfp
from dfp_jax.data import synthetic
from dfp_jax.parallel import host_device_flags
from dfp_jax.train import checkpoint, loop as trainer
from dfp_jax.train.metrics import read_csv
from experiments.configs import dfp as dfp_configs


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OFFLINE, ONLINE = 200, 80
# Resumption is compared run against run: no simulator needed (the MuJoCo end-to-end runs are
# test_loop's and test_evaluate's).
TASK = synthetic.TINY
# The smoke preset, long enough to be killed in each phase: evaluations every 50 steps,
# a checkpoint every 10, two seeds vectorised (so per-seed state is resumed too).
RUN = ["--config=experiments/configs/dfp.py:smoke", f"--config.env.task={TASK}",
       f"--config.train.offline_steps={OFFLINE}",
       f"--config.train.online_steps={ONLINE}", "--config.train.eval_interval=50",
       "--seeds=0,1"]
TIMING = ("steps_per_s", "eval_time_s")  # wall-clock columns: the only ones that may differ


def _cmd(workdir, data, *extra):
  return [sys.executable, "-m", "experiments.train", *RUN, f"--workdir={workdir}",
          f"--config.env.dataset_dir={data}", *extra]


def _run(workdir, data, *extra, env=None):
  res = subprocess.run(_cmd(workdir, data, *extra), cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env=env)
  return res


def _steps(ckpt_dir):
  return sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit()) if os.path.isdir(ckpt_dir) else []


def _start_and_kill(workdir, data, min_step, sig=signal.SIGKILL, env=None, extra=()):
  """Start the run, wait for a finished checkpoint at >= min_step, then send `sig` a moment later."""
  log = open(os.path.join(os.path.dirname(workdir), f"{os.path.basename(workdir)}.log"), "a+")
  proc = subprocess.Popen(_cmd(workdir, data, *extra), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                          text=True, env=env)
  ckpt_dir = os.path.join(workdir, TASK, "checkpoints")
  deadline = time.time() + 300
  while not any(s >= min_step for s in _steps(ckpt_dir)):
    if proc.poll() is not None or time.time() > deadline:
      proc.kill()
      log.seek(0)
      pytest.fail(f"run ended or stalled before step {min_step}: {log.read()[-3000:]}")
    time.sleep(0.02)
  time.sleep(random.uniform(0.0, 0.3))  # anywhere in the steps that follow
  proc.send_signal(sig)
  proc.wait(timeout=300)
  log.seek(0)
  return proc.returncode, log.read(), _steps(ckpt_dir)


def _run_dir(workdir, seed):
  return os.path.join(workdir, TASK, f"seed_{seed}")


def _final_params(workdir):
  ckpt_dir = os.path.join(workdir, TASK, "checkpoints")
  return checkpoint.Checkpointer(ckpt_dir).restore_raw(OFFLINE + ONLINE)


def _assert_same_metrics(a, b, exact=True):
  for seed in (0, 1):
    for stream in ("train", "eval"):
      x = read_csv(os.path.join(_run_dir(a, seed), f"{stream}.csv"))
      y = read_csv(os.path.join(_run_dir(b, seed), f"{stream}.csv"))
      assert set(x) == set(y)
      np.testing.assert_array_equal(x["step"], y["step"])
      for k in x:
        if k in TIMING:
          continue
        if exact:
          np.testing.assert_array_equal(x[k], y[k], err_msg=f"seed {seed} {stream} {k}")
        else:
          # Offline: float error of the device reductions only. Online it can be amplified
          # without bound: a last-bit change of the policy moves its actions, and on a
          # simulator contact-rich dynamics spread that into other transitions (one batch
          # metric differed by 3% with mujoco 3.1.6 and 24% with 3.3.7 at step 270). So
          # online rows only have to exist, finite where the uninterrupted run's are; exact
          # online resumption is the kill -9 test's (same device count, bit-equal).
          off = x["step"] <= OFFLINE
          np.testing.assert_allclose(x[k][off], y[k][off], rtol=1e-4, atol=1e-5,
                                     err_msg=f"seed {seed} {stream} {k} (offline)")
          # (a log window in which no episode ended has no success rate in either run)
          np.testing.assert_array_equal(np.isfinite(y[k][~off]), np.isfinite(x[k][~off]),
                                        err_msg=f"seed {seed} {stream} {k} (online)")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run, and the data directory the runs are given (unused by TASK)."""
  root = tmp_path_factory.mktemp("ckpt")
  data = str(root / "data")
  res = _run(str(root / "ref"), data)
  assert res.returncode == 0, res.stderr[-3000:]
  return str(root / "ref"), data


@pytest.mark.subprocess
def test_sigterm_saves_and_resumes_on_another_device_count(reference, tmp_path):
  ref, data = reference
  work = str(tmp_path / "term")
  eight = dict(os.environ, XLA_FLAGS=host_device_flags(8, os.environ.get("XLA_FLAGS", "")))
  rc, err, steps = _start_and_kill(work, data, min_step=30, sig=signal.SIGTERM, env=eight)
  assert rc == 128 + signal.SIGTERM, err[-2000:]
  assert "Traceback" not in err
  line = [l for l in err.splitlines() if l.startswith("stopped: SIGTERM at step")]
  assert line and "rerun the same command to resume" in line[0], err[-2000:]
  stopped_at = int(line[0].split("step ")[1].split(":")[0])
  assert stopped_at in steps and stopped_at < OFFLINE  # the signal's own checkpoint
  res = _run(work, data)  # one device now
  assert res.returncode == 0, res.stderr[-3000:]
  assert f"from its checkpoint at step {stopped_at}" in res.stdout
  # Same global batch and numbers on 8 devices and on 1, up to float error.
  _assert_same_metrics(ref, work, exact=False)
  summary = json.load(open(os.path.join(_run_dir(work, 0), "summary.json")))
  assert summary["num_devices"] == 1


@pytest.mark.subprocess
def test_a_finished_run_is_not_retrained_and_another_config_is_refused(reference, tmp_path):
  ref, data = reference
  work = str(tmp_path / "copy")
  shutil.copytree(ref, work)
  train_csv = os.path.join(_run_dir(work, 0), "train.csv")
  before = open(train_csv).read()
  res = _run(work, data, "--config.agent.top_k=2")
  assert res.returncode != 0 and "Traceback" not in res.stderr
  assert "holds a run with a different config (agent.top_k: 4 -> 2)" in res.stderr
  assert open(train_csv).read() == before  # nothing overwritten
  # The same config with --overwrite replaces the run.
  res = _run(work, data, "--config.agent.top_k=2", "--overwrite",
             "--config.train.offline_steps=20", "--config.train.online_steps=0")
  assert res.returncode == 0, res.stderr[-3000:]
  assert json.load(open(os.path.join(_run_dir(work, 0), "config.json")))["agent"]["top_k"] == 2
  assert read_csv(train_csv)["step"].max() == 20


def _ckpt_dir(workdir):
  return os.path.join(workdir, TASK, "checkpoints")


def _truncate(step_dir):
  for dirpath, _, files in os.walk(step_dir):
    for f in files:
      path = os.path.join(dirpath, f)
      with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


@pytest.mark.subprocess
@pytest.mark.parametrize("damage", ["truncated", "file missing"])
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_run_resumes(reference, tmp_path,
                                                                        damage):
  """As a full disk or a lost node can leave it: the newest checkpoint's files cut short, or
  one of its member files gone. The rerun moves it aside (nothing deleted), resumes from the
  one before and ends with the uninterrupted run's numbers."""
  ref, data = reference
  work = str(tmp_path / "work")
  shutil.copytree(ref, work)
  ckpt = _ckpt_dir(work)
  newest = max(_steps(ckpt))
  if damage == "truncated":
    _truncate(os.path.join(ckpt, str(newest)))
  else:
    os.remove(os.path.join(ckpt, "members", str(newest), "member_1.npz"))
  res = _run(work, data)
  assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
  before = sorted(_steps(_ckpt_dir(ref)))[-2]
  assert (f"warning: checkpoint {newest} in {ckpt} cannot be restored (" in res.stdout
          and f"moved it to {ckpt}/damaged-{newest}; resuming from step {before}" in res.stdout)
  assert os.path.isdir(os.path.join(ckpt, f"damaged-{newest}"))
  assert os.path.isdir(os.path.join(ckpt, "members", f"damaged-{newest}"))
  _assert_same_metrics(ref, work)
  for x, y in zip(jax.tree.leaves(_final_params(ref)), jax.tree.leaves(_final_params(work))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.subprocess
def test_corrupt_and_incompatible_checkpoints_are_one_line_errors(reference, tmp_path):
  ref, data = reference
  # Every checkpoint damaged: one line, and every one of them kept (moved aside).
  work = str(tmp_path / "corrupt")
  shutil.copytree(ref, work)
  ckpt = _ckpt_dir(work)
  steps = _steps(ckpt)
  for step in steps:
    _truncate(os.path.join(ckpt, str(step), "device"))
  res = _run(work, data)
  assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: no checkpoint in {ckpt} can be restored (the newest: "), last
  assert sorted(n for n in os.listdir(ckpt) if n.startswith("damaged-")) == sorted(
      f"damaged-{s}" for s in steps)
  # A checkpoint of another network (its config.json files gone, so only the checkpoint knows).
  work = str(tmp_path / "other")
  shutil.copytree(ref, work)
  for seed in (0, 1):
    os.remove(os.path.join(_run_dir(work, seed), "config.json"))
  res = _run(work, data, "--config.agent.actor_hidden=(16,16)")
  assert res.returncode != 0 and "Traceback" not in res.stderr
  assert "holds a run with a different config (agent.actor_hidden" in res.stderr.splitlines()[-1]
  # Other seeds than the checkpoint's.
  res = _run(work, data, "--seeds=0,1,2")
  assert res.returncode != 0 and "Traceback" not in res.stderr
  assert "this run asks for ['seed_0', 'seed_1', 'seed_2']" in res.stderr


@pytest.mark.subprocess
def test_corrupt_dataset_is_one_line_error(tiny_cube_single, tmp_path):
  data = tmp_path / "data"
  shutil.copytree(tiny_cube_single, data)
  path = data / "cube-single-play-v0.npz"
  path.write_bytes(path.read_bytes()[:1000])  # truncated download
  res = subprocess.run([sys.executable, "-m", "experiments.train",
                        "--config=experiments/configs/dfp.py:smoke", f"--workdir={tmp_path / 'run'}",
                        f"--config.env.dataset_dir={data}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "cube-single-play-v0.npz" in last, last


# --- NaN / inf: an agent whose updates go non-finite after `bad_from` good steps.

def _nan_method(bad_from):
  def update(agent, batch, key, **kwargs):
    new, info = dfp.update(agent, batch, key, **kwargs)
    poison = lambda x: jnp.where(agent.step >= bad_from, x * jnp.nan, x)
    return new.replace(critic_params=jax.tree.map(poison, new.critic_params)), info
  return types.SimpleNamespace(create=dfp.create, act=dfp.act, start_online=dfp.start_online,
                               update=update)


def _nan_config(tiny_cube_single, policy):
  c = dfp_configs.get_config("smoke")
  c.method = "nan_dfp"
  c.env.dataset_dir, c.env.generate_episodes = tiny_cube_single, 0
  c.train.on_nonfinite = policy
  c.train.tensorboard = False
  c.train.eval_episodes = 0
  return c


@pytest.mark.slow  # trains in this process
def test_nonfinite_update_stops_and_keeps_the_last_good_checkpoint(tiny_cube_single, tmp_path,
                                                                    monkeypatch):
  monkeypatch.setitem(agents.METHODS, "nan_dfp", _nan_method(bad_from=12))
  c = _nan_config(tiny_cube_single, "stop")
  with pytest.raises(trainer.NonFiniteError, match="last good checkpoint is step 10"):
    trainer.train_and_evaluate(c, str(tmp_path))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  assert ckpt.latest_step() == 10
  saved = ckpt.restore_raw(10)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(saved) if x.dtype.kind == "f")


@pytest.mark.slow  # trains in this process
def test_skip_policy_skips_nonfinite_updates(tiny_cube_single, tmp_path, monkeypatch):
  monkeypatch.setitem(agents.METHODS, "nan_dfp", _nan_method(bad_from=12))
  c = _nan_config(tiny_cube_single, "skip")
  [summary] = trainer.train_and_evaluate(c, str(tmp_path))
  # The step counter stops at 12 (skipped updates do not advance it), so every later
  # update is bad: the offline ones after the 12th and all online ones.
  online_updates = c.train.online_steps - c.train.start_training + 1
  assert summary["skipped_steps"] == c.train.offline_steps - 12 + online_updates
  final = checkpoint.Checkpointer(str(tmp_path / "checkpoints")).restore_raw(
      c.train.offline_steps + c.train.online_steps)
  leaves = [x for x in jax.tree.leaves(final) if x.dtype.kind == "f"]
  assert all(np.all(np.isfinite(x)) for x in leaves)
  train = read_csv(str(tmp_path / "train.csv"))
  assert np.all(np.diff(train["skipped_steps"]) >= 0) and train["skipped_steps"][-1] > 0


def _kill_when(workdir, data, ready):
  """Start the run, SIGKILL it as soon as ready(checkpoint dir) holds; returns (steps saved,
  the names in the checkpoint dir at the kill)."""
  proc = subprocess.Popen(_cmd(workdir, data), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpt_dir = os.path.join(workdir, TASK, "checkpoints")
  deadline = time.time() + 300
  while True:
    names = os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []
    if ready(names):
      break
    if proc.poll() is not None or time.time() > deadline:
      proc.kill()
      pytest.fail(f"the run ended or stalled before the kill; checkpoints: {names}")
    time.sleep(0.002)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  return _steps(ckpt_dir), names


@pytest.mark.subprocess
def test_soak_ten_kills_at_random_moments_resume_to_the_uninterrupted_run(reference, tmp_path):
  """SIGKILL at 10 random moments over both phases (2 of them while a checkpoint is being
  written), rerunning after each: the run ends exactly where the uninterrupted one ended."""
  ref, data = reference
  work = str(tmp_path / "soak")
  rng = random.Random(0)
  # Kill moments: a random delay after a checkpoint at or past a target step; targets spread
  # over the offline (< 200) and online (200-280) phases. Two kills wait for orbax's
  # temporary directory of a checkpoint in progress instead.
  targets = sorted(rng.sample(range(10, OFFLINE + ONLINE - 30, 10), 8))
  plan = [("step", t) for t in targets]
  plan.insert(3, ("writing", None))
  plan.insert(8, ("writing", None))
  done, during_write = 0, 0
  for kind, target in plan:
    last = max(_steps(os.path.join(work, TASK, "checkpoints"))
               or [0])
    if kind == "writing":
      def ready(names, last=last):
        return any("tmp" in n and n.split(".")[0].isdigit() and int(n.split(".")[0]) > last
                   for n in names)
    else:
      delay, state = rng.uniform(0.0, 0.5), {}

      def ready(names, target=max(target, last + 10), delay=delay, state=state):
        if "t" not in state and any(n.isdigit() and int(n) >= target for n in names):
          state["t"] = time.time()
        return "t" in state and time.time() - state["t"] >= delay
    steps, names = _kill_when(work, data, ready)
    done += 1
    if kind == "writing":
      assert any("tmp" in n for n in names), names
      during_write += 1
  assert done == 10 and during_write == 2
  assert max(_steps(os.path.join(work, TASK,
                                 "checkpoints"))) > OFFLINE  # the kills reached the online phase
  res = _run(work, data)
  assert res.returncode == 0, res.stderr[-3000:]
  _assert_same_metrics(ref, work)
  for x, y in zip(jax.tree.leaves(_final_params(ref)), jax.tree.leaves(_final_params(work))):
    np.testing.assert_array_equal(x, y)
  for seed in (0, 1):
    sa = json.load(open(os.path.join(_run_dir(ref, seed), "summary.json")))
    sb = json.load(open(os.path.join(_run_dir(work, seed), "summary.json")))
    for k in ("offline_success", "online_success", "final_success", "final_return"):
      assert sa[k] == sb[k], k


def test_a_config_saved_before_matmul_precision_existed_compares_as_the_backend_default():
  from dfp_jax.train import checkpoint as ck
  old = {"train": {"batch_size": 8}}
  assert ck.config_differences(old, {"train": {"batch_size": 8, "matmul_precision": "default"}}) == []
  new = {"train": {"batch_size": 8, "matmul_precision": "fp32"}}
  assert ck.config_differences(old, new) == ["train.matmul_precision: default -> fp32"]
  with pytest.raises(ck.CheckpointError, match="saved before train.matmul_precision existed: "
                                               "pass --config.train.matmul_precision=default"):
    ck.check_same_config("runs/x", old, new)


def test_a_config_saved_under_a_fields_old_name_compares_under_its_new_name():
  from dfp_jax.train import checkpoint as ck
  old = {"train": {"batch_size": 8, "data_parallel": True}}
  assert ck.config_differences(old, {"train": {"batch_size": 8, "use_mesh": True}}) == []
  assert ck.config_differences(old, {"train": {"batch_size": 8, "use_mesh": False}}) == [
      "train.use_mesh: True -> False"]


@pytest.mark.subprocess
def test_a_run_with_a_separate_offline_buffer_resumes_to_the_uninterrupted_run(reference,
                                                                               tmp_path):
  """train.offline_batch_ratio (+ bc_offline_only): killed in the online phase and rerun, the
  CSVs and final parameters equal the uninterrupted run's (the online buffer, the offline
  data kept whole and the minibatch RNG all come back)."""
  _, data = reference
  mix = ["--config.train.offline_batch_ratio=0.5", "--config.train.bc_offline_only=True"]
  whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
  res = _run(whole, data, *mix)
  assert res.returncode == 0, res.stderr[-3000:]
  rc, log, steps = _start_and_kill(killed, data, OFFLINE + 20, extra=mix)
  assert rc != 0 and any(s > OFFLINE for s in steps), (rc, steps, log[-2000:])
  res = _run(killed, data, *mix)
  assert res.returncode == 0, res.stderr[-3000:]
  _assert_same_metrics(whole, killed)
  a, b = _final_params(whole), _final_params(killed)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_kill_while_a_new_column_rewrites_the_csv_keeps_every_earlier_row(tmp_path,
                                                                             monkeypatch):
  """The first row with new columns (the online phase's) rewrites the CSV whole; a kill in
  the middle of that rewrite (here: the write dying halfway) leaves the earlier rows for the
  resumed run, which keeps the rows up to its checkpoint."""
  import builtins
  from dfp_jax.train import metrics

  class Killed(Exception):
    pass

  class Dying:
    def __init__(self, f):
      self.f = f

    def write(self, text):
      self.f.write(text[:len(text) // 2])
      self.f.flush()
      raise Killed

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.f.close()

  log = metrics.MetricsLogger(str(tmp_path), tensorboard=False)
  log.write("train", 10, {"a": 1.0})
  log.write("train", 20, {"a": 2.0})
  real_open = builtins.open
  monkeypatch.setattr(builtins, "open", lambda file, mode="r", *args, **kwargs: (
      Dying(real_open(file, mode, *args, **kwargs)) if "w" in mode
      else real_open(file, mode, *args, **kwargs)))
  with pytest.raises(Killed):
    log.write("train", 30, {"a": 3.0, "online_only": 1.0})
  monkeypatch.undo()
  metrics.truncate_csv(log.path("train"), 20)  # what the resumed run does first
  rows = read_csv(log.path("train"))
  np.testing.assert_array_equal(rows["step"], [10, 20])
  np.testing.assert_array_equal(rows["a"], [1.0, 2.0])
