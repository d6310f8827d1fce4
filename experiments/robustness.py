"""Robustness of trained runs under perturbations: a table and curves per perturbation.

  python -m experiments.robustness [RUN_DIRS...] --perturb='obs_noise=0;0.1;0.3;1'
      [--perturb='latency=0;1;2;4' ...] --out=DIR [--episodes=100] [--step=N]
      [--reference=dfp] [--label_key=method]

Each RUN_DIR is searched for trained runs (directories holding `checkpoints/`;
a `--seeds` or `--sweep` population is one of them, each member a seed). Every
run's final checkpoint (or `--step`) is evaluated at every strength of every
`--perturb` (`dfp_jax.perturbations`), all members and episodes of a run at once
(`experiments.evaluate`); the seeded episode starts and perturbations are the
same for every run. Strength 0 is the unperturbed evaluation, made once and
shared by every perturbation. Evaluations are kept under DIR/evaluations/, so
running the command again evaluates only what is missing. With no RUN_DIRS the
tables are made from the evaluations kept in DIR alone (a study evaluated run by
run, over several sessions or machines, whose checkpoints are gone).

Writes to DIR:
  results.md / results.csv  per perturbation, strength and label: success mean ± std
                            over seeds (n), its change from the label's own unperturbed
                            success (paired over seeds, paired t 95% CI) and, with
                            --reference, the difference to the reference label at that
                            strength (Welch's t 95% CI over seeds, as experiments.report);
  robustness.png            success vs strength, one panel per perturbation, one line per
                            label, band = ± std over seeds.
"""

import csv
import json
import math
import os
import re
from typing import Dict, List, Sequence, Tuple

import numpy as np
from absl import flags

from dfp_jax import perturbations
from dfp_jax.train.env_pool import usable_cores
from experiments import evaluate, report

def define_flags():
  """The command's flags (defined when it runs, so other commands can import it)."""
  flags.DEFINE_multi_string("perturb", [], "NAME=S1;S2;... : evaluate at these strengths "
                            f"(repeatable; {', '.join(perturbations.NAMES)}).")
  flags.DEFINE_string("out", None, "Directory for results.md, results.csv, robustness.png and "
                      "the evaluations.")
  flags.DEFINE_integer("episodes", 100, "Seeded evaluation episodes per member and strength.")
  flags.DEFINE_integer("step", None, "Checkpoint step of every run (default: each run's latest).")
  flags.DEFINE_string("reference", None, "Label every other label is compared with at each "
                      "strength (e.g. dfp).")
  flags.DEFINE_list("label_key", ["method"], "Dotted config key(s) whose values label a run.")
  flags.DEFINE_integer("env_workers", None, "Environment worker processes (default: the usable "
                       "cores; 0: step in this process).")


FLAGS = flags.FLAGS

CSV_COLUMNS = ["perturbation", "strength", "label", "task", "num_seeds", "success_mean",
               "success_std", "change_vs_unperturbed", "change_ci95_low", "change_ci95_high",
               "reference", "diff_vs_reference", "ci95_low", "ci95_high", "excludes_zero",
               "seeds"]
NAN = float("nan")


def find_trained(paths: Sequence[str]) -> List[str]:
  """Directories holding checkpoints/ under `paths` (shared offline pretraining left out)."""
  found = {}
  for p in paths:
    if not os.path.isdir(p):
      raise ValueError(f"{p} is not a directory" if os.path.exists(p) else f"{p} does not exist")
    for root, subdirs, _ in os.walk(p):
      subdirs.sort()
      if report.SHARED_PRETRAINING in subdirs and root != p:
        subdirs.remove(report.SHARED_PRETRAINING)
      if "checkpoints" in subdirs:
        found.setdefault(os.path.realpath(root), root)
        subdirs.clear()
  if not found:
    raise ValueError(f"no trained runs (a directory holding checkpoints/) under "
                     f"{', '.join(paths)}")
  return list(found.values())


