"""Paper-style results table and learning curves from any set of run directories.

  python -m experiments.report RUN_DIRS... --out=DIR [--label_key=method]
      [--tasks_order=cube-single-task2,cube-double-task2] [--reference=dfp]

Each RUN_DIR is searched recursively for runs: directories holding config.json
and eval.csv, as the training loop (dfp_jax/train/) writes them. Runs are grouped by task and by
a row label made of one or more dotted config keys (`--label_key=agent.top_k`
for a K ablation, `--label_key=method,agent.top_k` for both). Writes to --out:

  results.md           success (%) at the end of the offline phase -> end of the
                       online phase, mean ± std over seeds; one row per label,
                       one column per task, plus their average;
  results.csv          the same per (label, task) in long format, as fractions;
  learning_curves.png  eval success vs step, one panel per task, one line per label.

With `--reference=LABEL`, both tables also give, for every other row of the
same task, the difference in final success (`--compare_phase=offline`: at the
end of offline pretraining, e.g. for offline-only runs against full ones) to
the reference row with a 95% confidence interval from Welch's t over seeds
(unequal variances, Welch-Satterthwaite degrees of freedom), and whether it
excludes 0. `--paired` takes the differences seed by seed instead (runs of
the same seeds that share each seed's offline pretraining, `--init_from` /
`--share_offline`), with the paired t's interval. Shared pretraining runs (an
`offline/` directory beside the runs) are left out unless given themselves.

A run without summary.json is still training: its numbers come from the last
offline / online rows of its eval.csv and its table cell is marked `*`.
"""

import csv
import functools
import json
import math
import os
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from absl import flags

from dfp_jax.train.metrics import read_csv

def define_flags():
  """The command's flags (defined when it runs, so other commands can import it)."""
  flags.DEFINE_string("out", None, "Directory for results.md, results.csv and learning_curves.png.")
  flags.DEFINE_list("label_key", ["method"], "Dotted config key(s) whose values label a row.")
  flags.DEFINE_list("tasks_order", None, "Task columns first in this order (full or short names).")
  flags.DEFINE_string("reference", None, "Row label to compare every other row with (difference "
                      "in success, Welch's t 95% CI over seeds).")
  flags.DEFINE_bool("paired", False, "With --reference: differences seed by seed (runs that "
                    "share each seed's offline pretraining: --init_from, --share_offline), "
                    "paired t 95% CI.")
  flags.DEFINE_enum("compare_phase", "final", ["final", "offline", "online"], "With --reference: "
                    "the success compared (final: the last evaluation; offline: the end of "
                    "offline pretraining, e.g. to compare offline-only runs with full ones).")


FLAGS = flags.FLAGS

Keys = Union[str, Sequence[str]]  # "method,agent.top_k" or ["method", "agent.top_k"]
CSV_COLUMNS = ["label", "task", "num_seeds", "offline_mean", "offline_std", "online_mean",
               "online_std", "final_mean", "final_std", "seeds", "num_partial"]
SIGNIFICANCE_COLUMNS = ["reference", "compared_phase", "diff_vs_reference", "ci95_low",
                        "ci95_high", "excludes_zero", "not_final", "pairs"]
NAN = float("nan")
SHARED_PRETRAINING = "offline"  # where --share_offline pretrains, beside the runs it serves


def _warn(msg: str):
  print(f"warning: {msg}", file=sys.stderr)


def short_task(task: str) -> str:
  """'cube-single-play-singletask-task2-v0' -> 'cube-single-task2'."""
  return task.replace("-play-singletask", "").removesuffix("-v0")


def config_value(config: Dict, key: str):
  """config['agent']['top_k'] for key 'agent.top_k'; None where missing."""
  for part in key.split("."):
    if not isinstance(config, dict) or part not in config:
      return None
    config = config[part]
  return config


