"""experiments/report.py on fake sweeps written with the real MetricsLogger: table values,
partial runs, label keys, the learning-curve figure and the command line."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dfp_jax.train.metrics import MetricsLogger
from experiments import report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SINGLE = "cube-single-play-singletask-task2-v0"
DOUBLE = "cube-double-play-singletask-task2-v0"
# Success at the end of the offline / online phase of seeds 0, 1, 2.
OFF = {("dfp", SINGLE): [0.4, 0.5, 0.6], ("dfp", DOUBLE): [0.1, 0.2, 0.3],
       ("fql", SINGLE): [0.3, 0.3, 0.45], ("fql", DOUBLE): [0.0, 0.05, 0.1]}
ON = {("dfp", SINGLE): [0.8, 0.9, 1.0], ("dfp", DOUBLE): [0.5, 0.6, 0.7],
      ("fql", SINGLE): [0.5, 0.7, 0.65], ("fql", DOUBLE): [0.1, 0.1, 0.25]}


def write_run(d, method, task, seed, evals, offline_steps=200, online_steps=200, top_k=4,
              summary=True):
  """A run dir as the trainer leaves it; `evals` = [(step, success, online)]."""
  os.makedirs(d, exist_ok=True)
  config = {"method": method, "seed": seed, "env": {"task": task},
            "train": {"offline_steps": offline_steps, "online_steps": online_steps},
            "agent": {"top_k": top_k, "temperatures": [0.05]}}
  with open(os.path.join(d, "config.json"), "w") as f:
    json.dump(config, f)
  logger = MetricsLogger(str(d), tensorboard=False)
  for step, success, online in evals:
    logger.write("eval", step, {"success": success, "return": -100.0 * (1 - success),
                                "length": 100.0, "eval_time_s": 0.5, "online": float(online)})
  if summary:
    off = [s for _, s, o in evals if not o]
    on = [s for _, s, o in evals if o]
    res = {"final_success": evals[-1][1], "final_return": -1.0, "offline_steps": offline_steps,
           "online_steps": online_steps, "task": task, "seed": seed}
    if off:
      res["offline_success"] = off[-1]
    if on:
      res["online_success"] = on[-1]
    with open(os.path.join(d, "summary.json"), "w") as f:
      json.dump(res, f)


def _evals(off, on):
  return [(100, off / 2, 0), (200, off, 0), (300, (off + on) / 2, 1), (400, on, 1)]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  """2 methods x 2 tasks x 3 seeds under <root>/<method>/<task>/seed_<k>/."""
  root = tmp_path_factory.mktemp("sweep")
  for (method, task), offs in OFF.items():
    for seed, (off, on) in enumerate(zip(offs, ON[method, task])):
      write_run(root / method / task / f"seed_{seed}", method, task, seed, _evals(off, on),
                top_k={"dfp": 4, "fql": 0}[method])
  return root


def _read_results(path):
  with open(path, newline="") as f:
    return {(r["label"], r["task"]): r for r in csv.DictReader(f)}


def test_table_matches_numpy(sweep, tmp_path):
  runs = report.find_runs([str(sweep)])
  assert len(runs) == 12 and not any(r["partial"] for r in runs)
  md_path, csv_path = report.write_table(report.summarise(runs), str(tmp_path))
  rows = _read_results(csv_path)
  assert set(rows) == set(OFF)
  for key, row in rows.items():
    assert int(row["num_seeds"]) == 3 and row["seeds"] == "0 1 2"
    for phase, values in (("offline", OFF[key]), ("online", ON[key]), ("final", ON[key])):
      assert np.isclose(float(row[f"{phase}_mean"]), np.mean(values)), (key, phase)
      assert np.isclose(float(row[f"{phase}_std"]), np.std(values, ddof=0)), (key, phase)
  md = open(md_path).read()
  assert "ddof=0" in md
  # Columns sorted by task name; offline [.4 .5 .6] -> 50.0 ± 8.2, online [.8 .9 1] -> 90.0 ± 8.2;
  # avg offline (20 + 50) / 2 = 35.0, online (60 + 90) / 2 = 75.0.
  assert "| label | cube-double-task2 | cube-single-task2 | avg |" in md
  assert ("| dfp | 20.0 ± 8.2 → 60.0 ± 8.2 (n=3) | 50.0 ± 8.2 → 90.0 ± 8.2 (n=3) | 35.0 → 75.0 |"
          in md)
  fql_avg = (np.mean(OFF["fql", SINGLE]) + np.mean(OFF["fql", DOUBLE])) / 2
  assert f"| {100 * fql_avg:.1f} → " in md.splitlines()[-1]
  assert "*" not in md.split("\n", 1)[1]  # no run is partial
  sig = report.format_significance(report.add_significance(report.summarise(runs), "fql"))
  assert sig.count("| dfp |") == 2 and "*" not in sig.split("\n", 1)[1], sig
  # --tasks_order takes short or full names.
  md = report.format_markdown(report.summarise(runs), ["cube-single-task2"])
  assert "| label | cube-single-task2 | cube-double-task2 | avg |" in md


def test_partial_run_is_read_from_eval_csv(tmp_path, capsys):
  off, on = [0.2, 0.4, 0.6], [0.5, 0.7, 0.9]
  for seed in range(3):
    evals = _evals(off[seed], on[seed])
    if seed == 2:  # still training: one online eval so far, no summary.json
      evals = evals[:3] + [(300, on[seed], 1)]  # a resumed run re-wrote step 300
    write_run(tmp_path / f"seed_{seed}", "dfp", SINGLE, seed, evals, summary=seed < 2)
  runs = report.find_runs([str(tmp_path)])
  partial = [r for r in runs if r["partial"]]
  assert [r["seed"] for r in partial] == [2]
  assert partial[0]["offline"] == 0.6 and partial[0]["online"] == 0.9
  assert partial[0]["final"] == 0.9 and list(partial[0]["steps"]) == [100, 200, 300]
  (row,) = report.summarise(runs)
  assert np.isclose(row["online_mean"], np.mean(on)) and row["num_partial"] == 1
  assert "(n=3)*" in report.format_markdown([row])
  # A difference against a still-training row is marked as not final either.
  done = dict(row, label="ref", num_partial=0, unsettled=dict.fromkeys(row["unsettled"], 0))
  compared = report.add_significance([done, row], "ref")
  sig = report.format_significance(compared)
  assert sig.splitlines()[-1].endswith("| 3 / 3* |"), sig
  _, csv_path = report.write_table(compared, str(tmp_path / "table"))
  assert _read_results(csv_path)["dfp", SINGLE]["not_final"] == "yes"  # the CSV says it too
  # ... but not at the end of offline, which seed 2 has passed: its offline number is final.
  assert row["unsettled"] == {"offline": 0, "online": 1, "final": 1}
  sig = report.format_significance(report.add_significance([done, row], "ref", "offline"))
  assert sig.splitlines()[-1].endswith("| 3 / 3 |"), sig
  # A run still in its offline phase leaves the offline number open.
  write_run(tmp_path / "early" / "seed_0", "early", SINGLE, 0, [(100, 0.3, 0)], summary=False)
  (early,) = report.summarise(report.find_runs([str(tmp_path / "early")]))
  assert early["unsettled"] == {"offline": 1, "online": 0, "final": 1}
  # ... and settles it with its end-of-offline evaluation, before any online one.
  write_run(tmp_path / "ended" / "seed_0", "ended", SINGLE, 0, [(100, 0.3, 0), (200, 0.4, 0)],
            summary=False)
  (ended,) = report.summarise(report.find_runs([str(tmp_path / "ended")]))
  assert ended["unsettled"] == {"offline": 0, "online": 0, "final": 1}
  # A side with no value at the compared phase prints a dash, not +nan.
  empty = dict(row, label="empty", values={**row["values"], "online": []},
               unsettled={**row["unsettled"], "online": 0})
  sig = report.format_significance(report.add_significance([done, empty], "ref", "online"))
  assert sig.splitlines()[-1] == "| empty | cube-single-task2 | – | – | – | 0 / 3 |", sig
  # Curves use the steps every seed has, and say so on stderr.
  steps, mean, std = report.learning_curve(runs, "dfp")
  assert list(steps) == [100, 200, 300]
  at_300 = [(off[0] + on[0]) / 2, (off[1] + on[1]) / 2, on[2]]
  np.testing.assert_allclose([mean[2], std[2]], [np.mean(at_300), np.std(at_300)])
  np.testing.assert_allclose(mean[:2], [np.mean(off) / 2, np.mean(off)])
  assert "dropped 1 eval steps" in capsys.readouterr().err


def test_a_method_is_labelled_by_its_agent_and_top_k_switch_however_it_was_run(tmp_path):
  """DFP run from dfp.py with agent.use_topk off is 'dfp_no_topk', as dfp_no_topk.py's runs
  are; MVP with it on is 'mvp_topk'; they pool into one row each."""
  cases = [("dfp", True, "dfp"), ("dfp", False, "dfp_no_topk"), ("dfp_no_topk", False,
           "dfp_no_topk"), ("mvp", True, "mvp_topk"), ("mvp_topk", True, "mvp_topk"),
           ("mvp", False, "mvp"), ("qc_fql", False, "qc_fql")]
  for i, (method, use_topk, _) in enumerate(cases):
    d = tmp_path / f"run{i}"
    write_run(d, method, SINGLE, i, _evals(0.2, 0.4))
    config = json.loads((d / "config.json").read_text())
    config["agent"]["use_topk"] = use_topk
    (d / "config.json").write_text(json.dumps(config))
  runs = sorted(report.find_runs([str(tmp_path)]), key=lambda r: r["config"]["seed"])
  assert [report.run_label(r["config"]) for r in runs] == [label for *_, label in cases]
  rows = report.summarise(runs)
  assert {r["label"]: r["num_seeds"] for r in rows} == {
      "dfp": 1, "dfp_no_topk": 2, "mvp": 1, "mvp_topk": 2, "qc_fql": 1}


def test_label_key_groups_by_top_k(tmp_path):
  success = {16: [0.7, 0.9], 4: [0.5, 0.6], 2: [0.2, 0.4]}  # offline only
  for k, values in success.items():
    for seed, s in enumerate(values):
      write_run(tmp_path / f"k{k}" / f"seed_{seed}", "dfp", SINGLE, seed,
                [(100, s / 2, 0), (200, s, 0)], online_steps=0, top_k=k)
  runs = report.find_runs([str(tmp_path)])
  rows = report.summarise(runs, "agent.top_k")
  assert [r["label"] for r in rows] == ["agent.top_k=2", "agent.top_k=4", "agent.top_k=16"]
  for r, k in zip(rows, (2, 4, 16)):
    assert r["num_seeds"] == 2 and np.isclose(r["offline_mean"], np.mean(success[k]))
    assert np.isnan(r["online_mean"])
  # No online phase: the offline number alone.
  assert "| agent.top_k=2 | 30.0 ± 10.0 (n=2) | 30.0 |" in report.format_markdown(rows)
  rows = report.summarise(runs, "method,agent.top_k")
  assert rows[0]["label"] == "dfp, agent.top_k=2"
  assert report.run_label(runs[0]["config"], "agent.temperatures") == "agent.temperatures=0.05"
  assert report.run_label({"agent": {"temperatures": [0.02, 0.05]}},
                          ["agent.temperatures"]) == "agent.temperatures=(0.02,0.05)"
  with pytest.raises(ValueError, match="agent.topk"):
    report.summarise(runs, "agent.topk")


def test_learning_curves_png(sweep, tmp_path):
  import matplotlib.image
  runs = report.find_runs([str(sweep)])
  path = report.plot_curves(runs, "method", str(tmp_path))
  assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  height, width, _ = matplotlib.image.imread(path).shape
  assert width > 1.5 * height  # two task panels side by side
  groups = report.group_runs(runs)
  steps, mean, _ = report.learning_curve(groups["fql", DOUBLE])
  assert list(steps) == [100, 200, 300, 400]
  np.testing.assert_allclose(mean[[1, 3]], [np.mean(OFF["fql", DOUBLE]), np.mean(ON["fql", DOUBLE])])


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.report", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_cli_writes_table_and_plot(sweep, tmp_path):
  out = tmp_path / "report"
  res = _cli(str(sweep / "dfp"), str(sweep / "fql"), f"--out={out}",
             "--tasks_order=cube-single-task2")
  assert res.returncode == 0, res.stderr
  assert "| label | cube-single-task2 | cube-double-task2 | avg |" in res.stdout
  assert str(out / "results.md") in res.stdout
  for name in ("results.md", "results.csv", "learning_curves.png"):
    assert (out / name).stat().st_size > 0, name
  assert len(_read_results(out / "results.csv")) == 4
  res = _cli(str(sweep), f"--out={out}", "--reference=fql")
  assert res.returncode == 0, res.stderr
  assert "Difference in final success to fql" in res.stdout
  assert _read_results(out / "results.csv")["dfp", SINGLE]["excludes_zero"] == "yes"


@pytest.mark.parametrize("where", ["empty", "missing"])
def test_cli_error_is_one_line(tmp_path, where):
  path = tmp_path / where
  if where == "empty":
    (path / "seed_0").mkdir(parents=True)
  res = _cli(str(path), f"--out={tmp_path / 'out'}")
  assert res.returncode != 0
  assert "Traceback" not in res.stderr
  assert res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1


def test_welch_interval_matches_scipy_and_decides_significance():
  from scipy import stats
  rng = np.random.default_rng(0)
  for _ in range(20):
    a = rng.uniform(0, 1, rng.integers(2, 7))
    b = rng.uniform(0, 1, rng.integers(2, 7)) + rng.uniform(-0.5, 0.5)
    diff, low, high = report.welch_interval(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    np.testing.assert_allclose([diff, low, high], [a.mean() - b.mean(), ci.low, ci.high],
                               rtol=1e-9)
    assert (low > 0 or high < 0) == (ref.pvalue < 0.05)
  assert np.isnan(report.welch_interval([0.5], [0.1, 0.2])[1])  # one seed: no interval
  assert report.welch_interval([0.5, 0.5], [0.2, 0.2]) == pytest.approx((0.3, 0.3, 0.3))


def test_reference_adds_a_significance_table(sweep, tmp_path):
  rows = report.add_significance(report.summarise(report.find_runs([str(sweep)])), "dfp")
  by = {(r["label"], r["task"]): r for r in rows}
  fql = by["fql", SINGLE]
  # fql vs dfp on cube-single: finals [0.5, 0.7, 0.65] vs [0.8, 0.9, 1.0].
  assert fql["diff_vs_reference"] == pytest.approx(np.mean(ON["fql", SINGLE])
                                                   - np.mean(ON["dfp", SINGLE]))
  assert fql["ci95_high"] < 0 and fql["excludes_zero"] == "yes"
  # On cube-double: [0.1, 0.1, 0.25] vs [0.5, 0.6, 0.7], also clearly lower.
  assert by["fql", DOUBLE]["excludes_zero"] == "yes"
  assert "reference" not in by["dfp", SINGLE]  # the reference row is not compared with itself
  text = report.format_markdown(rows)
  assert "Welch's t" in text and "| fql | cube-single-task2 | -28.3 |" in text
  md, csv_path = report.write_table(rows, str(tmp_path))
  table = _read_results(csv_path)
  assert table["fql", SINGLE]["excludes_zero"] == "yes"
  assert table["fql", SINGLE]["not_final"] == "no"  # every run finished
  assert float(table["fql", SINGLE]["ci95_low"]) < float(table["fql", SINGLE]["ci95_high"]) < 0
  with pytest.raises(ValueError, match="no row label"):
    report.add_significance(rows, "nope")
  # Overlapping seeds: not significant.
  mixed = tmp_path / "mixed"
  for i, (a, b) in enumerate([(0.5, 0.6), (0.9, 0.4), (0.2, 0.7)]):
    write_run(mixed / "dfp" / f"seed_{i}", "dfp", SINGLE, i, _evals(0.1, a))
    write_run(mixed / "fql" / f"seed_{i}", "fql", SINGLE, i, _evals(0.1, b))
  rows = report.add_significance(report.summarise(report.find_runs([str(mixed)])), "dfp")
  assert {r["label"]: r.get("excludes_zero") for r in rows}["fql"] == "no"


def test_offline_only_runs_compare_at_the_end_of_offline(tmp_path):
  """--compare_phase=offline: offline-only runs (their final success is their offline one)
  against full runs, at the end of offline pretraining, not at the full runs' final point."""
  full_off, full_on, only_off = [0.1, 0.2, 0.15], [0.3, 0.35, 0.4], [0.7, 0.2, 0.7]
  for i in range(3):
    write_run(tmp_path / "full" / f"seed_{i}", "mvp", SINGLE, i, _evals(full_off[i], full_on[i]))
    write_run(tmp_path / "only" / f"seed_{i}", "mvp_old", SINGLE, i,
              [(100, only_off[i] / 2, 0), (200, only_off[i], 0)], online_steps=0)
  rows = report.summarise(report.find_runs([str(tmp_path)]))
  final = {r["label"]: r for r in report.add_significance(rows, "mvp")}["mvp_old"]
  offline = {r["label"]: r for r in report.add_significance(rows, "mvp", "offline")}["mvp_old"]
  assert final["diff_vs_reference"] == pytest.approx(np.mean(only_off) - np.mean(full_on))
  assert offline["diff_vs_reference"] == pytest.approx(np.mean(only_off) - np.mean(full_off))
  assert offline["compared_phase"] == "offline"
  text = report.format_significance(report.add_significance(rows, "mvp", "offline"))
  assert "Difference in success at the end of the offline phase to mvp" in text
  assert "| mvp_old | cube-single-task2 | +38.3 |" in text


