"""Bad input ends in one `error:` line and a non-zero exit, never a traceback, and loses nothing;
one run per workdir."""

import contextlib
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import flags

from dfp_jax.train import plan
from dfp_jax.train.metrics import read_csv
from experiments import cli, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASK = "cube-single-play-singletask-task2-v0"
SMOKE = "--config=experiments/configs/dfp.py:smoke"

# (extra arguments, text the error line must contain). Every one of these fails before the
# run writes anything.
BAD_FLAGS = [
    (["--config.agent.top_k=abc"], "invalid literal for int() with base 10: 'abc'"),
    (["--config.agent.no_such_field=1"], "no config field no_such_field"),
    (["--config=experiments/configs/dfp.py:no_such_preset"], "unknown preset 'no_such_preset'"),
    (["--config=experiments/configs/no_such_file.py"], "No such file or directory"),
    (["--config.agent.top_k=40"], "K must not exceed the 16 candidates"),
    (["--config.train.batch_size=0"], "train.batch_size=0: must be an integer in [1, 2147483647]"),
    (["--config.agent.temperatures=()"], "must be a non-empty list of positive temperatures"),
    (["--config.train.on_nonfinite=ignore"], "must be one of stop, skip"),
    (["--config.train.matmul_precision=fp64"], "must be one of fp32, tf32, bf16, default"),
    (["--config.method=no_such_method"], "unknown method 'no_such_method'"),
    (["--config.env.task=no-such-task"], "is neither an OGBench single-task name"),
    (["--seeds=a,b"], "--seeds=a,b: expected non-negative integers"),
    (["--seeds=-1"], "--seeds=-1: expected non-negative integers"),
    (["--seeds=0,0"], "seed 0 is given twice"),
    (["--tasks="], "--tasks is empty"),
    (["--tasks=no_such_preset"], "unknown preset 'no_such_preset'"),
    (["--ablation=no_such_ablation"], "unknown ablation 'no_such_ablation'"),
    (["--mesh=3,1"], "--mesh=3,1: POP x DATA must equal the 1 devices"),
    (["--mesh=a"], "--mesh=a: expected POP,DATA"),
    (["--sweep=agent.top_k=1;2"], "agent.top_k changes array shapes"),
    (["--sweep=agent.topk_weight="], "expected FIELD=V1;V2;..."),
    (["--sweep=agent.topk_weight=0.1;0.1"], "a value is given twice"),
    (["--sweep=agent.topk_weight=0.1;x"], "is not a number"),
    (["--sweep=agent.temperatures=0.05;0.005,0.05"], "the same number of temperatures"),
    (["unexpected_positional"], "unexpected arguments unexpected_positional"),
    (["--config.train.env_workers=-1"], "train.env_workers=-1: must be an integer in [0, 2147483647]"),
    (["--init_from=/no/such/run"], "/no/such/run holds no checkpoints/"),
    (["--share_offline"], "--share_offline shares one pretraining among the runs of --seeds"),
    (["--sweep=agent.lr=0.1;-1"], "member lr=-1/seed_0: config agent.lr=-1.0: must be a finite number in (0, inf)"),
    (["--seeds=99999999999999999999"], "seeds must be at most 2147483647"),
    (["--config.seed=4294967296"], "config seed=4294967296: must be an integer in [0, 2147483647]"),
]


def _train(*args, timeout=600):
  return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def _error_line(res):
  assert res.returncode != 0, res.stdout[-2000:]
  assert "Traceback" not in res.stderr, res.stderr[-3000:]
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), last
  return last


def _train_in_process(args):
  """The error line `python -m experiments.train ARGS` ends with, run in this process: the
  trainer's flag definitions, parsing, plan and execution, and cli.run's error handling."""
  argv = ["experiments.train", *args]
  fv = flags.FlagValues()
  try:
    train.define_flags(fv, argv)
    for _ in plan.execute(train.plan_from(cli.parse_flags(argv, fv), fv)):
      pass
  except SystemExit as e:
    return str(e.code)
  except (*cli.known_errors(), *train.ERRORS, *train.FATAL) as e:
    return f"error: {cli.failure_line(e)}"
  pytest.fail(f"{' '.join(args)} was accepted")