def _render(v) -> str:
  if isinstance(v, (list, tuple)):  # JSON has no tuples: (0.05,) comes back as [0.05]
    return _render(v[0]) if len(v) == 1 else "(" + ",".join(_render(x) for x in v) + ")"
  return f"{v:g}" if isinstance(v, float) else str(v)


def _keys(label_key: Keys) -> List[str]:
  keys = label_key.split(",") if isinstance(label_key, str) else label_key
  return [k.strip() for k in keys if k.strip()]


def run_label(config: Dict, label_key: Keys = "method") -> str:
  """'dfp' for the method alone, else 'agent.top_k=4', parts joined by ', '. The method is
  named by its agent and variant switch (`agents.method_name`): DFP trained with
  agent.use_topk off is 'dfp_no_topk' whichever config file ran it."""
  return ", ".join(_method(config) if k == "method"
                   else f"{k}={_render(config_value(config, k))}" for k in _keys(label_key))


def _method(config: Dict) -> str:
  from dfp_jax import agents  # imports jax: only once a run's method is named
  try:
    return agents.method_name(config)
  except (KeyError, TypeError):  # not a run's config: the value as written
    return _render(config_value(config, "method"))


def _natural(s: str):
  """Sort key with digit runs as numbers, so task2 < task10."""
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def order_tasks(tasks, tasks_order: Optional[Sequence[str]] = None) -> List[str]:
  """`tasks` with those named in `tasks_order` (full or short names) first, the rest sorted."""
  rest = sorted(set(tasks), key=_natural)
  first = []
  for name in tasks_order or []:
    match = [t for t in rest if name in (t, short_task(t))]
    first += match
    rest = [t for t in rest if t not in match]
  return first + rest


def read_run(d: str) -> Optional[Dict]:
  """One run dir as a record (None while eval.csv has no rows yet).

  Keys: dir, config (dict), task, seed, offline_steps, online_steps, partial
  (no summary.json yet), offline / online / final (success fractions, NaN where
  that phase has none), settled (the phases whose number is final: all of them once
  summary.json exists, offline too once a still-training run has evaluated at the end of
  offline),
  steps and success ([T] arrays of eval.csv, sorted by step).
  """
  with open(os.path.join(d, "config.json")) as f:
    config = json.load(f)
  ev = read_csv(os.path.join(d, "eval.csv"))
  if not ev or "success" not in ev:
    return None
  # A resumed run appends to its eval.csv: keep the last row of each step.
  steps, idx = np.unique(ev["step"][::-1], return_index=True)
  success = ev["success"][::-1][idx]
  online = ev.get("online", np.zeros_like(ev["step"]))[::-1][idx] > 0
  summary_path = os.path.join(d, "summary.json")
  finished = os.path.exists(summary_path)
  if finished:
    with open(summary_path) as f:
      summary = json.load(f)
  else:
    summary = {"offline_success": success[~online][-1] if (~online).any() else NAN,
               "online_success": success[online][-1] if online.any() else NAN,
               "final_success": success[-1]}
  # The trainer evaluates at the end of offline before any online evaluation.
  offline_steps = config_value(config, "train.offline_steps") or 0
  offline_done = online.any() or bool((~online).any() and steps[~online].max() >= offline_steps)
  run = {p: NAN if summary.get(f"{p}_success") is None else float(summary[f"{p}_success"])
         for p in ("offline", "online", "final")}
  return {**run, "dir": d, "config": config, "steps": steps, "success": success,
          "task": config_value(config, "env.task") or summary.get("task", "unknown"),
          "seed": config.get("seed", summary.get("seed")),
          "offline_steps": offline_steps,
          "online_steps": config_value(config, "train.online_steps") or 0,
          "partial": not finished,
          "settled": ({"offline", "online", "final"} if finished
                      else {"offline"} if offline_done else set())}


