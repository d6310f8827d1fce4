"""`experiments.robustness`: the table's statistics on known numbers, and the command end to
end on two smoke populations (evaluated once per strength, kept, bad input refused first)."""

import csv
import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from dfp_jax.data import synthetic
from experiments import evaluate, report, robustness

TASK = "cube-single-play-singletask-task2-v0"


def _record(method, seed, name, strength, success, member=None):
  return {"run": method, "member": member or f"seed_{seed}", "seed": seed, "task": TASK,
          "config": {"method": method, "agent": {"use_topk": True}}, "perturbation": name,
          "strength": strength, "success": success}


def test_table_statistics_on_known_numbers(tmp_path):
  dfp = {0.0: [0.8, 0.6, 0.7], 0.5: [0.5, 0.2, 0.5]}
  fql = {0.0: [0.5, 0.4, 0.3], 0.5: [0.1, 0.1, 0.4]}
  records = [_record(m, s, "obs_noise", x, v[x][s]) for m, v in (("fql", fql), ("dfp", dfp))
             for x in v for s in range(3)]
  rows = robustness.summarise(records, ["method"], reference="dfp")
  assert [(r["strength"], r["label"]) for r in rows] == [(0.0, "dfp"), (0.0, "fql"),
                                                         (0.5, "dfp"), (0.5, "fql")]
  by = {(r["strength"], r["label"]): r for r in rows}
  r = by[0.5, "fql"]
  assert r["success_mean"] == pytest.approx(0.2) and r["success_std"] == pytest.approx(
      np.std([0.1, 0.1, 0.4]))
  # Change from its own unperturbed success, paired by seed.
  d = np.array(fql[0.5]) - np.array(fql[0.0])
  half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
  assert r["change_vs_unperturbed"] == pytest.approx(d.mean())
  assert (r["change_ci95_low"], r["change_ci95_high"]) == pytest.approx(
      (d.mean() - half, d.mean() + half))
  # Difference to the reference at the same strength: Welch's t, as experiments.report.
  assert (r["diff_vs_reference"], r["ci95_low"], r["ci95_high"]) == pytest.approx(
      report.welch_interval(fql[0.5], dfp[0.5]))
  assert r["excludes_zero"] == "no" and "diff_vs_reference" not in by[0.5, "dfp"]
  assert "change_vs_unperturbed" not in by[0.0, "dfp"]
  paths = robustness.write(rows, str(tmp_path), episodes=10)
  text = open(paths[0]).read()
  assert "### obs_noise" in text and f"| 0.5 | fql | cube-single-task2 | 20.0 ± {100 * np.std(fql[0.5]):.1f} | 3 |" in text
  with open(paths[1]) as f:
    table = list(csv.DictReader(f))
  assert len(table) == 4 and table[3]["reference"] == "dfp" and table[0]["reference"] == ""
  assert open(paths[2], "rb").read(4) == b"\x89PNG"
  # A swept member is labelled by its values; an unknown reference is one line.
  rows = robustness.summarise([_record("dfp", 0, "push", 0.0, 1.0, "lr=0.1/seed_0")], ["method"])
  assert rows[0]["label"] == "dfp lr=0.1"
  with pytest.raises(ValueError, match="--reference='mvp' is no label; labels: dfp, fql"):
    robustness.summarise(records, ["method"], reference="mvp")


@pytest.fixture(scope="module")
def two_methods(tmp_path_factory):
  """Smoke populations of DFP and QC-FQL (seeds 0 and 1) on the simulator-free synthetic task
  (the command's bookkeeping is checked here; each wrapper on MuJoCo in test_perturbations):
  their root."""
  from dfp_jax.train import loop
  from experiments.configs import dfp, qc_fql
  root = tmp_path_factory.mktemp("robustness_runs")
  for name, module in (("dfp", dfp), ("fql", qc_fql)):
    config = module.get_config("smoke")
    config.env.task, config.train.tensorboard = synthetic.TINY, False
    loop.train_and_evaluate(config, str(root / name), seeds=[0, 1])
  return root


