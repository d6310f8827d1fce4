"""Scripted, imperfect demonstrators for the Robomimic tasks (lift, can, square).

The official multi-human datasets cannot be downloaded here, so these scripts
stand in for robomimic's human operators. Each reads privileged simulator
state (object, peg and bin poses from robosuite 1.5.1) and emits OSC_POSE
delta actions, 7-D in [-1, 1]: translation (x 0.05 m), rotation as an
axis-angle (x 0.5 rad), both in the robot base's frame (robosuite 1.5's
default, which for these fixed, unrotated Pandas is the world's axes), and the
gripper (-1 open, +1 close).

A script is a small state machine (approach, descend, grasp, lift, and for
can / square: carry, lower, release, retreat) driven by an `Operator`, drawn
per episode, that makes the demos varied and imperfect like robomimic's
"better / okay / worse" operators: speed, temporally correlated action noise
(an Ornstein-Uhlenbeck process), hesitations (pauses and small back-offs),
aiming errors, and how precise the operator insists on being before moving
on. Failed grasps and stuck insertions are retried, as a person would.

Needs the Robomimic extra (`pip install -e .[robomimic]`).
"""

import dataclasses
from typing import Dict, Optional

import numpy as np
from scipy.spatial.transform import Rotation

POS_SCALE = 0.05  # metres per unit of translation action (OSC_POSE output_max)
ROT_SCALE = 0.5  # radians per unit of rotation action
OPEN, CLOSE = -1.0, 1.0
# Raw robosuite 1.5.1 observations stored in a demo, by robomimic's name: the robot's keys that
# robomimic stores (all but robot0_proprio-state) and `object` (robosuite's `object-state`).
STORED_OBS = ("robot0_joint_pos", "robot0_joint_pos_cos", "robot0_joint_pos_sin",
              "robot0_joint_vel", "robot0_eef_pos", "robot0_eef_quat", "robot0_eef_quat_site",
              "robot0_gripper_qpos", "robot0_gripper_qvel", "object")


@dataclasses.dataclass(frozen=True)
class Operator:
  """One episode's demonstrator: how fast, noisy, hesitant and precise it is."""
  gain: float  # translation action per POS_SCALE of position error
  max_step: float  # largest translation action norm (1 = 5 cm commanded per step)
  rot_gain: float  # rotation action per ROT_SCALE of orientation error
  noise_std: float  # stationary std of the OU action noise (action units)
  noise_corr: float  # per-step correlation of the OU noise (0 white, near 1 slow drifts)
  pause_prob: float  # per-step chance of starting a hesitation
  backoff_prob: float  # chance that a hesitation backs off from the target instead of stopping
  aim_std: float  # std (m) of the per-attempt error in where the operator aims
  tol: float  # position error (m) accepted before moving to the next phase
  grip_wait: int  # steps spent holding still while the gripper closes or opens
  carry_height: float  # extra height (m) above the minimum for lifting / carrying


def sample_operator(rng: np.random.Generator) -> Operator:
  """A random operator: one skill draw sets its noise and aiming error; speed, patience and
  hesitancy are drawn independently."""
  skill = rng.uniform()  # 1 = the best operator
  return Operator(
      gain=rng.uniform(1.5, 3.0),
      max_step=rng.uniform(0.5, 1.0),
      rot_gain=rng.uniform(1.0, 2.0),
      noise_std=0.03 + 0.17 * (1 - skill) * rng.uniform(0.5, 1.0),
      noise_corr=rng.uniform(0.6, 0.95),
      pause_prob=rng.uniform(0.0, 0.03),
      backoff_prob=rng.uniform(0.0, 0.5),
      aim_std=0.001 + 0.005 * (1 - skill),
      tol=rng.uniform(0.005, 0.015),
      grip_wait=int(rng.integers(4, 12)),
      carry_height=rng.uniform(0.0, 0.08))


def _yaw_of(mat: np.ndarray) -> float:
  """Heading of a frame's x axis in the world xy plane."""
  return float(np.arctan2(mat[1, 0], mat[0, 0]))


def _nearest(angle: float, reference: float, period: float) -> float:
  """The angle equal to `angle` modulo `period` closest to `reference`."""
  return reference + (angle - reference + period / 2) % period - period / 2


def _down(yaw: float) -> np.ndarray:
  """Gripper pointing down with its fingers closing along heading `yaw` (grip-site x axis)."""
  c, s = np.cos(yaw), np.sin(yaw)
  return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


