"""Robomimic environments built from a dataset's own metadata through robosuite 1.5.1.

`make_env(env_meta, task)` returns an env with the gymnasium interface the
trainer uses: `reset(seed=...)` (robosuite places objects with numpy's global
RNG, which the seed sets, so seeded resets repeat), `step(a)` returning the
low-dim observation of `robomimic_data.OBS_KEYS`, reward shifted by -1 (0 at
success), `terminated` at success, `truncated` at the task's step limit
(300 / 300 / 400) and `info['success']`.

The official `low_dim_v15.hdf5` files were made with robosuite 1.5.1, and its
`object` observation (robosuite's `object-state`) is laid out differently
from robosuite 1.4's, so the env must be 1.5.1's too (docs/datasets.md). Under 1.5.1:

  lift   [cube_pos (3), cube_quat (4, xyzw), gripper_to_cube_pos (3)] = 10,
         gripper_to_cube_pos = cube_pos - eef_pos (1.4: eef_pos - cube_pos);
  can    [Can_to_robot0_eef_pos (3), Can_to_robot0_eef_quat (4), Can_pos (3),
         Can_quat (4)] = 14 (1.4: pos, quat, then the relative pose);
  square the same with SquareNut_*.

The relative pose of can and square is the object's pose in the gripper
frame, and robosuite 1.5.1 computes it from the object pose cached at the
previous observation update (it updates the object's own pose after it): it
is all zeros right after a reset and one sample stale while stepping.

Datasets store robosuite 1.4's part controller config (`{"type": "OSC_POSE",
...}`); robosuite 1.5 wants a composite one (`{"type": "BASIC", "body_parts":
{"right": {..., "gripper": {"type": "GRIP"}}}}`). A part config is converted by
robosuite's own `refactor_composite_controller_config`, as robomimic does;
composite configs are used as they are.

Needs the Robomimic extra (`pip install -e .[robomimic]`).
"""

import contextlib
import copy
import logging
from typing import Dict, Optional, Tuple

import gymnasium
import numpy as np

from dfp_jax.data import DatasetError
from dfp_jax.data.robomimic_data import OBS_KEYS, TASKS

# robosuite's version that the official low_dim_v15 files, and this module, need.
ROBOSUITE_VERSION = "1.5.1"
# robomimic's observation names -> robosuite's.
_ROBOSUITE_KEYS = {"object": "object-state"}
# robosuite 1.4's OSC_POSE controller config, as robomimic's datasets store it (inside the
# composite config in v1.5 files). robosuite 1.5.1's OSC ignores `damping`, `damping_limits`
# and `control_delta` (its defaults damping_ratio=1 and input_type="delta" are the same).
OSC_POSE = {"type": "OSC_POSE", "input_max": 1, "input_min": -1,
            "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
            "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5], "kp": 150,
            "damping": 1, "impedance_mode": "fixed", "kp_limits": [0, 300],
            "damping_limits": [0, 10], "position_limits": None, "orientation_limits": None,
            "uncouple_pos_ori": True, "control_delta": True, "interpolation": None,
            "ramp_ratio": 0.2}


@contextlib.contextmanager
def _quiet_robosuite():
  """robosuite logs warnings at import ("No private macro file found!", optional robot models)
  and info lines when it loads a controller file; none says anything about this project's runs.
  A filter, not a level: robosuite sets its logger's level to INFO while it is imported."""
  logger = logging.getLogger("robosuite_logs")
  quiet = lambda record: record.levelno >= logging.ERROR
  logger.addFilter(quiet)
  try:
    yield
  finally:
    logger.removeFilter(quiet)


def import_robosuite():
  """robosuite, imported quietly, or a DatasetError that says how to install it."""
  with _quiet_robosuite():
    try:
      import robosuite
    except ImportError as e:
      raise DatasetError("Robomimic environments need the extra: "
                         "pip install -e .[robomimic]") from e
  return robosuite


def composite_controller_config(config: Dict, robot: str) -> Dict:
  """robosuite 1.5's composite controller config from a dataset's stored one.

  A robosuite 1.4 part config (`{"type": "OSC_POSE", ...}`) becomes robosuite's
  default composite config for `robot` with that config on each arm, by
  robosuite's own converter; a composite config is returned unchanged.
  """
  if "body_parts" in config:
    return copy.deepcopy(config)
  if "type" not in config:
    raise DatasetError(f"controller config without a type: {sorted(config)}")
  import_robosuite()
  from robosuite.controllers.composite.composite_controller_factory import (
      refactor_composite_controller_config)
  from robosuite.robots import REGISTERED_ROBOTS
  if robot not in REGISTERED_ROBOTS:
    raise DatasetError(f"unknown robosuite robot {robot!r} in the dataset's metadata")
  with _quiet_robosuite():
    return refactor_composite_controller_config(copy.deepcopy(config), robot,
                                                REGISTERED_ROBOTS[robot].arms)