def find_runs(paths: Sequence[str]) -> List[Dict]:
  """Records (see read_run) of every run dir under `paths`, searched recursively.

  Raises ValueError for a path that is not a directory or when no run is found.
  """
  dirs = {}  # by real path: a run reached through two given paths is read once
  shared = set()
  for p in paths:
    if not os.path.isdir(p):
      raise ValueError(f"{p} is not a directory" if os.path.exists(p) else f"{p} does not exist")
    for root, subdirs, files in os.walk(p):
      subdirs.sort()
      if SHARED_PRETRAINING in subdirs:  # --share_offline's pretraining, not a run of the table
        subdirs.remove(SHARED_PRETRAINING)
        shared.add(os.path.join(root, SHARED_PRETRAINING))
      if "config.json" in files and "eval.csv" in files:
        dirs.setdefault(os.path.realpath(root), root)
  if shared:
    _warn(f"left out the shared offline pretraining under {', '.join(sorted(shared))} (pass "
          "such a directory itself to tabulate it)")
  runs = []
  for d in dirs.values():
    try:
      run = read_run(d)
    except (OSError, ValueError) as e:  # e.g. a JSON file caught half-written
      _warn(f"skipping {d}: {e}")
      continue
    if run is None:
      _warn(f"skipping {d}: no eval rows yet")
    else:
      runs.append(run)
  if not runs:
    raise ValueError(f"no run directories (config.json + eval.csv) under {', '.join(paths)}")
  return runs


def group_runs(runs: Sequence[Dict], label_key: Keys = "method",
               tasks_order: Optional[Sequence[str]] = None) -> Dict[Tuple[str, str], List[Dict]]:
  """{(label, task): runs sorted by seed}, labels ordered by their config values, then tasks."""
  keys = _keys(label_key)
  if not keys:
    raise ValueError("--label_key is empty")
  for k in keys:
    if all(config_value(r["config"], k) is None for r in runs):
      raise ValueError(f"--label_key: no run's config.json has {k}")

  def value_order(r):  # numbers numerically (K=4 before K=16), the rest as text
    vals = [config_value(r["config"], k) for k in keys]
    return [(0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool)
            else (1, 0, _render(v)) for v in vals]

  tasks = order_tasks([r["task"] for r in runs], tasks_order)
  groups = {}
  for r in sorted(runs, key=lambda r: (value_order(r), tasks.index(r["task"]), str(r["seed"]))):
    groups.setdefault((run_label(r["config"], keys), r["task"]), []).append(r)
  return groups


def summarise(runs: Sequence[Dict], label_key: Keys = "method",
              tasks_order: Optional[Sequence[str]] = None) -> List[Dict]:
  """One row per (label, task), keys CSV_COLUMNS: success mean and population std
  (ddof=0) over seeds for each phase, as fractions (NaN where no seed has the phase)."""
  rows = []
  for (label, task), rs in group_runs(runs, label_key, tasks_order).items():
    row = {"label": label, "task": task, "num_seeds": len(rs)}
    seeds = [r["seed"] for r in rs]
    dups = sorted({str(s) for s in seeds if seeds.count(s) > 1})
    if dups:  # e.g. two sweeps of one method passed together: all their runs are pooled
      _warn(f"{label} on {task}: seeds {', '.join(dups)} appear more than once; all pooled")
    for phase in ("offline", "online", "final"):
      v = np.array([r[phase] for r in rs])
      v = v[~np.isnan(v)]
      row[f"{phase}_mean"] = float(v.mean()) if v.size else NAN
      row[f"{phase}_std"] = float(v.std()) if v.size else NAN
    row["seeds"] = " ".join(map(str, seeds))
    row["num_partial"] = sum(r["partial"] for r in rs)
    # Per phase, how many of its values are not final yet (for the significance table).
    row["unsettled"] = {phase: sum(phase not in r["settled"] and not math.isnan(r[phase])
                                   for r in rs) for phase in ("offline", "online", "final")}
    row["values"] = {phase: [r[phase] for r in rs if not math.isnan(r[phase])]
                     for phase in ("offline", "online", "final")}  # per seed, for significance
    row["by_seed"] = {phase: {str(r["seed"]): r[phase] for r in rs if not math.isnan(r[phase])}
                      for phase in ("offline", "online", "final")}  # for paired differences
    rows.append(row)
  return rows


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95):
  """mean(a) - mean(b) and its `level` confidence interval by Welch's t.

  Returns (diff, low, high); NaN bounds when either side has fewer than 2 values.
  With no spread on either side the interval is the point itself.
  """
  from scipy import stats
  a, b = np.asarray(a, float), np.asarray(b, float)
  diff = float(a.mean() - b.mean()) if a.size and b.size else NAN
  if a.size < 2 or b.size < 2:
    return diff, NAN, NAN
  va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
  se = math.sqrt(va + vb)
  if se == 0.0:
    return diff, diff, diff
  df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
  half = float(stats.t.ppf(0.5 + level / 2, df)) * se
  return diff, diff - half, diff + half