class Script:
  """A state machine over `phase`; subclasses define `_plan` (target pose, gripper, next phase)."""

  def __init__(self, env, operator: Operator, rng: np.random.Generator):
    self.env, self.op, self.rng = env, operator, rng
    self.sim = env.raw_env.sim
    self.robot = env.raw_env.robots[0]
    self.eef_site = self.robot.eef_site_id[self.robot.arms[0]]  # robosuite 1.5: one per arm
    self.table_z = float(np.asarray(getattr(env.raw_env, "table_offset", (0, 0, 0.8)))[2])
    self.phase, self.t_phase = "approach", 0
    self.grip_wait = operator.grip_wait
    self.new_aim()
    self._noise = np.zeros(6)
    self._pause = 0
    self._pause_dir = np.zeros(3)
    self._grip = OPEN

  # Privileged state.
  @property
  def eef_pos(self) -> np.ndarray:
    return np.array(self.sim.data.site_xpos[self.eef_site])

  @property
  def eef_mat(self) -> np.ndarray:
    return np.array(self.sim.data.site_xmat[self.eef_site]).reshape(3, 3)

  @property
  def eef_yaw(self) -> float:
    return _yaw_of(self.eef_mat)

  def body_pos(self, body_id: int) -> np.ndarray:
    return np.array(self.sim.data.body_xpos[body_id])

  def body_yaw(self, body_id: int) -> float:
    return _yaw_of(np.array(self.sim.data.body_xmat[body_id]).reshape(3, 3))

  def new_aim(self):
    """Redraw the operator's aiming error (each new attempt misjudges differently)."""
    self.aim = self.rng.normal(0.0, self.op.aim_std, 3) * np.array([1.0, 1.0, 0.5])

  def retry(self, phase: str):
    """Start over from `phase` after a slip, a little more patient with the gripper."""
    self.new_aim()
    self.grip_wait += 3
    self.goto(phase)

  def goto(self, phase: str):
    self.phase, self.t_phase = phase, 0

  def _plan(self):
    """(target eef position, target yaw or None to keep, gripper command); may call goto."""
    raise NotImplementedError

  def act(self) -> np.ndarray:
    """The next 7-D action."""
    target, yaw, grip = self._plan()
    self.t_phase += 1
    pos_err = target - self.eef_pos
    move = self.op.gain * pos_err / POS_SCALE
    norm = np.linalg.norm(move)
    if norm > self.op.max_step:
      move *= self.op.max_step / norm
    yaw = self.eef_yaw if yaw is None else _nearest(yaw, self.eef_yaw, 2 * np.pi)
    error = Rotation.from_matrix(_down(yaw) @ self.eef_mat.T).as_rotvec()  # world = base axes
    turn = self.op.rot_gain * error / ROT_SCALE
    turn = np.clip(turn, -0.6, 0.6)
    # Hesitation: hold still (or back off a little) for a few steps, gripper unchanged.
    if self._pause == 0 and self.rng.uniform() < self.op.pause_prob:
      self._pause = int(self.rng.integers(3, 15))
      back = self.rng.uniform() < self.op.backoff_prob
      self._pause_dir = -0.3 * pos_err / (np.linalg.norm(pos_err) + 1e-6) if back else np.zeros(3)
    if self._pause > 0:
      self._pause -= 1
      move, turn, grip = self._pause_dir.copy(), np.zeros(3), self._grip
    self._grip = grip
    rho = self.op.noise_corr
    self._noise = rho * self._noise + np.sqrt(1 - rho**2) * self.rng.normal(0, self.op.noise_std, 6)
    arm = np.concatenate([move, turn]) + self._noise * np.array([1, 1, 1, 0.3, 0.3, 0.3])
    return np.clip(np.concatenate([arm, [grip]]), -1.0, 1.0)


class LiftScript(Script):
  """Lift: grasp the cube from above and raise it."""

  def _plan(self):
    cube = self.body_pos(self.env.raw_env.cube_body_id)
    above = cube + self.aim + np.array([0, 0, 0.06 + self.op.carry_height / 2])
    grasp = cube + self.aim + np.array([0, 0, 0.002])
    yaw = _nearest(self.body_yaw(self.env.raw_env.cube_body_id), self.eef_yaw, np.pi / 2)
    p = self.eef_pos
    if self.phase == "approach":
      if np.linalg.norm((above - p)[:2]) < self.op.tol and abs(yaw - self.eef_yaw) < 0.1:
        self.goto("descend")
      return above, yaw, OPEN
    if self.phase == "descend":
      if np.linalg.norm(grasp - p) < 0.006 or self.t_phase > 60:
        self.goto("grasp")
      return grasp, yaw, OPEN
    if self.phase == "grasp":
      if self.t_phase >= self.grip_wait:
        self.goto("lift")
      return p, None, CLOSE
    # lift: go up; if the cube slipped out, open and try again
    if np.linalg.norm(cube - p) > 0.04:
      self.retry("approach")
      return p + np.array([0, 0, 0.03]), None, OPEN
    return np.array([p[0], p[1], self.table_z + 0.12 + self.op.carry_height]), None, CLOSE


