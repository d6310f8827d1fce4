"""The accelerator suite at tiny sizes: every table filled with finite timings, JSON and Markdown."""

import json
import math
import os
import subprocess
import sys

import pytest

from dfp_jax import agents

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_accelerator_suite_smoke_writes_every_table(tmp_path):
  res = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--suite=accelerator",
                        "--smoke", f"--out={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
  assert res.returncode == 0, res.stderr[-3000:]
  result = json.loads((tmp_path / "accelerator.json").read_text())
  assert result["device"]["platform"] == "cpu" and result["device"]["jax"]
  assert result["complete"] is True
  assert [r["method"] for r in result["methods"]] == list(agents.METHODS)
  for r in result["methods"]:
    for k in ("offline ms/step", "online ms/step", "act ms/call", "online compile s"):
      assert math.isfinite(r[k]) and r[k] > 0, (r["method"], k)
  assert [r["S"] for r in result["seeds"]] == [1, 2]
  assert result["seeds"][1]["sequential_ms"] == pytest.approx(2 * result["seeds"][0]["vmapped_ms"])
  assert [r["M"] for r in result["population"]] == [1, 2]
  assert all(r["ms"] > 0 and r["pop"] * r["data"] == 1 for r in result["population"])
  precision = {r["precision"]: r for r in result["precision"]}
  assert list(precision) == ["fp32", "tf32", "bf16", "default"]
  assert precision["fp32"]["max rel. param diff to fp32"] == 0.0
  assert all(r["finite"] and r["online ms/step"] > 0 for r in precision.values())
  (trainer,) = result["trainer"]
  assert trainer["task"] == "synthetic-cube-double"
  for k in ("offline updates/s", "online env steps/s", "online ms/env step"):
    assert math.isfinite(trainer[k]) and trainer[k] > 0, k
  assert 0 < trainer["update ms (as dispatched)"] < trainer["online ms/env step"] * 5
  assert 0 < trainer["env ms/step"] < 1.0  # no simulator: microseconds of Python
  assert trainer["loop overhead ms/env step"] == pytest.approx(
      trainer["online ms/env step"] - trainer["update ms (as dispatched)"] - trainer["env ms/step"])
  assert math.isfinite(trainer["loop overhead %"])
  assert result["real_env_step_ms"] > 0  # ogbench is installed here
  real = result["real_trainer"]
  assert [r["members"] for r in real] == [1, 2]
  for r in real:
    assert r["online env steps/s (per member)"] > 0 and r["update ms/step"] > 0
    assert 0 < r["env share of online %"] < 100
  md = (tmp_path / "accelerator.md").read_text()
  assert "## The trainer end to end on a synthetic environment" in md and "NOT COMPLETE" not in md
  assert md.count("\n| dfp |") == 1 and "## DFP population over every device" in md
  assert "## DFP under each train.matmul_precision" in md and "\n| bf16 |" in md
  assert "## The trainer with real cube-double environments" in md


def test_suite_cut_short_keeps_the_tables_it_measured(tmp_path):
  """The files are rewritten after every table: a device session that ends mid-suite still
  returns the finished tables, marked as incomplete."""
  import types
  from experiments import accelerator_suite

  def measure(config, obs_dim, action_dim, iters):
    return {"offline ms/step": 2.0, "online ms/step": 3.0, "online/offline": 1.5,
            "act ms/call": 0.5, "online compile s": 1.0, "hidden": "8x8", "batch": 4, "h": 5,
            "samples (act/target)": "4/4"}

  def cut(*args, **kwargs):
    raise RuntimeError("session over")

  bench = types.SimpleNamespace(measure=measure, measure_seeds=cut,
                                get_config=lambda method, preset, overrides=(): None)
  with pytest.raises(RuntimeError, match="session over"):
    accelerator_suite.run(str(tmp_path), True, 2, 40, 5, bench=bench)
  result = json.loads((tmp_path / "accelerator.json").read_text())
  assert result["complete"] is False and "seeds" not in result
  assert [r["method"] for r in result["methods"]] == list(agents.METHODS)
  md = (tmp_path / "accelerator.md").read_text()
  assert "NOT COMPLETE" in md and md.count("\n| dfp |") == 1
  assert "## DFP, S seeds vmapped (online update)\n\nnot measured" in md


def test_overrides_set_config_fields_and_reject_unknown_ones():
  from experiments.configs import common, dfp
  config = common.apply_overrides(dfp.get_config("quick"), [
      "train.batch_size=256", "agent.actor_hidden=(64, 64)", "train.matmul_precision=bf16",
      "seed=3"])
  assert config.train.batch_size == 256 and tuple(config.agent.actor_hidden) == (64, 64)
  assert config.train.matmul_precision == "bf16" and config.seed == 3
  for bad in ("train.nope=1", "agent.top_k", "nope.batch_size=2", "train.batch_size=(1, 2)"):
    with pytest.raises(ValueError, match="--overrides="):
      common.apply_overrides(dfp.get_config("quick"), [bad])


@pytest.mark.slow
def test_protocol_suite_smoke_measures_stepping_and_evaluation(tmp_path):
  from experiments import protocol_suite
  md = protocol_suite.run(str(tmp_path), members=[1, 2], episodes=[3], quick=False, smoke=True)
  result = json.loads((tmp_path / "protocol.json").read_text())
  assert [r["members"] for r in result["env_steps"]] == [1, 2]
  for r in result["env_steps"]:
    assert r["in_process"] > 0 and r["workers"] > 0
  (ev,) = result["evaluation"]
  assert ev["episodes"] == 3 and ev["eval_envs"] == 3 and ev["serial_s"] > 0 < ev["batched_s"]
  # A fresh policy runs every episode to the time limit: one act call per chunk per episode
  # serially, one per chunk for all three side by side.
  assert ev["serial_act_calls"] == 3 * ev["batched_act_calls"] > 0
  assert (tmp_path / "protocol.md").read_text() == md
  assert "## Environment steps per second" in md and "## One evaluation" in md