def paired_interval(differences: Sequence[float], level: float = 0.95):
  """mean of per-seed differences and its `level` confidence interval by the paired t
  (Student's t on the differences, n - 1 degrees of freedom); NaN bounds below 2 pairs."""
  from scipy import stats
  d = np.asarray(differences, float)
  diff = float(d.mean()) if d.size else NAN
  if d.size < 2:
    return diff, NAN, NAN
  se = float(d.std(ddof=1)) / math.sqrt(d.size)
  if se == 0.0:
    return diff, diff, diff
  half = float(stats.t.ppf(0.5 + level / 2, d.size - 1)) * se
  return diff, diff - half, diff + half


def add_significance(rows: Sequence[Dict], reference: str, phase: str = "final",
                     paired: bool = False) -> List[Dict]:
  """Rows with SIGNIFICANCE_COLUMNS filled against the `reference` row of each task, comparing
  the success at `phase` (final, offline or online). `paired`: differences seed by seed over
  the seeds both rows have (runs that share each seed's offline pretraining), paired t."""
  labels = {r["label"] for r in rows}
  if reference not in labels:
    raise ValueError(f"--reference={reference!r} is no row label; labels: "
                     f"{', '.join(sorted(labels))}")
  refs = {r["task"]: r for r in rows if r["label"] == reference}
  out = []
  for r in rows:
    r = dict(r)
    ref = refs.get(r["task"])
    if ref is not None and r is not ref and r["label"] != reference:
      if paired:
        mine, theirs = r["by_seed"][phase], ref["by_seed"][phase]
        common = [k for k in mine if k in theirs]
        if len(common) < len(mine) or len(common) < len(theirs):
          _warn(f"{r['label']} vs {reference} on {r['task']}: paired over the {len(common)} "
                "seeds both have")
        diff, low, high = paired_interval([mine[k] - theirs[k] for k in common])
        r["pairs"] = len(common)
      else:
        diff, low, high = welch_interval(r["values"][phase], ref["values"][phase])
      r.update(reference=reference, compared_phase=phase, diff_vs_reference=diff,
               ci95_low=low, ci95_high=high,
               excludes_zero="" if math.isnan(low) else ("yes" if low > 0 or high < 0 else "no"),
               # A side includes runs still training that have not reached `phase` yet.
               not_final="yes" if r["unsettled"][phase] or ref["unsettled"][phase] else "no")
    out.append(r)
  return out


def _pct(mean: float, std: Optional[float] = None) -> str:
  return f"{100 * mean:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")


def _cell(r: Dict) -> str:
  """'41.2 ± 3.1 → 88.0 ± 2.0 (n=3)', the offline number alone for a run without online phase."""
  parts = [_pct(r[f"{p}_mean"], r[f"{p}_std"]) for p in ("offline", "online")
           if not math.isnan(r[f"{p}_mean"])]
  return " → ".join(parts) + f" (n={r['num_seeds']})" + ("*" if r["num_partial"] else "")


