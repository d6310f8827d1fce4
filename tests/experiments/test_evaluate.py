"""`experiments.evaluate` on a smoke population trained on 2 devices, restored on 1; videos in
training (workdir, TensorBoard) and from the command."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dfp_jax.parallel import host_device_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASK = "cube-single-play-singletask-task2-v0"


def _run(module, *args, env=None):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=600, env=env)


@pytest.mark.slow
def test_evaluate_restores_a_population_and_records_videos(tiny_cube_single, tmp_path):
  two_devices = dict(os.environ, XLA_FLAGS=host_device_flags(2, os.environ.get("XLA_FLAGS", "")))
  res = _run("experiments.train", "--config=experiments/configs/dfp.py:smoke", "--seeds=0,1",
             f"--workdir={tmp_path}", f"--config.env.dataset_dir={tiny_cube_single}",
             "--config.train.video_episodes=1", "--config.train.video_size=32",
             "--config.train.eval_interval=50", env=two_devices)  # evaluations at 20 and 50
  assert res.returncode == 0, res.stderr[-3000:]
  run = tmp_path / TASK
  # Training wrote one video per evaluation and member, and a GIF image to TensorBoard.
  for member in ("seed_0", "seed_1"):
    assert sorted(os.listdir(run / member / "videos")) == ["20_ep0.mp4", "50_ep0.mp4"]
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(str(run / "seed_1" / "tb"),
                                              size_guidance={"images": 0})
  events.Reload()
  images = events.Images("eval/video_ep0")
  assert [i.step for i in images] == [20, 50]
  assert images[0].encoded_image_string[:4] == b"GIF8"

  # Every member, on one device, with a video and a contact sheet each.
  out = tmp_path / "eval_all"
  res = _run("experiments.evaluate", f"--workdir={run}", "--episodes=2", "--videos=1", "--sheet",
             "--size=48", "--stride=4", f"--out={out}")
  assert res.returncode == 0, res.stderr[-3000:]
  report = json.loads((out / "results.json").read_text())
  assert report["step"] == 50 and report["task"] == TASK and report["episodes"] == 2
  assert [m["member"] for m in report["members"]] == ["seed_0", "seed_1"]
  for m in report["members"]:
    assert 0 <= m["success"] <= 1 and m["length"] > 0
    assert f"{m['member']}: success {m['success']:.3f}" in res.stdout
    (v,) = m["videos"]
    assert v["video"] == str(out / m["member"] / "ep0.mp4") and os.path.getsize(v["video"]) > 0
    assert open(v["sheet"], "rb").read(4) == b"\x89PNG"
  # One member alone acts as it does in the population (its own acting keys), at another step;
  # the library call behind the command, in this process.
  from experiments import evaluate
  (alone,) = evaluate.evaluate(str(run), episodes=2, seed=1, out=str(tmp_path / "eval_one"))[
      "members"]
  together = report["members"][1]
  for key in ("success", "return", "length"):
    np.testing.assert_allclose(alone[key], together[key], err_msg=key)
  assert evaluate.evaluate(str(run), step=40, episodes=1,
                           out=str(tmp_path / "eval_40"))["step"] == 40


@pytest.mark.slow
def test_evaluate_bad_input_is_one_error_line(tmp_path):
  res = _run("experiments.evaluate", f"--workdir={tmp_path}")
  assert res.returncode != 0 and "Traceback" not in res.stderr
  assert res.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path} holds no checkpoints/")