@pytest.mark.parametrize("args, message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_are_one_line_and_write_nothing(args, message, tiny_cube_single, tmp_path,
                                                  monkeypatch):
  monkeypatch.chdir(ROOT)  # the config paths are relative to the repository
  last = _train_in_process([SMOKE, *args, f"--workdir={tmp_path / 'run'}",
                            f"--config.env.dataset_dir={tiny_cube_single}"])
  assert "\n" not in last and last.startswith("error: ") and message in last, last
  assert not (tmp_path / "run").exists()


# One refusal at parsing and one inside the trainer, through the real command line.
@pytest.mark.subprocess
@pytest.mark.parametrize("args, message", [r for r in BAD_FLAGS if r[0] in (
    ["--config.agent.top_k=abc"], ["--mesh=3,1"])], ids=["parsing", "trainer"])
def test_the_command_line_prints_the_same_one_line(args, message, tiny_cube_single, tmp_path):
  res = _train(SMOKE, *args, f"--workdir={tmp_path / 'run'}",
               f"--config.env.dataset_dir={tiny_cube_single}")
  assert message in _error_line(res)
  assert not (tmp_path / "run").exists()


@contextlib.contextmanager
def _tmpfs(path, options):
  """A tmpfs mounted at `path` (root only); skips the test where mounting is not allowed."""
  os.makedirs(path)
  if shutil.which("mount") is None:
    pytest.skip("no mount command here")
  res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True, text=True)
  if res.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()[:100]})")
  try:
    yield path
  finally:
    subprocess.run(["umount", str(path)], check=False)


@pytest.mark.subprocess
def test_unwritable_workdirs_are_one_line(tiny_cube_single, tmp_path):
  data = f"--config.env.dataset_dir={tiny_cube_single}"
  a_file = tmp_path / "a_file"
  a_file.write_text("keep me")
  cases = [("/proc/forbidden", "cannot write /proc/forbidden"),
           ("/dev/null/x", "cannot write /dev/null/x"),
           (str(a_file), "a file is in the way of a directory"),
           (str(a_file / "run"), "a file is in the way of a directory")]
  for workdir, message in cases:
    assert message in _error_line(_train(SMOKE, f"--workdir={workdir}", data))
  assert a_file.read_text() == "keep me"
  with _tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
    assert "Read-only file system" in _error_line(_train(SMOKE, f"--workdir={ro}/run", data))


@pytest.mark.subprocess
def test_a_full_disk_during_a_checkpoint_is_one_line(tiny_cube_single, tmp_path):
  # 300 KB holds the configs and the first CSV rows but not a two-seed checkpoint.
  with _tmpfs(tmp_path / "full", "size=300k") as full:
    last = _error_line(_train(SMOKE, f"--workdir={full}/run", "--seeds=0,1",
                              f"--config.env.dataset_dir={tiny_cube_single}"))
  assert "No space left on device" in last, last


def _wait_for(path, proc, timeout=600):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    if proc.poll() is not None or time.time() > deadline:
      pytest.fail(f"{path} never appeared: {proc.stderr.read()[-3000:] if proc.stderr else ''}")
    time.sleep(0.05)


