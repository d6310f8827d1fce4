"""Metric writers: one CSV per stream (train, eval) plus TensorBoard events."""

import csv
import os
from typing import Dict, Optional

import numpy as np


def to_scalars(info: Dict) -> Dict[str, float]:
  """Device arrays -> Python floats (means over any leading axes)."""
  return {k: float(np.mean(np.asarray(v))) for k, v in info.items()}


class MetricsLogger:
  """Appends rows to `<workdir>/<stream>.csv` and TensorBoard events.

  Columns are fixed by a stream's first row; later keys that were not there
  are added by rewriting the file, so a CSV always has one consistent header.

  When resuming from a checkpoint at `resume_step`, rows written after it
  (by the run that was interrupted) are dropped, from the CSVs and from
  TensorBoard, so the files read as if the run had never stopped.
  """

  def __init__(self, workdir: str, tensorboard: bool = True, resume_step: Optional[int] = None):
    self.workdir = workdir
    os.makedirs(workdir, exist_ok=True)
    self._columns: Dict[str, list] = {}
    self._tb = None
    if resume_step is not None:
      for stream in ("train", "eval"):
        truncate_csv(self.path(stream), resume_step)
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tb"), flush_secs=30,
                               purge_step=None if resume_step is None else resume_step + 1)

  def path(self, stream: str) -> str:
    return os.path.join(self.workdir, f"{stream}.csv")

  def write(self, stream: str, step: int, metrics: Dict[str, float]):
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    cols = self._columns.get(stream)
    path = self.path(stream)
    if cols is None and os.path.exists(path):  # appending to an earlier run's file
      with open(path, newline="") as f:
        cols = next(csv.reader(f), None)
    if cols is None:
      cols = list(row)
      with open(path, "w", newline="") as f:
        csv.writer(f).writerow(cols)
    elif any(k not in cols for k in row):
      cols = cols + [k for k in row if k not in cols]
      with open(path, newline="") as f:
        old = list(csv.DictReader(f))
      with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols, restval="")
        w.writeheader()
        w.writerows(old)
    self._columns[stream] = cols
    with open(path, "a", newline="") as f:
      csv.DictWriter(f, cols, restval="").writerow(row)
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(f"{stream}/{k}", float(v), int(step))

  def close(self):
    if self._tb is not None:
      self._tb.close()


def truncate_csv(path: str, max_step: int):
  """Drop the rows of a metrics CSV whose step is past `max_step` (no-op if it does not exist)."""
  if not os.path.exists(path):
    return
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows:
    return
  def kept(row):  # a row cut short by a kill is dropped too
    try:
      return len(row) == len(rows[0]) and int(float(row[0])) <= max_step
    except ValueError:
      return False
  keep = [rows[0]] + [r for r in rows[1:] if kept(r)]
  if len(keep) < len(rows):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
      csv.writer(f).writerows(keep)
    os.replace(tmp, path)


def read_csv(path: str) -> Dict[str, np.ndarray]:
  """A metrics CSV as column arrays (empty cells -> NaN)."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  if not rows:
    return {}
  return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows])
          for k in rows[0]}



def plot_learning_curve(workdir: str, offline_steps: int, out: str = "learning_curve.png") -> str:
  """Eval success rate against steps, offline and online phases shaded; returns the PNG path."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  ev = read_csv(os.path.join(workdir, "eval.csv"))
  fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
  if ev:
    if (ev["online"] > 0).any():
      ax.axvspan(offline_steps, ev["step"].max(), color="tab:orange", alpha=0.1,
                 label="online phase")
    ax.plot(ev["step"], ev["success"], "o-", color="tab:blue", label="eval success")
  ax.set_xlabel("step (offline gradient steps, then env steps)")
  ax.set_ylabel("success rate")
  ax.set_ylim(-0.02, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(loc="upper left", fontsize=8)
  fig.tight_layout()
  path = os.path.join(workdir, out)
  fig.savefig(path)
  plt.close(fig)
  return path