def test_paired_differences_seed_by_seed(tmp_path):
  """--paired: the CI of the per-seed differences (paired t), not of two independent means;
  a seed only one side has is left out; a shared pretraining (offline/) is not a row."""
  from scipy import stats
  base = [0.2, 0.5, 0.8, 0.4]  # a large spread between seeds...
  gain = [0.10, 0.15, 0.05, 0.10]  # ...and a steady gain on each seed
  for seed, b in enumerate(base):
    write_run(tmp_path / "a" / SINGLE / f"seed_{seed}", "dfp_no_topk", SINGLE, seed,
              _evals(0.1, b))
    write_run(tmp_path / "b" / SINGLE / f"seed_{seed}", "dfp", SINGLE, seed,
              _evals(0.1, b + gain[seed]))
    write_run(tmp_path / "b" / SINGLE / "offline" / f"seed_{seed}", "dfp", SINGLE, seed,
              [(100, 0.05, 0), (200, 0.1, 0)], online_steps=0)
  write_run(tmp_path / "b" / SINGLE / "seed_9", "dfp", SINGLE, 9, _evals(0.1, 1.0))
  runs = report.find_runs([str(tmp_path)])
  assert len(runs) == 9  # the four pretraining runs left out
  rows = report.summarise(runs)
  paired = {r["label"]: r for r in report.add_significance(rows, "dfp_no_topk", paired=True)}
  d = np.array(gain)
  half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
  r = paired["dfp"]
  assert r["pairs"] == 4
  assert r["diff_vs_reference"] == pytest.approx(d.mean())
  assert (r["ci95_low"], r["ci95_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
  assert r["excludes_zero"] == "yes"
  welch = {r["label"]: r for r in report.add_significance(rows, "dfp_no_topk")}["dfp"]
  assert welch["excludes_zero"] == "no"  # the seeds' spread swamps the gain unpaired
  text = report.format_significance(list(paired.values()))
  assert "paired t" in text and "| dfp | cube-single-task2 | +10.0 |" in text
  assert report.find_runs([str(tmp_path / "b" / SINGLE / "offline")])[0]["online_steps"] == 0