def run_meta(run: str, step=None) -> Tuple[int, Dict, List[str]]:
  """(checkpoint step, resolved config, member names) of a trained run, without restoring it."""
  from dfp_jax.train import checkpoint
  ckpt = checkpoint.Checkpointer(os.path.join(run, "checkpoints"), read_only=True)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise ValueError(f"{run}/checkpoints holds no finished checkpoint")
    if step is not None and step not in steps:
      raise ValueError(f"{run}/checkpoints has no checkpoint at step {step}; it has {steps}")
    step = steps[-1] if step is None else step
    meta = ckpt.read_meta(step)
  finally:
    ckpt.close()
  return step, meta["config"], meta.get("members") or [f"seed_{s}" for s in meta["seeds"]]


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_") or "run"


def evaluate_all(run_dirs: Sequence[str], sweeps: Sequence[Tuple[str, Sequence[float]]],
                 out: str, episodes: int, step=None, workers=None) -> List[Dict]:
  """Every run at every strength; one record per (run, member, perturbation, strength): keys
  run, member, seed, config, task, perturbation, strength, success."""
  records = []
  for run in run_dirs:
    restored, at = None, run_meta(run, step)[0]
    for name, strength, setting in _settings(sweeps):
      perturb = () if name == "none" else ((name, strength),)
      dest = os.path.join(out, "evaluations", _slug(os.path.relpath(run)), setting)
      result = _cached(dest, at, episodes)
      if result is None:
        restored = restored or evaluate.restore(run, at)
        print(f"{run}: {name}={strength:g}" if perturb else f"{run}: unperturbed", flush=True)
        result = evaluate.evaluate(run, restored[4], episodes, out=dest, workers=workers,
                                   perturb=perturb, restored=restored)
        result["config"] = restored[0].to_dict()
        with open(os.path.join(dest, "results.json"), "w") as f:
          json.dump(result, f, indent=2, default=str)
      records += _records(run, result, name, strength, sweeps)
  return records


def kept_records(sweeps: Sequence[Tuple[str, Sequence[float]]], out: str, episodes: int,
                 step=None) -> List[Dict]:
  """`evaluate_all`'s records from the evaluations kept under `out` alone: every kept run must
  hold every strength asked for, at `episodes` episodes and one checkpoint step."""
  root = os.path.join(out, "evaluations")
  runs = sorted(os.listdir(root)) if os.path.isdir(root) else []
  if not runs:
    raise ValueError(f"give one or more run directories, or an --out holding kept "
                     f"evaluations ({root} holds none)")
  records = []
  for run in runs:
    steps = set()
    for name, strength, setting in _settings(sweeps):
      path = os.path.join(root, run, setting, "results.json")
      if not os.path.exists(path):
        raise ValueError(f"{run} has no kept evaluation {setting}: give its run directory "
                         "to evaluate it")
      with open(path) as f:
        result = json.load(f)
      if result.get("episodes") != episodes:
        raise ValueError(f"{path} is over {result.get('episodes')} episodes, not "
                         f"--episodes={episodes}")
      if step is not None and result.get("step") != step:
        raise ValueError(f"{path} is at step {result.get('step')}, not --step={step}")
      steps.add(result.get("step"))
      records += _records(run, result, name, strength, sweeps)
    if len(steps) > 1:
      raise ValueError(f"{run}'s kept evaluations are at several steps ({sorted(steps)}): "
                       "give --step or its run directory")
  return records


def _settings(sweeps) -> List[Tuple[str, float, str]]:
  """(name, strength, kept directory) of every evaluation `sweeps` need: the unperturbed one
  ("none", shared by every perturbation) and each nonzero strength."""
  return [("none", 0.0, "none")] + [(n, s, f"{n}={s:g}") for n, strengths in sweeps
                                    for s in strengths if s != 0]


def _records(run: str, result: Dict, name: str, strength: float, sweeps) -> List[Dict]:
  """One record per member of one kept evaluation, for each perturbation it stands for (the
  unperturbed one for every perturbation with strength 0)."""
  return [{"run": run, "member": m["member"], "seed": m["seed"], "config": result["config"],
           "task": result["task"], "perturbation": n, "strength": strength,
           "success": m["success"]}
          for m in result["members"] for n, strengths in sweeps
          if (name == "none" and 0 in strengths) or n == name]