@pytest.mark.subprocess
def test_a_checkpoint_directory_deleted_while_running_stops_the_run(tiny_cube_single, tmp_path):
  work = tmp_path / "run"
  proc = subprocess.Popen([sys.executable, "-m", "experiments.train", SMOKE, f"--workdir={work}",
                           "--seeds=0,1", f"--config.env.dataset_dir={tiny_cube_single}",
                           "--config.train.tensorboard=False"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  ckpt = work / TASK / "checkpoints"
  _wait_for(ckpt / "10", proc)
  time.sleep(1.0)
  shutil.rmtree(ckpt)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode != 0 and "Traceback" not in err, err[-3000:]
  last = err.strip().splitlines()[-1]
  assert last.startswith("error: checkpoint 10 in") and "was deleted while the run" in last, last


def _columns(path):
  rows = read_csv(str(path))
  return {k: v for k, v in rows.items()
          if k not in ("steps_per_s", "eval_time_s", "wall_time_s")}


@pytest.mark.subprocess
def test_a_second_run_on_a_locked_workdir_is_refused_and_the_first_is_undisturbed(
    tiny_cube_single, smoke_two_seeds, tmp_path):
  args = [SMOKE, "--seeds=0,1", f"--config.env.dataset_dir={tiny_cube_single}",
          "--config.train.tensorboard=False"]

  work = tmp_path / "run"
  first = subprocess.Popen([sys.executable, "-m", "experiments.train", *args,
                            f"--workdir={work}"], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  _wait_for(work / TASK / "seed_0" / "train.csv", first)
  second = _train(*args, f"--workdir={work}")
  last = _error_line(second)
  assert "is in use by another run" in last and f"pid {first.pid} on " in last, last
  _, err = first.communicate(timeout=600)
  assert first.returncode == 0, err[-3000:]
  for seed in (0, 1):
    for stream in ("train.csv", "eval.csv"):
      a = _columns(smoke_two_seeds / TASK / f"seed_{seed}" / stream)
      b = _columns(work / TASK / f"seed_{seed}" / stream)
      assert a.keys() == b.keys()
      for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"seed {seed} {stream} {k}")
  # The lock of a finished (or killed) run is free: the same command runs again at once.
  again = _train(*args, f"--workdir={work}")
  assert again.returncode == 0 and "done: " in again.stdout, again.stderr[-3000:]


BAD_BENCHMARK_FLAGS = [
    (["--methods=nosuch"], "unknown method 'nosuch'"),
    (["--presets=nope"], "unknown preset 'nope'"),
    (["--protocol_members=0"], "--protocol_members=0: expected positive integers"),
    (["--suite=nosuch"], "value should be one of <tables|accelerator|protocol>"),
    (["stray"], "unexpected arguments stray"),
    (["--suite=accelerator", "--methods=nosuch"], "unknown method 'nosuch'"),
    (["--suite=accelerator", "--presets=nope"], "unknown preset 'nope'"),
    (["--suite=protocol", "--protocol_episodes=0"], "--protocol_episodes=0: expected positive"),
]


@pytest.mark.subprocess
@pytest.mark.parametrize("args, message", BAD_BENCHMARK_FLAGS,
                         ids=[" ".join(a) for a, _ in BAD_BENCHMARK_FLAGS])
def test_bad_benchmark_flags_are_one_line(args, message):
  res = subprocess.run([sys.executable, "-m", "experiments.benchmark", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert message in _error_line(res)


# (module, arguments, text the one error line must contain) for the other command lines.
BAD_COMMANDS = [
    ("experiments.evaluate", ["--workdir=/no/such/run"], "/no/such/run holds no checkpoints/"),
    ("experiments.evaluate", ["--workdir=/tmp", "--episodes=0"], "need 1 <= --episodes"),
    ("experiments.evaluate", ["--episodes=x"], "flag --episodes=x"),
    ("experiments.report", ["/no/such/dir", "--out=/tmp/unused"], "/no/such/dir does not exist"),
    ("experiments.report", ["--out=/tmp/unused"], "give one or more run directories"),
    ("experiments.report", [".", "--out=/tmp/unused", "--paired"], "--paired compares with a "),
    ("experiments.generate_ogbench", ["--dataset=nosuch-v0", "--out=/tmp/unused"],
     "unknown dataset 'nosuch-v0'"),
    ("experiments.generate_ogbench", ["--episodes=0", "--out=/tmp/unused"],
     "--episodes=0: must be >= 1"),
    ("experiments.generate_robomimic", ["--task=nosuch", "--episodes=1", "--out=/tmp/u.hdf5"],
     "unknown Robomimic task 'nosuch'"),
    ("experiments.evaluate", ["--workdir=/tmp", "--perturb=sticky=2"],
     "perturbation sticky=2: must be in [0, 1]"),
    ("experiments.evaluate", ["--workdir=/tmp", "--perturb=nosuch=1"],
     "unknown perturbation 'nosuch'"),
    ("experiments.robustness", [".", "--out=/tmp/unused", "--perturb=latency=0;1.5"],
     "perturbation latency=1.5: must be an integer >= 0"),
    ("experiments.robustness", ["/no/such/dir", "--out=/tmp/unused", "--perturb=push=1"],
     "/no/such/dir does not exist"),
    ("experiments.robustness", ["--out=/tmp/unused", "--perturb=push=1"],
     "give one or more run directories"),
]


@pytest.mark.subprocess
@pytest.mark.parametrize("module, args, message", BAD_COMMANDS,
                         ids=[f"{m} {' '.join(a)}" for m, a, _ in BAD_COMMANDS])
def test_bad_inputs_of_the_other_commands_are_one_line(module, args, message, tmp_path):
  res = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path if module.endswith(
      "report") else ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert message in _error_line(res)
