"""Rollout videos: headless MuJoCo rendering, captions, mp4 (or GIF) files and contact sheets.

Frames are rendered offscreen from the environment's own MuJoCo model and data
(OGBench's `front` camera, robosuite's `agentview`), so recording never changes
an episode. The OpenGL backend is MuJoCo's `egl` (Mesa's software EGL on a
machine without a GPU) unless `MUJOCO_GL` names `osmesa` or `glfw`; the
context is made here rather than through `mujoco.Renderer`, whose backend is
fixed when mujoco is first imported. Shadows and reflections are off: on a
software renderer they cost about 5x the rest of the frame.

Videos are H.264 mp4 through imageio-ffmpeg's bundled ffmpeg, or an animated
GIF where that is missing. A contact sheet is one PNG strip of evenly spaced
frames.
"""

import collections
import contextlib
import importlib
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dfp_jax import fileio

FPS = 20            # OGBench (control_timestep 0.05 s) and robosuite (control_freq 20) alike
BACKENDS = ("egl", "osmesa", "glfw")
_SHEET_FRAMES = 8


class RenderError(ValueError):
  """Offscreen rendering is not available (one line: what failed and what to install)."""


def backend() -> str:
  gl = os.environ.get("MUJOCO_GL", "").lower().strip()
  return gl if gl in BACKENDS else "egl"


def _gl_context(width: int, height: int):
  name = backend()
  try:
    return importlib.import_module(f"mujoco.{name}").GLContext(width, height)
  except Exception as e:  # ImportError, EGLError, RuntimeError...: the library or device is missing
    msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise RenderError(
        f"cannot render offscreen with MuJoCo's {name} backend ({type(e).__name__}: {msg}); "
        "install Mesa's EGL (apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri) or OSMesa "
        "(apt-get install libosmesa6, then MUJOCO_GL=osmesa)") from None


def check_renderer():
  """Raise RenderError unless an offscreen context can be made (a 16x16 one, freed at once)."""
  _gl_context(16, 16).free()


def scene_of(env) -> Tuple[object, object, str, Optional[object]]:
  """(MjModel, MjData, camera name, MjvOption or None) of an OGBench or Robomimic env."""
  raw = getattr(env, "raw_env", None)
  if raw is not None:  # dfp_jax.data.robomimic_env.RobomimicEnv over robosuite
    return raw.sim.model._model, raw.sim.data._data, "agentview", None
  inner = env.unwrapped  # OGBench's manipspace env
  return inner._model, inner._data, "front", getattr(inner, "_scene_option", None)