def format_significance(rows: Sequence[Dict]) -> str:
  """The Markdown table of differences to the reference ('' when there is none)."""
  compared = [r for r in rows if r.get("reference")]
  if not compared:
    return ""
  ref, phase = compared[0]["reference"], compared[0]["compared_phase"]
  what = {"final": "final success", "offline": "success at the end of the offline phase",
          "online": "success at the end of the online phase"}[phase]
  paired = "pairs" in compared[0]
  how = ("by the paired t over the seeds both rows have (differences seed by seed); n = "
         "pairs" if paired else "by Welch's t over seeds (unequal variances); n = seeds of "
         f"the row / of {ref}")
  lines = [f"Difference in {what} to {ref} (percentage points), 95% confidence interval "
           f"{how}; * = a side includes runs still training that have not reached this "
           "point yet (their last evaluation so far); – = a side has no value.", "", "| label | task | difference | 95% CI | excludes 0 | n |",
           "|---|---|---|---|---|---|"]
  refs = {r["task"]: r for r in rows if r["label"] == ref}
  for r in compared:
    ci = ("–" if math.isnan(r["ci95_low"])
          else f"[{100 * r['ci95_low']:+.1f}, {100 * r['ci95_high']:+.1f}]")
    diff = "–" if math.isnan(r["diff_vs_reference"]) else f"{100 * r['diff_vs_reference']:+.1f}"
    lines.append(f"| {r['label']} | {short_task(r['task'])} | {diff} "
                 f"| {ci} | {r['excludes_zero'] or '–'} | " + (
                     str(r["pairs"]) if paired else f"{len(r['values'][phase])} / "
                     f"{len(refs[r['task']]['values'][phase])}")
                 + f"{'*' if r['not_final'] == 'yes' else ''} |")
  return "\n".join(lines) + "\n"


def format_markdown(rows: Sequence[Dict], tasks_order: Optional[Sequence[str]] = None) -> str:
  """The Markdown table: rows = labels, columns = tasks + avg, cells 'offline → online';
  followed by the significance table when the rows carry one."""
  tasks = order_tasks([r["task"] for r in rows], tasks_order)
  cells = {(r["label"], r["task"]): r for r in rows}
  lines = ["Success rate (%) at the end of the offline phase → end of the online phase: mean ± "
           "std over seeds (population std, ddof=0); n = seeds; avg = mean of the per-task "
           "means over the tasks a row has; * = includes runs still training (from eval.csv).",
           "", "| label | " + " | ".join(short_task(t) for t in tasks) + " | avg |",
           "|---" * (len(tasks) + 2) + "|"]
  for label in dict.fromkeys(r["label"] for r in rows):
    mine = [cells[label, t] for t in tasks if (label, t) in cells]
    line = [label] + [_cell(cells[label, t]) if (label, t) in cells else "–" for t in tasks]
    means = [[r[f"{p}_mean"] for r in mine if not math.isnan(r[f"{p}_mean"])]
             for p in ("offline", "online")]
    line.append(" → ".join(_pct(float(np.mean(m))) for m in means if m) or "–")
    lines.append("| " + " | ".join(line) + " |")
  significance = format_significance(rows)
  return "\n".join(lines) + "\n" + ("\n" + significance if significance else "")


def write_table(rows: Sequence[Dict], out: str,
                tasks_order: Optional[Sequence[str]] = None) -> Tuple[str, str]:
  """Writes `out`/results.md and `out`/results.csv (empty cells for NaN); returns both paths."""
  os.makedirs(out, exist_ok=True)
  md_path, csv_path = os.path.join(out, "results.md"), os.path.join(out, "results.csv")
  with open(md_path, "w") as f:
    f.write(format_markdown(rows, tasks_order))
  columns = CSV_COLUMNS + (SIGNIFICANCE_COLUMNS if any(r.get("reference") for r in rows) else [])
  with open(csv_path, "w", newline="") as f:
    w = csv.DictWriter(f, columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
      w.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()})
  return md_path, csv_path


