"""End to end on Robomimic lift: scripted data generated on first use, training, resuming, and
the load-time observation-layout check at the command line."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="needs the Robomimic extra: pip install -e .[robomimic]")
pytest.importorskip("robosuite", reason="needs the Robomimic extra: pip install -e .[robomimic]")

from dfp_jax.train.metrics import read_csv  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _train(workdir, data, *flags):
  return subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config=experiments/configs/dfp.py:smoke",
       "--config.env.task=lift", f"--config.env.dataset_dir={data}",
       "--config.env.generate_episodes=3", f"--workdir={workdir}", *flags],
      cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_smoke_training_on_generated_lift_data_resume_and_a_file_in_another_layout(tmp_path):
  data, run = tmp_path / "data", tmp_path / "run"
  res = _train(run, data)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "generating 3 scripted lift demonstrations" in res.stdout
  assert "scripted episodes (success rate" in res.stdout
  assert (data / "lift" / "mh" / "low_dim_v15.hdf5").exists()
  config = json.loads((run / "config.json").read_text())
  assert config["env"]["task"] == "lift"
  train, evals = read_csv(str(run / "train.csv")), read_csv(str(run / "eval.csv"))
  assert train["step"][-1] == 50 and evals["step"][-1] == 50
  assert np.all(np.isfinite(train["actor/loss"])) and np.all(np.isfinite(train["critic/loss"]))
  # Online rows: the robosuite env was stepped and its -1 / 0 rewards reached the returns.
  assert np.all((evals["return"] <= 0) & (evals["return"] >= -300))
  assert set(np.unique(evals["success"])) <= {0.0, 1.0}
  summary = json.loads((run / "summary.json").read_text())
  assert summary["task"] == "lift" and np.isfinite(summary["final_return"])

  # Resume from the online-phase checkpoint at step 40: the lift env is rebuilt mid-episode
  # by its seeded reset and the episode's actions, and the run ends with the same numbers.
  resumed = tmp_path / "resumed"
  shutil.copytree(run, resumed)
  shutil.rmtree(resumed / "checkpoints" / "50")
  (resumed / "summary.json").unlink()
  res = _train(resumed, data)
  assert res.returncode == 0, res.stderr[-3000:]
  assert "from its checkpoint at step 40" in res.stdout
  assert "warning: replayed environments differ" not in res.stdout + res.stderr
  for stream in ("train", "eval"):
    a, b = read_csv(str(run / f"{stream}.csv")), read_csv(str(resumed / f"{stream}.csv"))
    for k in a:
      if k not in ("steps_per_s", "eval_time_s"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{stream} {k}")

  # The same data in robosuite 1.4's lift layout (eef - cube instead of cube - eef) stops the
  # run at load time with one `error:` line that names the robosuite version the file needs.
  old = tmp_path / "old" / "lift" / "mh"
  old.mkdir(parents=True)
  shutil.copy(data / "lift" / "mh" / "low_dim_v15.hdf5", old / "low_dim_v15.hdf5")
  with h5py.File(old / "low_dim_v15.hdf5", "a") as f:
    for name in f["data"]:
      for g in ("obs", "next_obs"):
        f[f"data/{name}/{g}/object"][:, 7:] *= -1
    meta = json.loads(f["data"].attrs["env_args"])
    f["data"].attrs["env_args"] = json.dumps({**meta, "env_version": "1.4.1"})
  res = _train(tmp_path / "old_run", tmp_path / "old")
  assert res.returncode != 0
  line = res.stderr.strip().splitlines()[-1]
  assert line.startswith("error: ") and "needs robosuite 1.4.1" in line, res.stderr[-3000:]
  assert not (tmp_path / "old_run" / "train.csv").exists()
