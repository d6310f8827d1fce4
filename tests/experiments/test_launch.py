"""Launchers: dry runs print valid commands; the local launcher runs a real two-process job."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dfp_jax.data import synthetic
from dfp_jax.train.metrics import read_csv

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _launch(script, *args, timeout=60):
  res = subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
  assert res.returncode == 0, res.stderr[-3000:]
  return res.stdout


def _children(pid):
  """The pids whose parent is `pid` (from /proc: no procps needed)."""
  out = []
  for name in os.listdir("/proc"):
    try:
      with open(f"/proc/{name}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
      continue
    if name.isdigit() and int(fields[1]) == pid:
      out.append(int(name))
  return out


def test_local_dry_run_prints_one_command_per_process():
  out = _launch("local.py", "--num_processes=3", "--devices_per_process=2", "--port=1234",
                "--dry-run", "--", "--config=experiments/configs/dfp.py:smoke", "--seeds=0,1")
  cmds = [shlex.split(line) for line in out.strip().splitlines()]
  assert len(cmds) == 3
  for i, cmd in enumerate(cmds):
    # The device count is added to the XLA flags already set (the suite's, tests/conftest.py).
    flags = cmd[0].removeprefix("XLA_FLAGS=").split()
    assert flags[-1] == "--xla_force_host_platform_device_count=2"
    assert flags[:-1] == os.environ.get("XLA_FLAGS", "").split()
    assert cmd[2:4] == ["-m", "experiments.train"]
    assert "--coordinator_address=localhost:1234" in cmd and "--num_processes=3" in cmd
    assert f"--process_id={i}" in cmd and cmd[-2:] == ["--config=experiments/configs/dfp.py:smoke",
                                                      "--seeds=0,1"]


def test_tpu_dry_run_copies_installs_and_trains_on_all_workers():
  out = _launch("tpu_pod.py", "--tpu=pod", "--zone=us-central2-b", "--project=p", "--dry-run",
                "--", "--config=experiments/configs/dfp.py:cube-triple-task4", "--seeds=0,1")
  cmds = [shlex.split(line) for line in out.strip().splitlines()]
  assert [c[4] for c in cmds] == ["scp", "ssh", "ssh"]
  assert all(c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] and "--worker=all" in c
             and "--zone=us-central2-b" in c and "--project=p" in c for c in cmds)
  train = [a for a in cmds[2] if a.startswith("--command=")][0]
  inner = shlex.split(train.split("&&", 1)[1])
  assert inner == ["python", "-m", "experiments.train", "--distributed",
                   "--config=experiments/configs/dfp.py:cube-triple-task4", "--seeds=0,1"]
  assert "jax[tpu]" in cmds[1][-1]


def test_slurm_dry_run_prints_a_valid_script_and_writes_nothing(tmp_path):
  script = tmp_path / "job.sbatch"
  out = _launch("slurm.py", "--nodes=4", "--gpus_per_node=8", "--partition=gpu",
                f"--script={script}", "--dry-run", "--", "--tasks=paper", "--seeds=0,1,2")
  text, last = out.rsplit("\n", 2)[0] + "\n", out.strip().splitlines()[-1]
  assert "#SBATCH --nodes=4" in text and "#SBATCH --gpus-per-node=8" in text
  assert "#SBATCH --ntasks-per-node=1" in text and "#SBATCH --partition=gpu" in text
  assert ("srun python -m experiments.train --distributed --tasks=paper --seeds=0,1,2"
          in text.splitlines())
  (tmp_path / "check.sh").write_text(text)
  assert subprocess.run(["bash", "-n", str(tmp_path / "check.sh")]).returncode == 0
  assert shlex.split(last) == ["sbatch", str(script)] and not script.exists()


@pytest.mark.slow
def test_two_process_run_matches_single_process(tmp_path):
  """Two processes x 2 CPU devices joined by jax.distributed = one process, same numbers
  (compared run against run: the simulator-free synthetic task)."""
  args = ["--config=experiments/configs/dfp.py:smoke", "--config.train.batch_size=32",
          f"--config.env.task={synthetic.TINY}"]
  _launch("local.py", "--num_processes=2", "--devices_per_process=2", "--",
          f"--workdir={tmp_path / 'multi'}", *args, timeout=600)
  res = subprocess.run([sys.executable, "-m", "experiments.train", f"--workdir={tmp_path / 'one'}",
                        *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stderr[-3000:]
  summary = json.loads((tmp_path / "multi" / "summary.json").read_text())
  assert (summary["num_processes"], summary["num_devices"]) == (2, 4)
  a, b = read_csv(str(tmp_path / "multi" / "train.csv")), read_csv(str(tmp_path / "one" / "train.csv"))
  np.testing.assert_array_equal(a["step"], b["step"])  # one writer: no duplicated rows
  for k in ("actor/loss", "critic/loss", "critic/q_mean", "actor/grad_norm"):
    np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)

  # Multi-host resume. SIGTERM on both processes: they stop at one agreed step with one
  # checkpoint, exit 143, and the rerun of the same launch restores that step on both and
  # ends with the uninterrupted run's numbers (online-phase resume onto a mesh after a kill -9
  # is the population test's).
  term = tmp_path / "term"
  launcher = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "launch", "local.py"), "--num_processes=2",
       "--devices_per_process=2", "--", f"--workdir={term}", *args],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while not (term / "checkpoints" / "10").exists():
    assert launcher.poll() is None and time.time() < deadline, "run ended before step 10"
    time.sleep(0.01)
  children = _children(launcher.pid)
  assert len(children) == 2
  for pid in children:
    os.kill(pid, signal.SIGTERM)
  _, err = launcher.communicate(timeout=600)
  assert launcher.returncode == 143, err[-3000:]
  stopped = [line for line in err.splitlines() if line.startswith("stopped: SIGTERM at step")]
  assert len(stopped) == 2 and len(set(stopped)) == 1, err[-3000:]  # both at the same step
  step = int(stopped[0].split("at step ")[1].split(":")[0])
  saved = sorted(int(n) for n in os.listdir(term / "checkpoints") if n.isdigit())
  assert saved[-1] == step and not (term / "summary.json").exists()
  out = _launch("local.py", "--num_processes=2", "--devices_per_process=2", "--",
                f"--workdir={term}", *args, timeout=600)
  assert f"from its checkpoint at step {step}" in out
  for stream in ("train", "eval"):
    a = read_csv(str(tmp_path / "multi" / f"{stream}.csv"))
    c = read_csv(str(term / f"{stream}.csv"))
    for k in a:
      if k not in ("steps_per_s", "eval_time_s"):
        np.testing.assert_array_equal(a[k], c[k], err_msg=f"SIGTERM {stream} {k}")
  assert json.loads((term / "summary.json").read_text())["final_success"] == \
      summary["final_success"]


def test_several_training_commands_run_one_after_another_in_one_job(tmp_path):
  lam = ["--tasks=cube-quadruple-100m-task2", "--ablation=topk_weight", "--seeds=0,1,2,3,4"]
  temps = ["--tasks=cube-quadruple-100m-task2", "--ablation=temperatures", "--seeds=0,1,2,3,4"]
  out = _launch("tpu_pod.py", "--tpu=pod", "--zone=z", "--dry-run", "--", *lam, "--", *temps)
  train = [a for a in shlex.split(out.strip().splitlines()[2]) if a.startswith("--command=")][0]
  steps = [shlex.split(part) for part in train.split("&&")[1:]]
  assert steps == [["python", "-m", "experiments.train", "--distributed", *lam],
                   ["python", "-m", "experiments.train", "--distributed", *temps]]
  out = _launch("slurm.py", "--nodes=2", f"--script={tmp_path / 'x.sbatch'}", "--dry-run", "--",
                *lam, "--", *temps)
  sruns = [shlex.split(line) for line in out.splitlines() if line.startswith("srun ")]
  assert sruns == [["srun", "python", "-m", "experiments.train", "--distributed", *lam],
                   ["srun", "python", "-m", "experiments.train", "--distributed", *temps]]
  out = _launch("local.py", "--num_processes=2", "--dry-run", "--", "--seeds=0", "--", "--seeds=1")
  cmds = [shlex.split(line) for line in out.strip().splitlines()]
  assert [c[-1] for c in cmds] == ["--seeds=0", "--seeds=0", "--seeds=1", "--seeds=1"]


def test_prepare_accelerator_carries_what_the_suite_imports_beyond_the_preinstalled_stack():
  """The offline wheel plan (no download): ml_collections (the configs) travels; jax, flax and
  the rest of the machine's stack, their own requirements and this project do not."""
  sys.path.insert(0, os.path.join(ROOT, "launch"))
  try:
    import prepare_accelerator as prep
  finally:
    sys.path.pop(0)
  pins = prep.plan()
  assert "ml-collections" in pins and all(v for v in pins.values())
  carried_but_preinstalled = set(pins) & prep.closure(prep.PREINSTALLED)
  assert not carried_but_preinstalled and "dfp-jax" not in pins
  assert not {"mujoco", "ogbench", "tensorboard", "matplotlib"} & set(pins)  # not the suite's
  res = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "prepare_accelerator.py"),
                        "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0 and "ml-collections==" in res.stdout, res.stderr[-2000:]