def learning_curve(runs: Sequence[Dict], what: str = "") -> Tuple[np.ndarray, ...]:
  """Success over seeds at the eval steps all `runs` share: steps, mean, std (ddof=0), each [T]."""
  common = functools.reduce(np.intersect1d, [r["steps"] for r in runs])
  dropped = len(functools.reduce(np.union1d, [r["steps"] for r in runs])) - len(common)
  if dropped:
    _warn(f"{what}: dropped {dropped} eval steps that not every seed has")
  ys = np.stack([r["success"][np.searchsorted(r["steps"], common)] for r in runs])
  return common, ys.mean(0), ys.std(0)


def plot_curves(runs: Sequence[Dict], label_key: Keys = "method", out: str = ".",
                tasks_order: Optional[Sequence[str]] = None) -> str:
  """Writes `out`/learning_curves.png, one panel per task; returns its path."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  groups = group_runs(runs, label_key, tasks_order)
  tasks = order_tasks([t for _, t in groups], tasks_order)
  labels = list(dict.fromkeys(label for label, _ in groups))
  ncols = min(len(tasks), 3)
  nrows = -(-len(tasks) // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), dpi=100,
                           squeeze=False, sharey=True)
  handles = {}
  for ax, task in zip(axes.flat, tasks):
    for i, label in enumerate(labels):
      rs = groups.get((label, task))
      if not rs:
        continue
      steps, mean, std = learning_curve(rs, f"{label} on {task}")
      color = f"C{i % 10}"
      handles[label], = ax.plot(steps, 100 * mean, "-", marker=".", color=color, label=label)
      ax.fill_between(steps, 100 * (mean - std), 100 * (mean + std), color=color, alpha=0.2, lw=0)
    for s in {r["offline_steps"] for (_, t), rs in groups.items() if t == task for r in rs
              if r["offline_steps"] > 0 and r["online_steps"] > 0}:
      handles["end of offline phase"] = ax.axvline(s, color="gray", ls="--", lw=1,
                                                   label="end of offline phase")
    ax.set_title(short_task(task))
    ax.set_xlabel("step (offline, then offline + env steps)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
  for ax in axes[:, 0]:
    ax.set_ylabel("eval success (%)")
  for ax in axes.flat[len(tasks):]:
    ax.axis("off")
  fig.legend(handles.values(), handles.keys(), title="mean ± std over seeds (ddof=0)",
             loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title_fontsize=8)
  fig.tight_layout()
  path = os.path.join(out, "learning_curves.png")
  os.makedirs(out, exist_ok=True)
  fig.savefig(path, bbox_inches="tight")
  plt.close(fig)
  return path


def main(argv):
  if len(argv) < 2:
    sys.exit("error: give one or more run directories")
  if not FLAGS.out:
    sys.exit("error: --out=DIR is required")
  if FLAGS.paired and not FLAGS.reference:
    sys.exit("error: --paired compares with a --reference row; give --reference=LABEL")
  try:
    runs = find_runs(argv[1:])
    rows = summarise(runs, FLAGS.label_key, FLAGS.tasks_order)
    if FLAGS.reference:
      rows = add_significance(rows, FLAGS.reference, FLAGS.compare_phase, FLAGS.paired)
  except ValueError as e:
    sys.exit(f"error: {e}")
  for name in FLAGS.tasks_order or []:
    if not any(name in (r["task"], short_task(r["task"])) for r in runs):
      _warn(f"--tasks_order: no run of task {name}")
  paths = write_table(rows, FLAGS.out, FLAGS.tasks_order)
  paths += (plot_curves(runs, FLAGS.label_key, FLAGS.out, FLAGS.tasks_order),)
  print(format_markdown(rows, FLAGS.tasks_order))
  print(f"{len(runs)} runs; wrote " + ", ".join(paths))


if __name__ == "__main__":
  from experiments import cli
  define_flags()
  cli.run(main)