@pytest.mark.slow
def test_every_run_at_every_strength_kept_and_reused(two_methods, tmp_path, monkeypatch):
  out = tmp_path / "out"
  calls = []
  real = evaluate.evaluate

  def counting(workdir, *args, **kw):
    calls.append((os.path.basename(workdir), kw["perturb"]))
    return real(workdir, *args, **kw)

  monkeypatch.setattr(evaluate, "evaluate", counting)
  rows = robustness.run([str(two_methods)], ["latency=0;2", "action_noise=0;0.5"], str(out),
                        episodes=2, reference="dfp", workers=0)
  # One unperturbed evaluation per run, shared by both perturbations.
  assert sorted(calls) == sorted((m, p) for m in ("dfp", "fql") for p in (
      (), (("latency", 2.0),), (("action_noise", 0.5),)))
  assert [(r["perturbation"], r["strength"], r["label"], r["num_seeds"]) for r in rows] == [
      (n, s, m, 2) for n, ss in (("latency", (0.0, 2.0)), ("action_noise", (0.0, 0.5)))
      for s in ss for m in ("dfp", "qc_fql")]
  # The unperturbed rows are experiments.evaluate's numbers, members by seed.
  plain = json.loads((out / "evaluations" / robustness._slug(os.path.relpath(
      two_methods / "dfp")) / "none" / "results.json").read_text())
  alone = real(str(two_methods / "dfp"), episodes=2, out=str(tmp_path / "alone"), workers=0)
  assert [m["success"] for m in plain["members"]] == [m["success"] for m in alone["members"]]
  assert [m["return"] for m in plain["members"]] == [m["return"] for m in alone["members"]]
  assert plain["perturb"] == [] and plain["episodes"] == 2
  perturbed = json.loads((out / "evaluations" / robustness._slug(os.path.relpath(
      two_methods / "dfp")) / "latency=2" / "results.json").read_text())
  assert perturbed["perturb"] == [["latency", 2.0]]
  assert (out / "robustness.png").exists() and "### action_noise" in (out / "results.md").read_text()
  # Run again: everything comes from the kept evaluations.
  calls.clear()
  again = robustness.run([str(two_methods)], ["latency=0;2", "action_noise=0;0.5"], str(out),
                         episodes=2, reference="dfp", workers=0)
  assert calls == [] and [r["success_mean"] for r in again] == [r["success_mean"] for r in rows]
  # No run directories: the same tables from the kept evaluations alone (checkpoints gone).
  kept = robustness.run([], ["latency=0;2", "action_noise=0;0.5"], str(out), episodes=2,
                        reference="dfp", workers=0)
  assert calls == [] and json.dumps(kept, sort_keys=True) == json.dumps(rows, sort_keys=True)
  for sweeps, kw, message in ((["latency=0;4"], {}, "has no kept evaluation latency=4: give"),
                              (["latency=0;2"], {"episodes": 3}, "over 2 episodes, not "
                               "--episodes=3"),
                              (["latency=2"], {"step": 7}, "not --step=7")):
    with pytest.raises(ValueError, match=message):
      robustness.run([], sweeps, str(out), **{"episodes": 2, **kw})
  # Another episode count is evaluated afresh.
  robustness.run([str(two_methods / "fql")], ["latency=0"], str(out), episodes=1, workers=0)
  assert calls == [("fql", ())]


@pytest.mark.slow
@pytest.mark.parametrize("paths, sweeps, kw, message", [
    ([], ["push=0;1"], {}, "give one or more run directories"),
    (["RUNS"], [], {}, "give at least one --perturb"),
    (["RUNS"], ["nosuch=1"], {}, "unknown perturbation 'nosuch'"),
    (["RUNS"], ["sticky=0;2"], {}, "sticky=2: must be in [0, 1]"),
    (["RUNS"], ["push=1", "push=2"], {}, "push is given twice"),
    (["RUNS"], ["push=1"], {"episodes": 0}, "--episodes=0: must be >= 1"),
    (["RUNS"], ["push=1"], {"workers": -1}, "--env_workers=-1: must be >= 0"),
    (["/no/such/dir"], ["push=1"], {}, "/no/such/dir does not exist"),
    (["EMPTY"], ["push=1"], {}, "no trained runs (a directory holding checkpoints/) under"),
    (["RUNS"], ["push=1"], {"reference": "mvp"}, "--reference='mvp' is no label; labels: dfp, qc_fql"),
    (["RUNS"], ["push=1"], {"step": 7}, "has no checkpoint at step 7"),
])
def test_bad_input_is_refused_before_any_evaluation(paths, sweeps, kw, message, two_methods,
                                                     tmp_path, monkeypatch):
  monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
  paths = [str(two_methods) if p == "RUNS" else str(tmp_path) if p == "EMPTY" else p
           for p in paths]
  with pytest.raises(ValueError) as e:
    robustness.run(paths, sweeps, str(tmp_path / "out"), **kw)
  assert message in str(e.value) and "\n" not in str(e.value)