class CanScript(Script):
  """PickPlaceCan: pick the can from the left bin and drop it in its quadrant of the right bin."""

  def __init__(self, env, operator, rng):
    super().__init__(env, operator, rng)
    # Drop point: the near half of the can's quadrant (its centre is at the edge of the
    # arm's reach).
    e = env.raw_env
    quadrant = np.array(e.target_bin_placements[e.object_id])
    self.drop = quadrant + np.array([rng.uniform(-0.06, -0.02), rng.uniform(-0.05, -0.02), 0.0])

  def _plan(self):
    e = self.env.raw_env
    can = self.body_pos(e.obj_body_id[e.obj_to_use])
    goal = self.drop
    carry_z = 1.04 + self.op.carry_height / 2  # the can's bottom clears the bin walls (z 0.9)
    p = self.eef_pos
    grasp = can + self.aim + np.array([0, 0, 0.015])
    if self.phase == "approach":
      above = grasp + np.array([0, 0, 0.07])
      if np.linalg.norm((above - p)[:2]) < self.op.tol:
        self.goto("descend")
      return above, None, OPEN
    if self.phase == "descend":
      if np.linalg.norm(grasp - p) < 0.008 or self.t_phase > 60:
        self.goto("grasp")
      return grasp, None, OPEN
    if self.phase == "grasp":
      if self.t_phase >= self.grip_wait:
        self.goto("lift")
      return p, None, CLOSE
    held = np.linalg.norm(can - p) < 0.05
    if self.phase in ("lift", "carry", "lower") and not held:
      self.retry("regrasp")
    if self.phase == "regrasp":  # rise with the gripper open, then start over
      if p[2] > can[2] + 0.08 or self.t_phase > 30:
        self.goto("approach")
      return np.array([p[0], p[1], can[2] + 0.1]), None, OPEN
    if self.phase == "lift":
      if p[2] > carry_z - 0.03:
        self.goto("carry")
      return np.array([p[0], p[1], carry_z]), None, CLOSE
    # eef target that puts the can (not the hand) over the drop point
    over = goal + self.aim * 3 + (p - can) * np.array([1, 1, 0])
    over[2] = carry_z
    if self.phase == "carry":
      if np.linalg.norm((over - p)[:2]) < 0.03 or (self.t_phase > 80 and not e.not_in_bin(
          np.array([can[0], can[1], goal[2] + 0.05]), e.object_id)):
        self.goto("lower")
      if p[2] < carry_z - 0.04:  # sagged: rise before moving on over the walls
        return np.array([p[0], p[1], carry_z]), None, CLOSE
      return over, None, CLOSE
    if self.phase == "lower":
      if can[2] < goal[2] + 0.12 or self.t_phase > 60:
        self.goto("release")
      return np.array([over[0], over[1], goal[2] + 0.08]), None, CLOSE
    if self.phase == "release":
      if self.t_phase >= self.grip_wait:
        self.goto("retreat")
      return p, None, OPEN
    return np.array([p[0], p[1], carry_z]), None, OPEN  # retreat until success ends the episode