class RobomimicEnv(gymnasium.Env):
  """A robosuite env as a gymnasium environment (so gymnasium's wrappers apply); see the
  module docstring."""

  def __init__(self, env_meta: Dict, max_episode_steps: int):
    robosuite = import_robosuite()
    kwargs = copy.deepcopy(env_meta.get("env_kwargs", {}))
    # robosuite's default hard resets stay: they rebuild the model each episode (0.3 s vs
    # 3 ms), which re-draws e.g. Lift's cube size; a soft reset would keep the size drawn
    # when the env was made, so episodes would depend on the env's history.
    kwargs.update(has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False,
                  use_object_obs=True, ignore_done=True, reward_shaping=False)
    for k in ("camera_names", "camera_heights", "camera_widths", "camera_depths", "env_name"):
      kwargs.pop(k, None)
    robots = kwargs.get("robots", ["Panda"])
    robot = robots if isinstance(robots, str) else robots[0]
    kwargs["controller_configs"] = composite_controller_config(
        kwargs.get("controller_configs", {}), robot)
    try:
      with _quiet_robosuite():
        self._env = robosuite.make(env_meta["env_name"], **kwargs)
    except Exception as e:  # robosuite raises many types for bad metadata
      raise DatasetError(f"cannot build robosuite env {env_meta.get('env_name')!r} from the "
                         f"dataset's metadata ({type(e).__name__}: {e})") from e
    self.max_episode_steps = max_episode_steps
    low, high = self._env.action_spec
    self.action_space = gymnasium.spaces.Box(low.astype(np.float32), high.astype(np.float32))
    raw = self._env.reset()
    # OBS_KEYS -> size, for naming where two observations differ.
    self.obs_sizes = {k: np.asarray(raw[_ROBOSUITE_KEYS.get(k, k)]).size for k in OBS_KEYS}
    obs_dim = sum(self.obs_sizes.values())
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

  def sim_state(self) -> np.ndarray:
    """The flattened MuJoCo state [time, qpos, qvel] that robomimic stores as `states`: [S]."""
    return np.array(self._env.sim.get_state().flatten())

  def observe_state(self, state: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Put the simulator in a stored state and observe it (robomimic's `reset_to`).

    Args: state: [S] flattened MuJoCo state, as in a dataset's `states`.
    Returns: (obs [O], determined [O] bool): the low-dim observation, and which
    of its entries the state alone determines. The others (the object-to-eef
    pose of can and square) come from robosuite's cache of the previous
    observation update, so a stored first observation may hold zeros or an
    earlier state's values there. Call `reset` before stepping again.
    """
    sim = self._env.sim
    size = sim.get_state().flatten().size
    if np.shape(state) != (size,):
      raise DatasetError(f"a stored simulator state has shape {np.shape(state)}, but this "
                         f"robosuite model's has ({size},)")
    sim.set_state_from_flattened(np.asarray(state, np.float64))
    sim.forward()
    # From an empty cache (as robosuite's own reset does), one update leaves the cache-dependent
    # entries at zero and a second fills them: the entries that agree are the state's own.
    self._env._obs_cache = {}
    first = self._observe(self._env._get_observations(force_update=True))
    second = self._observe(self._env._get_observations(force_update=True))
    return second, first == second

  def reset(self, *, seed: Optional[int] = None, options=None):
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
  env_name, max_steps = TASKS[task]
  if env_meta.get("env_name") != env_name:  # the env comes from the file: say when it is not ours
    raise DatasetError(f"the dataset's env is {env_meta.get('env_name')!r}, task {task!r} needs "
                       f"{env_name!r}: wrong dataset for this task?")
  return RobomimicEnv(env_meta, max_steps)


def check_layout(env: RobomimicEnv, path: str, atol: float = 1e-3):
  """Raise DatasetError unless the file's first observation is what `env` observes.

  Resets `env` to the first demo's stored simulator state (`states[0]`) and
  compares the observation with the file's `obs[0]` on the entries that the
  state determines: a file written under another robosuite observation layout
  (robosuite 1.4's object order or lift's opposite gripper-to-cube sign)
  differs there by centimetres or more, float error by far less than `atol`.
  `env` must be reset before it is stepped again.
  """
  from dfp_jax.data import robomimic_data
  first = robomimic_data.read_first_step(path)
  if first is None:
    return  # no `states` (files written before they were stored): nothing to reset to
  state, stored, env_meta, demo = first
  robosuite = import_robosuite()
  needs = env_meta.get("env_version") or (ROBOSUITE_VERSION if path.endswith("_v15.hdf5")
                                          else "unknown")
  try:
    obs, determined = env.observe_state(state)
  except DatasetError as e:  # another model: another robosuite, or another task's file
    raise DatasetError(f"{path}: {demo}: {e}; the file says robosuite {needs} (its env_version)"
                       ) from None
  if stored.shape != obs.shape:
    return  # load_dataset's dimension check says this more plainly
  error = np.where(determined, np.abs(obs - stored.astype(np.float32)), 0.0)
  if error.max() <= atol:
    return
  i = int(np.argmax(error))
  offsets = np.cumsum([0] + list(env.obs_sizes.values()))
  k = int(np.searchsorted(offsets, i, side="right")) - 1
  where = f"{list(env.obs_sizes)[k]}[{i - offsets[k]}]"
  if needs == robosuite.__version__:
    why = f"it says robosuite {needs} (its env_version) but its observation layout is not that"
  else:
    why = (f"the file needs robosuite {needs} (its env_version), whose observation layout "
           f"differs")
  raise DatasetError(
      f"{path}: {demo}'s first observation is not what robosuite {robosuite.__version__} "
      f"observes at its stored simulator state (off by {error[i]:.3g} at {where}); {why}. Use "
      f"a file made with robosuite {ROBOSUITE_VERSION} (robomimic's low_dim_v15.hdf5) or "
      f"regenerate it with experiments.generate_robomimic")