def _cached(dest: str, step, episodes: int):
  path = os.path.join(dest, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  if result.get("episodes") != episodes or result.get("step") != step:
    return None
  return result if "config" in result else None


def _label(record: Dict, label_key) -> str:
  return member_label(record["config"], record["member"], label_key)


def member_label(config: Dict, member: str, label_key) -> str:
  """The run's label (report.run_label), with a swept member's values ('lr=0.1/') in front of
  its seed directory."""
  label = report.run_label(config, label_key)
  swept = member.rsplit("seed_", 1)[0].strip("/")
  return f"{label} {swept}" if swept else label


def summarise(records: Sequence[Dict], label_key=("method",), reference=None) -> List[Dict]:
  """One row per (perturbation, strength, label, task), keys CSV_COLUMNS (fractions)."""
  groups: Dict[Tuple, Dict[str, float]] = {}
  for r in records:
    key = (r["perturbation"], r["strength"], _label(r, label_key), r["task"])
    seeds = groups.setdefault(key, {})
    if str(r["seed"]) in seeds:
      report._warn(f"{key[2]} on {key[3]}: seed {r['seed']} appears more than once; the "
                   "later run is kept")
    seeds[str(r["seed"])] = r["success"]
  labels = {k[2] for k in groups}
  if reference is not None and reference not in labels:
    raise ValueError(f"--reference={reference!r} is no label; labels: "
                     f"{', '.join(sorted(labels))}")
  order = list(dict.fromkeys(r["perturbation"] for r in records))  # as the flags give them
  rows = []
  for (name, strength, label, task), seeds in sorted(
      groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1], kv[0][3],
                                      kv[0][2] != reference, kv[0][2])):
    v = np.array(list(seeds.values()))
    row = {"perturbation": name, "strength": strength, "label": label, "task": task,
           "num_seeds": len(v), "success_mean": float(v.mean()), "success_std": float(v.std()),
           "seeds": " ".join(seeds), "by_seed": seeds}
    base = groups.get((name, 0.0, label, task))
    if base is not None and strength != 0:
      common = [s for s in seeds if s in base]
      row["change_vs_unperturbed"], row["change_ci95_low"], row["change_ci95_high"] = (
          report.paired_interval([seeds[s] - base[s] for s in common]))
    ref = groups.get((name, strength, reference, task)) if reference else None
    if ref is not None and label != reference:
      diff, low, high = report.welch_interval(v, list(ref.values()))
      row.update(reference=reference, diff_vs_reference=diff, ci95_low=low, ci95_high=high,
                 excludes_zero="" if math.isnan(low) else ("yes" if low > 0 or high < 0
                                                           else "no"))
    rows.append(row)
  return rows


def _points(x) -> str:
  return "–" if x is None or math.isnan(x) else f"{100 * x:+.1f}"


def _interval(row, low, high) -> str:
  lo, hi = row.get(low, NAN), row.get(high, NAN)
  return "–" if math.isnan(lo) else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"


def format_markdown(rows: Sequence[Dict], episodes: int) -> str:
  reference = next((r["reference"] for r in rows if r.get("reference")), None)
  lines = [f"Success rate (%) over {episodes} seeded episodes per seed: mean ± std over seeds "
           "(population std, ddof=0), n = seeds. Change = success minus the same label's "
           "unperturbed success, paired by seed, paired t 95% CI"
           + (f"; vs {reference} = difference to {reference} at the same strength, Welch's t "
              "95% CI over seeds" if reference else "") + ".", ""]
  for name in dict.fromkeys(r["perturbation"] for r in rows):
    lines += [f"### {name}", "", "| strength | label | task | success | n | change | 95% CI |"
              + (" vs ref | 95% CI | excludes 0 |" if reference else ""),
              "|---" * (7 + (3 if reference else 0)) + "|"]
    for r in (r for r in rows if r["perturbation"] == name):
      line = (f"| {r['strength']:g} | {r['label']} | {report.short_task(r['task'])} | "
              f"{100 * r['success_mean']:.1f} ± {100 * r['success_std']:.1f} | "
              f"{r['num_seeds']} | {_points(r.get('change_vs_unperturbed'))} | "
              f"{_interval(r, 'change_ci95_low', 'change_ci95_high')} |")
      if reference:
        line += (f" {_points(r.get('diff_vs_reference'))} | "
                 f"{_interval(r, 'ci95_low', 'ci95_high')} | {r.get('excludes_zero') or '–'} |")
      lines.append(line)
    lines.append("")
  return "\n".join(lines)


