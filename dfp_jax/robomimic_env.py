"""Robomimic environments built from a dataset's own metadata through robosuite (1.4.x).

`make_env(env_meta, task)` returns an env with the gymnasium interface the
trainer uses: `reset(seed=...)` (robosuite places objects with numpy's global
RNG, which the seed sets, so seeded resets repeat), `step(a)` returning the
low-dim observation of `robomimic_data.OBS_KEYS`, reward shifted by -1 (0 at
success), `terminated` at success, `truncated` at the task's step limit
(300 / 300 / 400) and `info['success']`.

Datasets store robosuite 1.4's controller configs (`{"type": "OSC_POSE", ...}`);
robosuite 1.5 writes composite ones (`{"type": "BASIC", "body_parts": {"right":
{...}}}`). Both are accepted: the arm's part of a composite config is used.

Needs the Robomimic extra (`pip install -e .[robomimic]`).
"""

import logging
from typing import Dict, Optional

import numpy as np

from dfp_jax.ogbench_data import DatasetError
from dfp_jax.robomimic_data import OBS_KEYS, TASKS

# robomimic's observation names -> robosuite's.
_ROBOSUITE_KEYS = {"object": "object-state"}
# robosuite 1.4's OSC_POSE controller config, as robomimic's v1.5 datasets store it.
OSC_POSE = {"type": "OSC_POSE", "input_max": 1, "input_min": -1,
            "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
            "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5], "kp": 150,
            "damping": 1, "impedance_mode": "fixed", "kp_limits": [0, 300],
            "damping_limits": [0, 10], "position_limits": None, "orientation_limits": None,
            "uncouple_pos_ori": True, "control_delta": True, "interpolation": None,
            "ramp_ratio": 0.2}


def import_robosuite():
  """robosuite, without the three "No private macro file found!" warnings of its import."""
  logger = logging.getLogger("robosuite_logs")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    import robosuite
  except ImportError as e:
    raise DatasetError("Robomimic environments need the extra: pip install -e .[robomimic]") from e
  finally:
    logger.setLevel(level)
  return robosuite


def legacy_controller_config(config: Dict) -> Dict:
  """A robosuite 1.4 controller config from either format."""
  if config.get("type") == "BASIC" or "body_parts" in config:
    parts = config.get("body_parts", {})
    arm = parts.get("right") or next((p for p in parts.values() if "type" in p), None)
    if arm is None:
      raise DatasetError(f"composite controller config without an arm part: {sorted(parts)}")
    return {k: v for k, v in arm.items() if k != "gripper"}
  if "type" not in config:
    raise DatasetError(f"controller config without a type: {sorted(config)}")
  return dict(config)


class RobomimicEnv:
  """A robosuite env with the trainer's (gymnasium) interface; see the module docstring."""

  def __init__(self, env_meta: Dict, max_episode_steps: int):
    import gymnasium
    robosuite = import_robosuite()
    kwargs = dict(env_meta.get("env_kwargs", {}))
    # robosuite's default hard resets stay: they rebuild the model each episode (0.6 s vs
    # 3 ms), which re-draws e.g. Lift's cube size; a soft reset would keep the size drawn
    # when the env was made, so episodes would depend on the env's history.
    kwargs.update(has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False,
                  use_object_obs=True, ignore_done=True, reward_shaping=False)
    kwargs["controller_configs"] = legacy_controller_config(kwargs.get("controller_configs", {}))
    for k in ("camera_names", "camera_heights", "camera_widths", "camera_depths", "env_name"):
      kwargs.pop(k, None)
    try:
      self._env = robosuite.make(env_meta["env_name"], **kwargs)
    except Exception as e:  # robosuite raises many types for bad metadata
      raise DatasetError(f"cannot build robosuite env {env_meta.get('env_name')!r} from the "
                         f"dataset's metadata ({type(e).__name__}: {e})") from e
    self.max_episode_steps = max_episode_steps
    low, high = self._env.action_spec
    self.action_space = gymnasium.spaces.Box(low.astype(np.float32), high.astype(np.float32))
    obs_dim = len(self._observe(self._env.reset()))
    self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    self._t = 0

  @staticmethod
  def _observe(raw) -> np.ndarray:
    return np.concatenate([np.asarray(raw[_ROBOSUITE_KEYS.get(k, k)], np.float32).ravel()
                           for k in OBS_KEYS])

  @property
  def raw_env(self):
    """The robosuite env underneath (simulator and task attributes, for scripted operators)."""
    return self._env

  def raw_observation(self) -> Dict[str, np.ndarray]:
    """robosuite's observation dict of the current state (every key, not only OBS_KEYS)."""
    return self._env._get_observations()

  def reset(self, seed: Optional[int] = None):
    if seed is not None:
      np.random.seed(seed % 2**32)
    self._t = 0
    return self._observe(self._env.reset()), {}

  def step(self, action):
    raw, _, _, info = self._env.step(np.asarray(action, np.float64))
    self._t += 1
    success = bool(self._env._check_success())
    truncated = self._t >= self.max_episode_steps and not success
    return (self._observe(raw), float(success) - 1.0, success, truncated,
            {**info, "success": float(success)})

  def close(self):
    self._env.close()


def make_env(env_meta: Dict, task: str) -> RobomimicEnv:
  """The env of `task` (lift, can, square) from a dataset's env metadata."""
  if task not in TASKS:
    raise DatasetError(f"unknown Robomimic task {task!r}; choose one of: {', '.join(TASKS)}")
  return RobomimicEnv(env_meta, TASKS[task][1])