class Renderer:
  """Offscreen frames of any MuJoCo model at one size: `frame(env) -> [H, W, 3] uint8`.

  Keeps a rendering context per model for the last few models it drew (several members'
  environments, each its own model, alternate in one evaluation; building a context costs
  far more than a frame)."""

  MAX_CONTEXTS = 16  # robosuite rebuilds its model at every reset: older contexts are freed

  def __init__(self, width: int, height: int):
    import mujoco
    self._mj = mujoco
    self.width, self.height = int(width), int(height)
    self._gl = _gl_context(self.width, self.height)
    self._contexts = collections.OrderedDict()  # id(model) -> (model, MjrContext, MjvScene)

  def _bind(self, model):
    """The (context, scene) for `model`, made current."""
    mj = self._mj
    self._gl.make_current()
    entry = self._contexts.get(id(model))
    if entry is not None and entry[0] is model:
      self._contexts.move_to_end(id(model))
      mj.mjr_setBuffer(mj.mjtFramebuffer.mjFB_OFFSCREEN, entry[1])
      return entry[1], entry[2]
    if entry is not None:  # a freed model's id reused
      entry[1].free()
      del self._contexts[id(model)]
    while len(self._contexts) >= self.MAX_CONTEXTS:
      _, (_, context, _) = self._contexts.popitem(last=False)
      context.free()
    # The offscreen buffer must hold the frame; the field only affects rendering.
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
    context = mj.MjrContext(model, mj.mjtFontScale.mjFONTSCALE_150)
    mj.mjr_setBuffer(mj.mjtFramebuffer.mjFB_OFFSCREEN, context)
    scene = mj.MjvScene(model, maxgeom=10_000)
    scene.flags[mj.mjtRndFlag.mjRND_SHADOW] = 0
    scene.flags[mj.mjtRndFlag.mjRND_REFLECTION] = 0
    self._contexts[id(model)] = (model, context, scene)
    return context, scene

  def frame(self, env) -> np.ndarray:
    mj = self._mj
    model, data, camera_name, option = scene_of(env)
    context, scene = self._bind(model)
    camera = mj.MjvCamera()
    camera_id = mj.mj_name2id(model, mj.mjtObj.mjOBJ_CAMERA, camera_name)
    if camera_id >= 0:
      camera.type, camera.fixedcamid = mj.mjtCamera.mjCAMERA_FIXED, camera_id
    else:
      mj.mjv_defaultFreeCamera(model, camera)
    mj.mjv_updateScene(model, data, option or mj.MjvOption(), None, camera,
                       mj.mjtCatBit.mjCAT_ALL, scene)
    rect = mj.MjrRect(0, 0, self.width, self.height)
    mj.mjr_render(rect, scene, context)
    out = np.empty((self.height, self.width, 3), np.uint8)
    mj.mjr_readPixels(out, None, rect, context)
    return np.flipud(out)

  def close(self):
    for _, context, _ in self._contexts.values():
      context.free()
    self._contexts.clear()
    if self._gl is not None:
      self._gl.free()
      self._gl = None


def short_task(task: str) -> str:
  """'cube-single-play-singletask-task2-v0' -> 'cube-single-task2'."""
  for part in ("-play", "-singletask", "-v0"):
    task = task.replace(part, "")
  return task


