"""Generate OGBench manipulation *play* datasets locally.

The official OGBench datasets cannot be downloaded in this environment, so this module regenerates them with the
scripted, non-Markovian "plan" oracles that ship inside the installed ``ogbench`` package
(``ogbench.manipspace.oracles.plan``). Like OGBench's own data-generation script for ``*-play-v0`` datasets, the oracle
repeatedly picks a random new target (a cube placement, a button press, a drawer/window motion, ...) through
``env.unwrapped.set_new_target`` and executes it with temporally correlated noise, for a fixed number of steps.

Output uses the official npz layout, so ``ogbench.utils.load_dataset`` and ``ogbench.make_env_and_datasets(...,
dataset_path=...)`` read it directly. Each episode of length ``L`` stores ``L + 1`` rows: observations ``s_0 .. s_L``,
the oracle action taken in each of them (the one in ``s_L`` is never used by the loader), ``terminals`` equal to 1 on the
last row of the episode, and the simulator state (``qpos``, ``qvel`` and, for scene/puzzle, ``button_states``) of each
row's observation.

Episodes are generated in parallel worker processes. Every episode is seeded from ``(seed, split, episode index)``
only, so the output does not depend on the number of workers.

Task-biased play (cube datasets, ``task_goal_prob > 0``): each time the oracle picks a new target, with probability
``task_goal_prob`` it instead works towards the goal configuration of single task ``task_id`` (``goal_xyzs`` of
``task_infos[task_id - 1]``, the goal that ``cube-*-singletask-task{task_id}-v0`` rewards), and with the same
probability per episode the episode starts from the task's initial cube configuration (``init_xyzs``, placed like the
env's 'task' mode does: per-episode cube permutation, +-1 cm xy jitter, random yaw). With several cubes a task attempt
is a sequence of single-cube pick-and-places (lowest goals first, clearing cubes that block a goal) until every cube is
at its goal or ``3 * num_cubes`` moves were made; then play resumes. The data mixes ordinary play with demonstrations of
solving the task. ``task_goal_prob=0`` (default) draws nothing extra and gives exactly the plain play data.

Files are written by `dfp_jax.data.ogbench_generate.generate` (command line:
`python -m experiments.generate_ogbench --dataset=cube-double-play-v0 --episodes=1000 --out=DIR`).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

# Training split / validation split identifiers used when deriving per-episode seeds.
TRAIN_SPLIT = 0
VAL_SPLIT = 1
# Maximum number of re-tries of one episode that fails the scene health check.
_MAX_ATTEMPTS = 100
# Task-biased play: default single task (ogbench's default `reward_task_id`) and the success radius of cube goals.
DEFAULT_TASK_ID = 2
_GOAL_TOL = 0.04


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  env_id: str  # Goal-conditioned OGBench environment to collect data in.
  family: str  # 'cube', 'scene' or 'puzzle'; selects the oracles.
  p_stack_range: tuple[float, float]  # Per-episode stacking probability ~ U(lo, hi).
  official_episodes: int  # Number of training episodes of the official dataset (informational).
  episode_length: int = (
      1000  # Official play datasets: max_episode_steps=1001, i.e. 1000 transitions.
  )


DATASETS: dict[str, DatasetSpec] = {
    'cube-single-play-v0': DatasetSpec('cube-single-v0', 'cube', (0.0, 0.0), 1000),
    'cube-double-play-v0': DatasetSpec('cube-double-v0', 'cube', (0.0, 0.25), 1000),
    'cube-triple-play-v0': DatasetSpec('cube-triple-v0', 'cube', (0.05, 0.35), 3000),
    'cube-quadruple-play-v0': DatasetSpec('cube-quadruple-v0', 'cube', (0.1, 0.5), 5000),
    'scene-play-v0': DatasetSpec('scene-v0', 'scene', (0.5, 0.5), 1000),
    'puzzle-3x3-play-v0': DatasetSpec('puzzle-3x3-v0', 'puzzle', (0.5, 0.5), 1000),
    'puzzle-4x4-play-v0': DatasetSpec('puzzle-4x4-v0', 'puzzle', (0.5, 0.5), 1000),
}

DEFAULT_NOISE = 0.1  # Official `--noise` default for play datasets.
DEFAULT_NOISE_SMOOTHING = 0.5  # Official `--noise_smoothing` default.


def get_spec(dataset_name: str) -> DatasetSpec:
  if dataset_name not in DATASETS:
    raise ValueError(
        f'Unsupported dataset {dataset_name!r}. Supported datasets: {", ".join(sorted(DATASETS))}.'
    )
  return DATASETS[dataset_name]


def episode_seeds(
    seed: int, split: int, episode_index: int, attempt: int = 0
) -> tuple[int, int, float]:
  """Derive (env seed, global numpy seed, uniform draw for p_stack) from the episode identity only."""
  ss = np.random.SeedSequence([int(seed), int(split), int(episode_index), int(attempt)])
  env_seed, np_seed = (int(x) for x in ss.generate_state(2, dtype=np.uint32))
  u = float(np.random.default_rng(ss.spawn(1)[0]).uniform())
  return env_seed, np_seed, u


def task_rng(seed: int, split: int, episode_index: int, attempt: int = 0) -> np.random.Generator:
  """Per-episode generator of the task-biasing draws (independent of the env and oracle streams)."""
  return np.random.default_rng(
      np.random.SeedSequence([int(seed), int(split), int(episode_index), int(attempt), 1])
  )


class EpisodeCollector:
  """Owns one environment plus its oracles and rolls out deterministic play episodes."""

  def __init__(
      self,
      dataset_name: str,
      episode_length: int,
      noise: float,
      seed: int,
      task_goal_prob: float = 0.0,
      task_id: int | None = None,
  ):
    import gymnasium

    import ogbench.manipspace  # noqa: F401  (registers the environments)
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    self.spec = get_spec(dataset_name)
    self.episode_length = int(episode_length)
    self.seed = int(seed)
    self.task_goal_prob = float(task_goal_prob)
    self.task_id = DEFAULT_TASK_ID if task_id is None else int(task_id)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      self.env = gymnasium.make(
          self.spec.env_id,
          terminate_at_goal=False,
          mode='data_collection',
          max_episode_steps=self.episode_length + 1,
      )
    self.uenv = self.env.unwrapped
    self.has_button_states = hasattr(self.uenv, '_cur_button_states')

    kw = dict(env=self.env, noise=noise, noise_smoothing=DEFAULT_NOISE_SMOOTHING)
    if self.spec.family == 'cube':
      self.oracles = {'cube': CubePlanOracle(**kw)}
    elif self.spec.family == 'scene':
      self.oracles = {
          'cube': CubePlanOracle(**kw),
          'button': ButtonPlanOracle(**kw),
          'drawer': DrawerPlanOracle(**kw),
          'window': WindowPlanOracle(**kw),
      }
    elif self.spec.family == 'puzzle':
      self.oracles = {'button': ButtonPlanOracle(gripper_always_closed=True, **kw)}
    else:  # pragma: no cover
      raise ValueError(self.spec.family)

    # qpos slice of the (single) scene cube, for the health check.
    self._scene_cube_adr = None
    if self.spec.family == 'scene':
      self.env.reset(seed=0)
      model = self.uenv._model
      self._scene_cube_adr = int(model.jnt_qposadr[model.joint('object_joint_0').id])

    self._task_info = None
    if self.task_goal_prob > 0:
      if self.spec.family != 'cube':
        raise ValueError(
            f'task_goal_prob > 0 is only supported for cube datasets, not {dataset_name!r}.'
        )
      # 'data_collection' envs do not define their tasks; `set_tasks` only fills `task_infos`.
      self.uenv.set_tasks()
      if not 1 <= self.task_id <= len(self.uenv.task_infos):
        raise ValueError(
            f'task_id must be in [1, {len(self.uenv.task_infos)}], got {self.task_id}.'
        )
      self._task_info = self.uenv.task_infos[self.task_id - 1]
    # Per-episode state of task-biased play.
    self._rng: np.random.Generator | None = None
    self._goals: np.ndarray | None = (
        None  # (num_cubes, 3) task goal of each cube (after the permutation).
    )
    self._task_active = False
    self._task_moves = 0
    self._p_stack = 0.0

  # ------------------------------------------------------------------------------------------------------------------
  # Task-biased play.

  def _cube_xyzs(self) -> np.ndarray:
    return np.array(
        [self.uenv._data.joint(f'object_joint_{i}').qpos[:3] for i in range(self.uenv._num_cubes)]
    )

  def _set_target(self, block: int, pos, quat) -> tuple[np.ndarray, dict[str, Any]]:
    """Make `block` the oracle's target at `pos`/`quat`, exactly as `CubeEnv.set_new_target` stores a target."""
    u = self.uenv
    u._target_block = int(block)
    for i in range(u._num_cubes):
      mocap_id = u._cube_target_mocap_ids[i]
      if i == block:
        u._data.mocap_pos[mocap_id] = pos
        u._data.mocap_quat[mocap_id] = quat
      else:
        u._data.mocap_pos[mocap_id] = (0, 0, -0.3)
        u._data.mocap_quat[mocap_id] = (1.0, 0.0, 0.0, 0.0)
      alpha = 0.2 if (u._visualize_info and i == block) else 0.0
      for gid in u._cube_target_geom_ids_list[i]:
        u._model.geom(gid).rgba[3] = alpha
    return u.compute_observation(), u.get_reset_info()

  def _start_episode(self, rng: np.random.Generator, ob, info):
    """Task-biased start of an episode (task_goal_prob > 0): maybe the task's initial cubes, maybe its goal."""
    import mujoco

    from ogbench.manipspace import lie

    u = self.uenv
    n = u._num_cubes
    self._rng = rng
    perm = rng.permutation(n) if u._permute_blocks else np.arange(n)
    self._goals = np.asarray(self._task_info['goal_xyzs'], dtype=np.float64)[perm]
    self._task_active = False
    self._task_moves = 0
    from_task_init = bool(rng.uniform() < self.task_goal_prob)
    if from_task_init:
      # As CubeEnv.initialize_episode does in 'task' mode (the arm was already placed by the reset).
      init_xyzs = np.asarray(self._task_info['init_xyzs'], dtype=np.float64)[perm]
      for i in range(n):
        pos = init_xyzs[i].copy()
        pos[:2] += rng.uniform(-0.01, 0.01, size=2)
        u._data.joint(f'object_joint_{i}').qpos[:3] = pos
        u._data.joint(f'object_joint_{i}').qpos[3:] = lie.SO3.from_z_radians(
            rng.uniform(0, 2 * np.pi)
        ).wxyz
        u._data.joint(f'object_joint_{i}').qvel[:] = 0.0
      u.pre_step()
      mujoco.mj_forward(u._model, u._data)
      u.post_step()
    target = self._task_or_none()
    if target is not None:
      return target
    if from_task_init:  # The reset's play target was drawn for the old cube positions.
      return u.set_new_target(p_stack=self._p_stack)
    return ob, info

  def _new_target(self, p_stack: float) -> tuple[np.ndarray, dict[str, Any]]:
    if self.task_goal_prob <= 0:
      return self.uenv.set_new_target(p_stack=p_stack)
    target = self._task_or_none()
    return self.uenv.set_new_target(p_stack=p_stack) if target is None else target

  def _task_or_none(self):
    """With probability task_goal_prob start a task attempt; the next task target while one runs, else None."""
    if not self._task_active and self._rng.uniform() < self.task_goal_prob:
      self._task_active, self._task_moves = True, 0
    if self._task_active:
      target = self._task_target()
      if target is not None:
        return target
      self._task_active = False
    return None

  def _task_target(self):
    """Next single-cube move towards the task goal; None once it is reached (or after 3 * num_cubes moves)."""
    from ogbench.manipspace import lie

    u, rng, goals = self.uenv, self._rng, self._goals
    n = u._num_cubes
    xyz = self._cube_xyzs()
    remaining = [i for i in range(n) if np.linalg.norm(xyz[i] - goals[i]) > _GOAL_TOL]
    if not remaining or self._task_moves >= 3 * n:
      return None
    self._task_moves += 1

    def xy_dist(a, b):
      return float(np.linalg.norm(a[:2] - b[:2]))

    def on_top(k, i):  # Cube k rests on cube i (same criterion as CubeEnv.set_new_target).
      return k != i and xyz[k, 2] > xyz[i, 2] and xy_dist(xyz[k], xyz[i]) < 0.02

    def occupants(i):  # Other cubes at (or above) the level of cube i's goal spot.
      return [
          k
          for k in range(n)
          if k != i and xy_dist(xyz[k], goals[i]) < 0.05 and xyz[k, 2] > goals[i, 2] - 0.02
      ]

    def supported(i):  # Every cube whose goal lies under cube i's goal is already at its goal.
      return all(
          j not in remaining
          for j in range(n)
          if j != i and goals[j, 2] < goals[i, 2] - 0.01 and xy_dist(goals[j], goals[i]) < 0.02
      )

    top = [i for i in range(n) if not any(on_top(k, i) for k in range(n))]
    cands = [i for i in remaining if i in top and supported(i) and not occupants(i)]
    identity = lie.SO3.identity().wxyz.tolist()
    if cands:  # Lowest goals first (stacks are built bottom-up).
      z_min = min(goals[i, 2] for i in cands)
      cands = [i for i in cands if goals[i, 2] < z_min + 0.01]
      i = cands[int(rng.integers(len(cands)))]
      return self._set_target(i, goals[i].copy(), identity)
    # Blocked: move a cube that sits on a goal spot or on a cube still to be moved to a free spot on the table.
    blockers = {k for i in remaining for k in occupants(i)}
    blockers |= {k for i in remaining for k in range(n) if on_top(k, i)}
    blockers = sorted(blockers)
    blockers = [k for k in blockers if k in top]
    if not blockers:
      return u.set_new_target(p_stack=0.0)
    k = blockers[int(rng.integers(len(blockers)))]
    others = [xyz[j] for j in range(n) if j != k] + list(goals)
    for _ in range(100):
      xy = rng.uniform(*u._target_sampling_bounds)
      if all(np.linalg.norm(xy - p[:2]) >= 0.08 for p in others):
        break
    yaw = rng.uniform(0, 2 * np.pi)
    return self._set_target(k, np.array([*xy, 0.02]), lie.SO3.from_z_radians(yaw).wxyz.tolist())

  def _rollout(
      self, env_seed: int, np_seed: int, p_stack: float, rng: np.random.Generator | None = None
  ) -> dict[str, np.ndarray]:
    n = self.episode_length + 1
    # The oracles draw their keyframe jitter and action noise from the global numpy RNG.
    np.random.seed(np_seed)
    ob, info = self.env.reset(seed=env_seed)
    self._p_stack = p_stack
    if self.task_goal_prob > 0:
      ob, info = self._start_episode(rng, ob, info)
    oracle = self.oracles[info['privileged/target_task']]
    oracle.reset(ob, info)

    data = {
        'observations': np.empty((n, *np.shape(ob)), dtype=np.float32),
        'actions': np.empty((n, self.env.action_space.shape[0]), dtype=np.float32),
        'terminals': np.zeros((n,), dtype=np.float32),
        'qpos': np.empty((n, self.uenv._model.nq), dtype=np.float32),
        'qvel': np.empty((n, self.uenv._model.nv), dtype=np.float32),
    }
    if self.has_button_states:
      data['button_states'] = np.empty((n, len(info['button_states'])), dtype=np.int64)

    for t in range(n):
      action = np.clip(np.asarray(oracle.select_action(ob, info), dtype=np.float64), -1.0, 1.0)
      next_ob, _, _, _, info = self.env.step(action)
      if oracle.done:
        # Play-style data: as soon as a task is finished, sample a new random target.
        new_ob, new_info = self._new_target(p_stack)
        oracle = self.oracles[new_info['privileged/target_task']]
        oracle.reset(new_ob, new_info)
      # `prev_*` is the simulator state right before this step, i.e. the state of `ob`.
      data['observations'][t] = ob
      data['actions'][t] = action
      data['qpos'][t] = info['prev_qpos']
      data['qvel'][t] = info['prev_qvel']
      if self.has_button_states:
        data['button_states'][t] = info['prev_button_states']
      ob = next_ob
    data['terminals'][-1] = 1.0
    return data

  def _is_healthy(self, qpos: np.ndarray) -> bool:
    """Scene health check of the official script: the cube stays visible unless it is in the drawer."""
    if self._scene_cube_adr is None:
      return True
    xyz = qpos[:, self._scene_cube_adr : self._scene_cube_adr + 3]
    if (xyz[:, 1] >= 0.29).any():  # Too far right.
      return False
    if (
        (xyz[:, 1] <= -0.3) & ((xyz[:, 2] < 0.06) | (xyz[:, 2] > 0.08))
    ).any():  # Too far left, not in drawer.
      return False
    return True

  def collect(self, split: int, episode_index: int) -> dict[str, np.ndarray]:
    lo, hi = self.spec.p_stack_range
    for attempt in range(_MAX_ATTEMPTS):
      env_seed, np_seed, u = episode_seeds(self.seed, split, episode_index, attempt)
      rng = task_rng(self.seed, split, episode_index, attempt) if self.task_goal_prob > 0 else None
      data = self._rollout(env_seed, np_seed, lo + (hi - lo) * u, rng)
      if self._is_healthy(data['qpos']):
        return data
    raise RuntimeError(f'Episode {episode_index} failed the health check {_MAX_ATTEMPTS} times.')
