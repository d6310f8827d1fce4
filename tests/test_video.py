"""Offscreen rendering, captions, video files and contact sheets (dfp_jax/video.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from dfp_jax import video
from dfp_jax.data import ogbench_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read_mp4(path):
  import imageio_ffmpeg
  reader = imageio_ffmpeg.read_frames(path)
  meta = next(reader)
  w, h = meta["size"]
  return meta, [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]


def test_frames_show_the_scene_and_follow_the_state():
  env = ogbench_data.make_env("cube-single-play-singletask-task2-v0")
  renderer = video.Renderer(48, 32)
  try:
    env.reset(seed=0)
    first = renderer.frame(env)
    assert first.shape == (32, 48, 3) and first.dtype == np.uint8
    assert first.std() > 5  # an image, not a blank buffer
    for _ in range(15):
      env.step(np.ones(env.action_space.shape, np.float32))
    moved = renderer.frame(env)
    assert np.abs(moved.astype(int) - first).mean() > 1  # the arm moved in the picture
  finally:
    renderer.close()
    env.close()


def test_captioned_video_round_trips_through_mp4_and_gif(tmp_path, monkeypatch):
  frames = [np.full((40, 40, 3), 10 * i, np.uint8) for i in range(12)]
  captioned = [video.caption(f, ["cube-single-task2", "step 5 ep 0 success"]) for f in frames]
  h, w = captioned[0].shape[:2]
  assert h % 16 == 0 and w % 16 == 0 and h > 40  # a band under the frame, padded for H.264
  assert captioned[0][42:, :, :].max() > 200  # the caption's light text on the dark band
  path = video.write_video(str(tmp_path / "v"), captioned, fps=10)
  meta, back = _read_mp4(path)
  assert path.endswith(".mp4") and "h264" in meta["codec"] and meta["fps"] == 10
  assert len(back) == 12 and back[0].shape == (h, w, 3)
  assert abs(int(back[-1][:40, :40].mean()) - 110) < 8  # lossy, but the last frame's brightness
  # Without an ffmpeg, the same frames become an animated GIF.
  monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
  gif = video.write_video(str(tmp_path / "g"), captioned, fps=10)
  from PIL import Image
  with Image.open(gif) as im:
    assert gif.endswith(".gif") and im.n_frames == 12
  sheet = video.contact_sheet(str(tmp_path / "s.png"), captioned, count=4)
  with Image.open(sheet) as im:
    assert im.size == (4 * w + 3 * 2, h)


@pytest.mark.slow
def test_a_missing_renderer_is_one_error_line(tiny_cube_single, tmp_path):
  # PyOpenGL on another platform than EGL: MuJoCo's EGL backend cannot load.
  env = dict(os.environ, MUJOCO_GL="egl", PYOPENGL_PLATFORM="osmesa")
  res = subprocess.run([sys.executable, "-m", "experiments.train",
                        "--config=experiments/configs/dfp.py:smoke", f"--workdir={tmp_path}",
                        f"--config.env.dataset_dir={tiny_cube_single}",
                        "--config.train.video_episodes=1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith("error: cannot render offscreen with MuJoCo's egl backend")
  assert "apt-get install" in last
  assert not os.path.exists(tmp_path / "train.csv")  # it stopped before training
