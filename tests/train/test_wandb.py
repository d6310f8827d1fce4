"""Weights & Biases as a metrics sink: the same rows as the CSVs, the config and summary, and a
resumed run that continues the same W&B run without logging a step twice."""

import json
import os
import shutil
import sys
import types

import numpy as np
import pytest

from dfp_jax.data import synthetic
from dfp_jax.train import loop as trainer
from dfp_jax.train.metrics import read_csv
from experiments.configs import dfp as dfp_configs


class _FakeRun:
  def __init__(self, kwargs):
    self.kwargs, self.rows, self.summary, self.finished = kwargs, [], {}, False

  def define_metric(self, *args, **kwargs):
    pass

  def log(self, row):
    self.rows.append(row)

  def finish(self):
    self.finished = True


def _fake_wandb(runs):
  """A stand-in for the wandb module that records what a run logs."""
  def init(**kwargs):
    runs.append(_FakeRun(kwargs))
    return runs[-1]
  return types.SimpleNamespace(init=init, login=lambda **kw: False, Settings=lambda **kw: kw,
                               Video=lambda path, **kw: ("video", path))


def _config():
  c = dfp_configs.get_config("smoke")
  c.env.task = synthetic.TINY  # what is logged, not what is learned, is checked
  c.train.tensorboard = False
  c.train.wandb_project = "dfp-test"
  return c


@pytest.mark.slow
def test_wandb_logs_the_csv_rows_once_across_a_resume(tmp_path, monkeypatch):
  runs = []
  monkeypatch.setitem(sys.modules, "wandb", _fake_wandb(runs))
  monkeypatch.delenv("WANDB_MODE", raising=False)
  workdir = str(tmp_path / "run")
  trainer.train_and_evaluate(_config(), workdir)
  first = runs[0]
  assert first.finished and first.kwargs["resume"] == "allow"
  assert first.kwargs["mode"] == "offline"  # no credentials: never a login prompt
  assert first.kwargs["config"]["agent"]["top_k"] == dfp_configs.get_config("smoke").agent.top_k
  assert first.summary["final_success"] == json.load(open(f"{workdir}/summary.json"))["final_success"]
  # Rerun from an earlier checkpoint (the last one and the summary lost, as after a kill).
  ckpt = os.path.join(workdir, "checkpoints")
  last = max(int(n) for n in os.listdir(ckpt) if n.isdigit())
  shutil.rmtree(os.path.join(ckpt, str(last)))
  shutil.rmtree(os.path.join(ckpt, "members", str(last)))
  os.remove(os.path.join(workdir, "summary.json"))
  trainer.train_and_evaluate(_config(), workdir)
  second = runs[1]
  assert second.kwargs["id"] == first.kwargs["id"]  # the same W&B run continues
  assert "final_success" in second.summary
  for stream in ("train", "eval"):
    csv = read_csv(os.path.join(workdir, f"{stream}.csv"))
    logged = [r for run in runs for r in run.rows if any(k.startswith(f"{stream}/") for k in r)]
    steps = [r["step"] for r in logged]
    assert steps == sorted(set(steps)), f"{stream}: a step logged twice or out of order: {steps}"
    np.testing.assert_array_equal(steps, csv["step"])
    key = "critic/loss" if stream == "train" else "success"
    np.testing.assert_allclose([r[f"{stream}/{key}"] for r in logged], csv[key], rtol=1e-6)
  # The resumed run recomputed the steps after its checkpoint and logged none of them again.
  assert all(r["step"] > last for r in second.rows) and not any(
      r["step"] <= last for r in second.rows)


@pytest.mark.slow
def test_real_wandb_offline_run_resumes_by_id(tmp_path, monkeypatch):
  pytest.importorskip("wandb", reason="wandb is not installed (pip install -e '.[wandb]')")
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.delenv("WANDB_DIR", raising=False)
  monkeypatch.setenv("WANDB_SILENT", "true")
  workdir = tmp_path / "run"
  c = _config()
  c.train.online_steps = 10
  trainer.train_and_evaluate(c, str(workdir))
  state = json.loads((workdir / "wandb.json").read_text())
  assert state["last"]["train"] == state["last"]["eval"] == 30
  runs = [d for d in os.listdir(workdir / "wandb") if d.startswith("offline-run-")]
  assert len(runs) == 1 and runs[0].endswith(state["id"])
  assert (workdir / "wandb" / runs[0] / f"run-{state['id']}.wandb").stat().st_size > 0