def write(rows: Sequence[Dict], out: str, episodes: int) -> List[str]:
  """results.md, results.csv and robustness.png in `out`; their paths."""
  os.makedirs(out, exist_ok=True)
  md, table = os.path.join(out, "results.md"), os.path.join(out, "results.csv")
  with open(md, "w") as f:
    f.write(format_markdown(rows, episodes))
  with open(table, "w", newline="") as f:
    w = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
      w.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()})
  return [md, table, plot(rows, out)]


def plot(rows: Sequence[Dict], out: str) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = list(dict.fromkeys(r["perturbation"] for r in rows))
  labels = list(dict.fromkeys((r["label"], r["task"]) for r in rows))
  ncols = min(len(names), 3)
  nrows = -(-len(names) // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), dpi=100,
                           squeeze=False, sharey=True)
  handles = {}
  for ax, name in zip(axes.flat, names):
    for i, (label, task) in enumerate(labels):
      mine = sorted((r for r in rows if r["perturbation"] == name and r["label"] == label
                     and r["task"] == task), key=lambda r: r["strength"])
      if not mine:
        continue
      x = np.array([r["strength"] for r in mine])
      mean = 100 * np.array([r["success_mean"] for r in mine])
      std = 100 * np.array([r["success_std"] for r in mine])
      key = label if len({t for _, t in labels}) == 1 else f"{label} ({report.short_task(task)})"
      handles[key], = ax.plot(x, mean, "-", marker=".", color=f"C{i % 10}", label=key)
      ax.fill_between(x, mean - std, mean + std, color=f"C{i % 10}", alpha=0.2, lw=0)
    ax.set_title(name)
    ax.set_xlabel("strength")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
  for ax in axes[:, 0]:
    ax.set_ylabel("eval success (%)")
  for ax in axes.flat[len(names):]:
    ax.axis("off")
  fig.legend(handles.values(), handles.keys(), title="mean ± std over seeds (ddof=0)",
             loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title_fontsize=8)
  fig.tight_layout()
  path = os.path.join(out, "robustness.png")
  fig.savefig(path, bbox_inches="tight")
  plt.close(fig)
  return path


def run(paths: Sequence[str], sweeps: Sequence[str], out: str, episodes: int = 100, step=None,
        reference=None, label_key=("method",), workers=None) -> List[Dict]:
  """The whole command: parse `sweeps` ('NAME=S1;S2;...'), evaluate, write; returns the rows."""
  if not out:
    raise ValueError("--out=DIR is required")
  if not sweeps:
    raise ValueError("give at least one --perturb=NAME=S1;S2;...")
  if episodes < 1:
    raise ValueError(f"--episodes={episodes}: must be >= 1")
  if workers is not None and workers < 0:
    raise ValueError(f"--env_workers={workers}: must be >= 0 (0: step in this process)")
  parsed = [perturbations.parse_sweep(s) for s in sweeps]
  names = [n for n, _ in parsed]
  for n in names:
    if names.count(n) > 1:
      raise ValueError(f"--perturb: {n} is given twice; give all its strengths in one flag")
  if not paths:
    records = kept_records(parsed, out, episodes, step)
    rows = summarise(records, label_key, reference)
    write(rows, out, episodes)
    return rows
  runs = find_trained(paths)
  if reference is not None:  # before any evaluation
    labels = set()
    for r in runs:
      _, config, members = run_meta(r, step)
      labels |= {member_label(config, m, label_key) for m in members}
    if reference not in labels:
      raise ValueError(f"--reference={reference!r} is no label; labels: "
                       f"{', '.join(sorted(labels))}")
  records = evaluate_all(runs, parsed, out, episodes, step,
                         usable_cores() if workers is None else workers)
  rows = summarise(records, label_key, reference)
  write(rows, out, episodes)
  return rows


def main(argv):
  from absl import logging
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)  # orbax logs every checkpoint it opens
  rows = run(argv[1:], FLAGS.perturb, FLAGS.out, FLAGS.episodes, FLAGS.step, FLAGS.reference,
             FLAGS.label_key, FLAGS.env_workers)
  print(format_markdown(rows, FLAGS.episodes))
  print(f"wrote {', '.join(os.path.join(FLAGS.out, f) for f in ('results.md', 'results.csv', 'robustness.png'))}")


if __name__ == "__main__":
  from experiments import cli
  define_flags()
  cli.run(main)
