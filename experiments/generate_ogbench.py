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

Usage:
    python -m experiments.generate_ogbench --dataset=cube-double-play-v0 --episodes=1000 --out=DIR
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
import time
import warnings
from typing import Any

import numpy as np

# Training split / validation split identifiers used when deriving per-episode seeds.
_TRAIN_SPLIT = 0
_VAL_SPLIT = 1
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
    episode_length: int = 1000  # Official play datasets: max_episode_steps=1001, i.e. 1000 transitions.


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


def episode_seeds(seed: int, split: int, episode_index: int, attempt: int = 0) -> tuple[int, int, float]:
    """Derive (env seed, global numpy seed, uniform draw for p_stack) from the episode identity only."""
    ss = np.random.SeedSequence([int(seed), int(split), int(episode_index), int(attempt)])
    env_seed, np_seed = (int(x) for x in ss.generate_state(2, dtype=np.uint32))
    u = float(np.random.default_rng(ss.spawn(1)[0]).uniform())
    return env_seed, np_seed, u


def task_rng(seed: int, split: int, episode_index: int, attempt: int = 0) -> np.random.Generator:
    """Per-episode generator of the task-biasing draws (independent of the env and oracle streams)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(split), int(episode_index), int(attempt), 1]))


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
                raise ValueError(f'task_goal_prob > 0 is only supported for cube datasets, not {dataset_name!r}.')
            # 'data_collection' envs do not define their tasks; `set_tasks` only fills `task_infos`.
            self.uenv.set_tasks()
            if not 1 <= self.task_id <= len(self.uenv.task_infos):
                raise ValueError(f'task_id must be in [1, {len(self.uenv.task_infos)}], got {self.task_id}.')
            self._task_info = self.uenv.task_infos[self.task_id - 1]
        # Per-episode state of task-biased play.
        self._rng: np.random.Generator | None = None
        self._goals: np.ndarray | None = None  # (num_cubes, 3) task goal of each cube (after the permutation).
        self._task_active = False
        self._task_moves = 0
        self._p_stack = 0.0

    # ------------------------------------------------------------------------------------------------------------------
    # Task-biased play.

    def _cube_xyzs(self) -> np.ndarray:
        return np.array([self.uenv._data.joint(f'object_joint_{i}').qpos[:3] for i in range(self.uenv._num_cubes)])

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
                u._data.joint(f'object_joint_{i}').qpos[3:] = lie.SO3.from_z_radians(rng.uniform(0, 2 * np.pi)).wxyz
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
                k for k in range(n) if k != i and xy_dist(xyz[k], goals[i]) < 0.05 and xyz[k, 2] > goals[i, 2] - 0.02
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
        if ((xyz[:, 1] <= -0.3) & ((xyz[:, 2] < 0.06) | (xyz[:, 2] > 0.08))).any():  # Too far left, not in drawer.
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


# ----------------------------------------------------------------------------------------------------------------------
# Multiprocessing plumbing.

_COLLECTOR: EpisodeCollector | None = None


def _limit_threads() -> None:
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
        os.environ.setdefault(var, '1')


def _worker_init(*args) -> None:
    """Initializer of a pool worker process (not used when running in-process)."""
    global _COLLECTOR
    _limit_threads()
    warnings.simplefilter('ignore')
    _COLLECTOR = EpisodeCollector(*args)


def _worker_collect(task: tuple[int, int]) -> tuple[tuple[int, int], dict[str, np.ndarray]]:
    assert _COLLECTOR is not None
    return task, _COLLECTOR.collect(*task)


def _atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    tmp = f'{path}.tmp-{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def generate(
    dataset_name: str,
    num_episodes: int,
    out_dir: str,
    *,
    episode_length: int | None = None,
    val_episodes: int | None = None,
    num_workers: int | None = None,
    seed: int = 0,
    noise: float | None = None,
    progress: bool = True,
    task_goal_prob: float = 0.0,
    task_id: int | None = None,
) -> tuple[str, str]:
    """Generate `<out_dir>/<dataset_name>.npz` and `<out_dir>/<dataset_name>-val.npz`.

    Args:
        dataset_name: OGBench play dataset name, e.g. 'cube-double-play-v0' (see `DATASETS`).
        num_episodes: Number of training episodes.
        out_dir: Output directory (created if needed).
        episode_length: Transitions per episode (each episode stores episode_length + 1 rows). Defaults to the
            official length (1000).
        val_episodes: Number of validation episodes; defaults to max(1, num_episodes // 10) like the official script.
        num_workers: Number of worker processes; defaults to os.cpu_count(). 1 runs in the calling process.
        seed: Base seed. Episode i of a split is a deterministic function of (seed, split, i).
        noise: Oracle noise level; defaults to the official 0.1.
        progress: Whether to show a tqdm progress bar over environment steps.
        task_goal_prob: Task-biased play (cube datasets only): probability that a new oracle target is the goal of
            single task `task_id` instead of a random one, and that an episode starts from the task's initial cubes.
            0 (default) gives the plain play data.
        task_id: Single task (1-5) of the biasing; defaults to 2, ogbench's default task.

    Returns:
        (train_path, val_path).
    """
    spec = get_spec(dataset_name)
    episode_length = spec.episode_length if episode_length is None else int(episode_length)
    val_episodes = max(1, num_episodes // 10) if val_episodes is None else int(val_episodes)
    noise = DEFAULT_NOISE if noise is None else float(noise)
    if num_episodes < 1:
        raise ValueError('num_episodes must be >= 1.')
    if val_episodes < 1:
        raise ValueError('val_episodes must be >= 1 (the loader needs a non-empty -val.npz).')
    if episode_length < 1:
        raise ValueError('episode_length must be >= 1.')
    task_goal_prob = float(task_goal_prob)
    if not 0.0 <= task_goal_prob <= 1.0:
        raise ValueError(f'task_goal_prob must be in [0, 1], got {task_goal_prob}.')
    if task_goal_prob > 0 and spec.family != 'cube':
        raise ValueError(f'task_goal_prob > 0 is only supported for cube datasets, not {dataset_name!r}.')
    if task_id is not None and not 1 <= int(task_id) <= 5:
        raise ValueError(f'task_id must be in [1, 5], got {task_id}.')

    tasks = [(_TRAIN_SPLIT, i) for i in range(num_episodes)] + [(_VAL_SPLIT, i) for i in range(val_episodes)]
    num_workers = (os.cpu_count() or 1) if num_workers is None else int(num_workers)
    num_workers = max(1, min(num_workers, len(tasks)))
    rows = episode_length + 1
    splits = {_TRAIN_SPLIT: num_episodes, _VAL_SPLIT: val_episodes}
    buffers: dict[int, dict[str, np.ndarray]] = {}

    def store(task: tuple[int, int], data: dict[str, np.ndarray]) -> None:
        split, idx = task
        if split not in buffers:  # Allocate the whole split once the per-row shapes are known.
            buffers[split] = {
                k: np.empty((splits[split] * rows, *v.shape[1:]), dtype=v.dtype) for k, v in data.items()
            }
        for k, v in data.items():
            buffers[split][k][idx * rows : (idx + 1) * rows] = v

    from tqdm import tqdm

    bar = tqdm(total=len(tasks) * rows, desc=dataset_name, unit='step', disable=not progress, smoothing=0.05)
    args = (dataset_name, episode_length, noise, seed, task_goal_prob, task_id)
    try:
        if num_workers == 1:
            collector = EpisodeCollector(*args)
            for task in tasks:
                store(task, collector.collect(*task))
                bar.update(rows)
        else:
            # 'spawn' keeps workers clean when the parent has JAX (or other threaded libraries) loaded.
            ctx = mp.get_context('spawn')
            with ctx.Pool(num_workers, initializer=_worker_init, initargs=args) as pool:
                for task, data in pool.imap_unordered(_worker_collect, tasks):
                    store(task, data)
                    bar.update(rows)
    finally:
        bar.close()

    os.makedirs(out_dir, exist_ok=True)
    train_path = os.path.join(out_dir, f'{dataset_name}.npz')
    val_path = os.path.join(out_dir, f'{dataset_name}-val.npz')
    # Write the validation file first so that a complete train file implies a complete pair.
    _atomic_savez(val_path, buffers[_VAL_SPLIT])
    _atomic_savez(train_path, buffers[_TRAIN_SPLIT])
    return train_path, val_path


# ----------------------------------------------------------------------------------------------------------------------
# CLI.


def _main(_argv) -> None:
    from absl import flags

    flags_ = flags.FLAGS
    t0 = time.time()
    train_path, val_path = generate(
        flags_.dataset,
        flags_.episodes,
        flags_.out,
        episode_length=flags_.episode_length,
        val_episodes=flags_.val_episodes,
        num_workers=flags_.workers,
        seed=flags_.seed,
        noise=flags_.noise,
        task_goal_prob=flags_.task_goal_prob,
        task_id=flags_.task_id,
    )
    elapsed = time.time() - t0
    num_steps = 0
    for path in (train_path, val_path):
        with np.load(path) as f:
            terminals = f['terminals']
            rows, episodes = len(terminals), int(terminals.sum())
        num_steps += rows
        print(f'{path}: {episodes} episodes, {rows - episodes} transitions ({rows} rows)')
    print(f'Done in {elapsed:.1f}s ({num_steps / elapsed:.0f} env steps/s incl. startup and saving).')


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string('dataset', 'cube-double-play-v0', f'Dataset name, one of: {", ".join(sorted(DATASETS))}.')
    flags.DEFINE_integer('episodes', 1000, 'Number of training episodes.')
    flags.DEFINE_string('out', None, 'Output directory.', required=True)
    flags.DEFINE_integer('episode_length', None, 'Transitions per episode (default: official length).')
    flags.DEFINE_integer('val_episodes', None, 'Validation episodes (default: max(1, episodes // 10)).')
    flags.DEFINE_integer('workers', None, 'Worker processes (default: os.cpu_count()).')
    flags.DEFINE_integer('seed', 0, 'Base random seed.')
    flags.DEFINE_float('noise', None, f'Oracle noise level (default: {DEFAULT_NOISE}).')
    flags.DEFINE_float('task_goal_prob', 0.0, 'Task-biased play (cube only): probability of task-goal targets/starts.')
    flags.DEFINE_integer('task_id', None, f'Single task of the biasing (default: {DEFAULT_TASK_ID}).')


if __name__ == '__main__':
    from absl import app

    _define_flags()
    app.run(_main, argv=sys.argv)