class SquareScript(Script):
  """NutAssemblySquare: grasp the square nut by its handle and drop it over the square peg."""

  HANDLE = 0.054  # handle site offset from the nut centre, along the nut's x axis

  def __init__(self, env, operator, rng):
    super().__init__(env, operator, rng)
    e = env.raw_env
    self.nut_id = e.obj_body_id[e.nuts[e.nut_id].name]
    self.peg = self.body_pos(e.peg1_body_id)

  def new_aim(self):
    super().new_aim()
    # where along the handle to grip: its outer half keeps the fingers off the ring
    self.grip_at = self.HANDLE + self.rng.uniform(0.003, 0.012)

  def _plan(self):
    nut = self.body_pos(self.nut_id)
    nut_yaw = self.body_yaw(self.nut_id)
    handle = nut + self.grip_at * np.array([np.cos(nut_yaw), np.sin(nut_yaw), 0.0])
    p = self.eef_pos
    grasp = handle + self.aim + np.array([0, 0, 0.003])
    # fingers close across the handle, i.e. along the nut's y axis
    grip_yaw = _nearest(nut_yaw + np.pi / 2, self.eef_yaw, np.pi)
    carry_z = self.table_z + 0.2 + self.op.carry_height
    if self.phase == "approach":
      above = grasp + np.array([0, 0, 0.07])
      if np.linalg.norm((above - p)[:2]) < self.op.tol and abs(grip_yaw - self.eef_yaw) < 0.1:
        self.goto("descend")
      return above, grip_yaw, OPEN
    if self.phase == "descend":
      if np.linalg.norm(grasp - p) < 0.006 or self.t_phase > 60:
        self.goto("grasp")
      return grasp, grip_yaw, OPEN
    if self.phase == "grasp":
      if self.t_phase >= self.grip_wait:
        self.goto("lift")
      return p, None, CLOSE
    held = np.linalg.norm(handle - p) < 0.04
    if self.phase in ("lift", "carry", "lower") and not held:
      self.retry("regrasp")
    if self.phase == "regrasp":
      if p[2] > nut[2] + 0.08 or self.t_phase > 30:
        self.goto("approach")
      return np.array([p[0], p[1], nut[2] + 0.1]), None, OPEN
    # Turn the nut square to the peg, its handle pointing left, right or back to the robot
    # (pointing away puts the hand beyond the arm's reach).
    square = [_nearest(a, nut_yaw, 2 * np.pi) for a in (np.pi / 2, np.pi, -np.pi / 2)]
    turn = min(square, key=lambda a: abs(a - nut_yaw)) - nut_yaw
    place_yaw = self.eef_yaw + turn
    offset = (p - nut) * np.array([1, 1, 0])
    if self.phase == "lift":
      if p[2] > carry_z - 0.03:
        self.goto("carry")
      return np.array([p[0], p[1], carry_z]), None, CLOSE
    over = self.peg + self.aim * 0.5 + offset
    if self.phase == "carry":
      if np.linalg.norm((over - p)[:2]) < 0.004 and abs(turn) < 0.05:
        self.hold_dz = (p - nut)[2]
        self.goto("lower")
      return np.array([over[0], over[1], carry_z]), place_yaw, CLOSE
    if self.phase == "lower":
      if nut[2] < self.table_z + 0.045:
        self.goto("release")
      # Caught on the peg (the hand slides down the handle, or no progress): back up, re-aim.
      elif (p - nut)[2] < self.hold_dz - 0.01 or self.t_phase > 50:
        self.new_aim()
        self.goto("carry")
      return np.array([over[0], over[1], self.table_z + 0.02 + self.hold_dz]), place_yaw, CLOSE
    if self.phase == "release":
      if self.t_phase >= self.grip_wait:
        self.goto("retreat")
      return p, None, OPEN
    return np.array([p[0], p[1], carry_z]), None, OPEN


SCRIPTS = {"lift": LiftScript, "can": CanScript, "square": SquareScript}


def make_script(task: str, env, rng: np.random.Generator,
                operator: Optional[Operator] = None) -> Script:
  """A scripted demonstrator for `task` in a freshly reset `robomimic_env.RobomimicEnv`."""
  if task not in SCRIPTS:
    raise ValueError(f"no scripted demonstrator for task {task!r}; "
                     f"choose one of: {', '.join(SCRIPTS)}")
  return SCRIPTS[task](env, operator or sample_operator(rng), rng)


def _raw_obs(env) -> Dict[str, np.ndarray]:
  raw = env.raw_observation()
  return {k: np.asarray(raw["object-state" if k == "object" else k], np.float64)
          for k in STORED_OBS}


def rollout(env, task: str, seed: int, operator: Optional[Operator] = None) -> Dict:
  """One scripted episode from `env.reset(seed=seed)`, stopped at the first success.

  Returns a robomimic demo: `obs` / `next_obs` (dicts of key -> [T, d]),
  `actions` [T, 7], `rewards` [T] (1 at success), `dones` [T] (1 at the last
  step, which is the success if there is one: robomimic's done_mode 2),
  `states` [T, S] (the flattened MuJoCo state before each action) and
  `model_file` (the episode's MJCF, which hard resets re-draw), plus `success`
  (bool) and the `operator` used. The operator and its noise are drawn from
  `seed` too, so the episode depends on the seed alone.
  """
  env.reset(seed=seed)
  model_file = env.raw_env.sim.model.get_xml()
  rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
  script = make_script(task, env, rng, operator)
  obs, next_obs, actions, rewards, states = [], [], [], [], []
  success = False
  for _ in range(env.max_episode_steps):
    obs.append(_raw_obs(env))
    states.append(env.sim_state())
    action = script.act()
    _, _, success, truncated, _ = env.step(action)
    next_obs.append(_raw_obs(env))
    actions.append(action)
    rewards.append(float(success))
    if success or truncated:
      break
  stack = lambda rows: {k: np.stack([r[k] for r in rows]) for k in STORED_OBS}
  dones = np.zeros(len(actions))
  dones[-1] = 1.0
  return {"obs": stack(obs), "next_obs": stack(next_obs), "actions": np.array(actions),
          "rewards": np.array(rewards), "dones": dones, "states": np.stack(states),
          "model_file": model_file, "success": success, "operator": script.op}
