"""Metric writers: one CSV per stream (train, eval) plus TensorBoard events and, optionally,
Weights & Biases."""

import csv
import io
import json
import os
import uuid
from typing import Dict, Optional, Sequence

import numpy as np

from dfp_jax import fileio


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

  def __init__(self, workdir: str, tensorboard: bool = True, resume_step: Optional[int] = None,
               wandb_project: str = ""):
    self.workdir = workdir
    fileio.makedirs(workdir)
    self._columns: Dict[str, list] = {}
    self._tb = None
    self._wandb = WandbSink(workdir, wandb_project) if wandb_project else None
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
    if cols is None and fileio.exists(path):  # appending to an earlier run's file
      with fileio.open(path, newline="") as f:
        cols = next(csv.reader(f), None)
    if cols is None:
      cols = list(row)
      fileio.write_text(path, _csv_text(lambda f: csv.writer(f).writerow(cols)))
    elif any(k not in cols for k in row):
      cols = cols + [k for k in row if k not in cols]
      with fileio.open(path, newline="") as f:
        old = list(csv.DictReader(f))
      def rewrite(f):
        w = csv.DictWriter(f, cols, restval="")
        w.writeheader()
        w.writerows(old)
      # Atomic: a kill during the rewrite leaves the old rows, never a cut-short file.
      fileio.write_atomic(path, _csv_text(rewrite))
    self._columns[stream] = cols
    fileio.append_text(path, _csv_text(lambda f: csv.DictWriter(f, cols, restval="").writerow(row)))
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(f"{stream}/{k}", float(v), int(step))
    if self._wandb is not None:
      self._wandb.log(stream, step, {f"{stream}/{k}": float(v) for k, v in metrics.items()})

  def video(self, tag: str, step: int, frames: Sequence[np.ndarray], path: str, fps: float):
    """A rollout: an animated GIF image in TensorBoard, the video file in W&B."""
    if self._tb is not None:
      from tensorboardX.proto.summary_pb2 import Summary
      from dfp_jax.video import gif_bytes
      h, w = frames[0].shape[:2]
      image = Summary.Image(height=h, width=w, colorspace=3,
                            encoded_image_string=gif_bytes(frames, fps))
      self._tb._get_file_writer().add_summary(
          Summary(value=[Summary.Value(tag=tag, image=image)]), int(step))
    if self._wandb is not None:
      self._wandb.video(tag, step, path, fps)

  def summary(self, summary: Dict):
    if self._wandb is not None:
      self._wandb.run.summary.update(summary)

  def close(self):
    if self._tb is not None:
      self._tb.close()
    if self._wandb is not None:
      self._wandb.close()


def _csv_text(write) -> str:
  """What `write(csv_file)` writes, as text (csv's \\r\\n line ends, as a file opened with
  newline='' gets)."""
  buf = io.StringIO(newline="")
  write(buf)
  return buf.getvalue()


def _wandb_mode() -> Optional[str]:
  """WANDB_MODE when set (online, offline, disabled); else online only with stored credentials,
  offline otherwise: a run never waits at a login prompt."""
  import wandb
  if os.environ.get("WANDB_MODE"):
    return None  # wandb reads it
  try:
    return "online" if wandb.login(prompt=False, verify=False) else "offline"
  except Exception:  # noqa: BLE001  (a broken netrc or settings file)
    return "offline"


class WandbSink:
  """One W&B run per member directory, resumed by id.

  `<workdir>/wandb.json` holds the run id and the last step logged per stream:
  a resumed run (which recomputes the steps after its checkpoint) logs only
  steps after those, so W&B holds each row once. Metrics are plotted against
  the `step` field (W&B's own step counts log calls).
  """

  def __init__(self, workdir: str, project: str):
    try:
      import wandb
    except ImportError:
      raise ValueError("train.wandb_project needs wandb: pip install -e '.[wandb]'") from None
    self._wandb = wandb
    self._state_path = os.path.join(workdir, "wandb.json")
    saved = {}
    if fileio.exists(self._state_path):
      saved = json.loads(fileio.read_text(self._state_path))
    self.run_id = saved.get("id") or uuid.uuid4().hex[:8]
    self.last: Dict[str, int] = saved.get("last", {})
    config = {}
    if fileio.exists(os.path.join(workdir, "config.json")):
      config = json.loads(fileio.read_text(os.path.join(workdir, "config.json")))
    parts = fileio.absolute(workdir).split(os.sep)
    kwargs = dict(project=project, id=self.run_id, resume="allow", config=config,
                  name="/".join(parts[-2:]), group=config.get("env", {}).get("task"),
                  reinit="create_new", settings=wandb.Settings(init_timeout=60, console="off",
                                                               silent=True))
    if not os.environ.get("WANDB_DIR") and not fileio.is_remote(workdir):
      kwargs["dir"] = workdir  # (W&B's own files stay local: under ./wandb for a remote workdir)
    mode = _wandb_mode()
    try:
      self.run = wandb.init(mode=mode, **kwargs)
    except Exception as e:  # noqa: BLE001  (no network, server down: keep the run going offline)
      print(f"warning: wandb.init failed ({type(e).__name__}: {e}); logging offline instead")
      self.run = wandb.init(mode="offline", **kwargs)
    self.run.define_metric("step")
    self.run.define_metric("*", step_metric="step")
    self._save()

  def _save(self):
    fileio.write_atomic(self._state_path, json.dumps({"id": self.run_id, "last": self.last}))

  def _new(self, stream: str, step: int) -> bool:
    if step <= self.last.get(stream, -1):
      return False
    self.last[stream] = int(step)
    return True

  def log(self, stream: str, step: int, metrics: Dict[str, float]):
    if self._new(stream, step):
      self.run.log({"step": int(step), **metrics})
      self._save()

  def video(self, tag: str, step: int, path: str, fps: float):
    if self._new(tag, step):
      fmt = os.path.splitext(path)[1].lstrip(".")
      self.run.log({"step": int(step), tag: self._wandb.Video(path, fps=int(fps), format=fmt)})
      self._save()

  def close(self):
    self.run.finish()


def truncate_csv(path: str, max_step: int):
  """Drop the rows of a metrics CSV whose step is past `max_step` (no-op if it does not exist)."""
  if not fileio.exists(path):
    return
  with fileio.open(path, newline="") as f:
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
    fileio.write_atomic(path, _csv_text(lambda f: csv.writer(f).writerows(keep)))


def read_csv(path: str) -> Dict[str, np.ndarray]:
  """A metrics CSV as column arrays (empty cells -> NaN)."""
  with fileio.open(path, newline="") as f:
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
  fileio.savefig(fig, path)
  plt.close(fig)
  return path