def caption(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
  """The frame over a dark band holding `lines` in a small bitmap font, padded to multiples of
  16 (what H.264 encoders want)."""
  from PIL import Image, ImageDraw, ImageFont
  h, w = frame.shape[:2]
  line_h = 11
  band = line_h * len(lines) + 3
  out_h, out_w = -(-(h + band) // 16) * 16, -(-w // 16) * 16
  canvas = Image.new("RGB", (out_w, out_h), (20, 20, 20))
  canvas.paste(Image.fromarray(frame), (0, 0))
  draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
  for i, line in enumerate(lines):
    draw.text((2, h + 2 + i * line_h), line, fill=(235, 235, 235), font=font)
  return np.asarray(canvas)


def write_video(stem: str, frames: Sequence[np.ndarray], fps: float = FPS) -> str:
  """`stem`.mp4 (H.264) or, without an ffmpeg, `stem`.gif; returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  try:
    import imageio_ffmpeg
    imageio_ffmpeg.get_ffmpeg_exe()
  except Exception:  # not installed, or no binary for this platform
    imageio_ffmpeg = None
  if imageio_ffmpeg is not None:
    path = stem + ".mp4"
    h, w = frames[0].shape[:2]
    with warnings.catch_warnings():  # jax warns at any fork, here ffmpeg's (a fork + exec)
      warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
      writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, codec="libx264",
                                           pix_fmt_out="yuv420p", macro_block_size=16,
                                           ffmpeg_log_level="error")
      writer.send(None)
      for f in frames:
        writer.send(np.ascontiguousarray(f))
      writer.close()
    return path
  return write_gif(stem + ".gif", frames, fps)


def write_gif(path: str, frames: Sequence[np.ndarray], fps: float = FPS) -> str:
  from PIL import Image
  images = [Image.fromarray(np.asarray(f)) for f in frames]
  images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
  return path


def gif_bytes(frames: Sequence[np.ndarray], fps: float = FPS) -> bytes:
  import io
  from PIL import Image
  images = [Image.fromarray(np.asarray(f)) for f in frames]
  buf = io.BytesIO()
  images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                 duration=int(1000 / fps), loop=0)
  return buf.getvalue()


def contact_sheet(path: str, frames: Sequence[np.ndarray], count: int = _SHEET_FRAMES) -> str:
  """One PNG strip of `count` evenly spaced frames (first and last included)."""
  from PIL import Image
  idx = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
  gap = 2
  h, w = frames[0].shape[:2]
  sheet = Image.new("RGB", (len(idx) * w + (len(idx) - 1) * gap, h), (255, 255, 255))
  for j, i in enumerate(idx):
    sheet.paste(Image.fromarray(np.asarray(frames[i])), (j * (w + gap), 0))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  sheet.save(path)
  return path


class Recorder:
  """Frames of the first `episodes` evaluation episodes of some members.

  Passed to `MemberEnvs.evaluate` as its `watch`: called with (episode, member,
  env, info) after each reset (info None) and each step; renders every
  `stride`-th step and keeps the last success flag.
  """

  def __init__(self, members: Sequence[int], episodes: int, size: int, stride: int = 1):
    self.members, self.episodes, self.stride = set(members), episodes, max(1, stride)
    self.frames: Dict[Tuple[int, int], List[np.ndarray]] = {}
    self.success: Dict[Tuple[int, int], float] = {}
    self._steps: Dict[Tuple[int, int], int] = {}
    self._renderer = Renderer(size, size) if episodes > 0 and self.members else None

  def __call__(self, episode: int, member: int, env, info):
    if episode >= self.episodes or member not in self.members:
      return
    key = (episode, member)
    t = 0 if info is None else self._steps[key] + 1
    self._steps[key] = t
    if info is None:
      self.frames[key], self.success[key] = [], 0.0
    else:
      self.success[key] = float(info.get("success", 0.0))
    if t % self.stride == 0:
      self.frames[key].append(self._renderer.frame(env))

  def captioned(self, episode: int, member: int, task: str, step: int) -> List[np.ndarray]:
    outcome = "success" if self.success[(episode, member)] > 0 else "failure"
    lines = [short_task(task), f"step {step} ep {episode} {outcome}"]
    return [caption(f, lines) for f in self.frames[(episode, member)]]

  def close(self):
    if self._renderer is not None:
      self._renderer.close()
      self._renderer = None


def save(recorder: Recorder, member: int, out_dir: str, prefix: str, task: str, step: int,
         sheet: bool = False) -> List[Dict]:
  """Write the member's recorded episodes as `<out_dir>/<prefix>ep<k>.mp4` (and a PNG strip
  with `sheet`); returns [{episode, success, video[, sheet]}]."""
  written = []
  for (episode, m) in sorted(recorder.frames):
    if m != member:
      continue
    frames = recorder.captioned(episode, member, task, step)
    stem = os.path.join(out_dir, f"{prefix}ep{episode}")
    entry = {"episode": episode, "success": recorder.success[(episode, member)],
             "video": write_video(stem, frames, FPS / recorder.stride), "frames": frames}
    if sheet:
      entry["sheet"] = contact_sheet(stem + ".png", frames)
    written.append(entry)
  return written


@contextlib.contextmanager
def evaluation_videos(train_config, task: str, loggers, positions, step: int):
  """The training loop's evaluation videos (`train.video_episodes` of `train_config`): yields
  the `watch` for `MemberEnvs.evaluate` (None when off), then writes
  `<member dir>/videos/<step>_ep<k>.mp4` and gives each to its member's metrics logger
  (`loggers`, one per written member, at `positions` among the members evaluated)."""
  episodes = min(train_config.get("video_episodes", 0), train_config.eval_episodes)
  if episodes <= 0:
    yield None
    return
  recorder = Recorder(positions, episodes, train_config.video_size)
  try:
    yield recorder
    for logger, position in zip(loggers, positions):
      with fileio.staged(os.path.join(logger.workdir, "videos")) as out_dir:
        for v in save(recorder, position, out_dir, f"{step}_", task, step):
          logger.video(f"eval/video_ep{v['episode']}", step, v["frames"], v["video"],
                       FPS / recorder.stride)
  finally:
    recorder.close()
