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


class EpisodeCollector:
    """Owns one environment plus its oracles and rolls out deterministic play episodes."""

    def __init__(self, dataset_name: str, episode_length: int, noise: float, seed: int):
        import gymnasium

        import ogbench.manipspace  # noqa: F401  (registers the environments)
        from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
        from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
        from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

        self.spec = get_spec(dataset_name)
        self.episode_length = int(episode_length)
        self.seed = int(seed)
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

    def _rollout(self, env_seed: int, np_seed: int, p_stack: float) -> dict[str, np.ndarray]:
        n = self.episode_length + 1
        # The oracles draw their keyframe jitter and action noise from the global numpy RNG.
        np.random.seed(np_seed)
        ob, info = self.env.reset(seed=env_seed)
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
                new_ob, new_info = self.uenv.set_new_target(p_stack=p_stack)
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
            data = self._rollout(env_seed, np_seed, lo + (hi - lo) * u)
            if self._is_healthy(data['qpos']):
                return data
        raise RuntimeError(f'Episode {episode_index} failed the health check {_MAX_ATTEMPTS} times.')


# ----------------------------------------------------------------------------------------------------------------------
# Multiprocessing plumbing.

_COLLECTOR: EpisodeCollector | None = None


def _limit_threads() -> None:
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
        os.environ.setdefault(var, '1')


def _worker_init(dataset_name: str, episode_length: int, noise: float, seed: int) -> None:
    """Initializer of a pool worker process (not used when running in-process)."""
    global _COLLECTOR
    _limit_threads()
    warnings.simplefilter('ignore')
    _COLLECTOR = EpisodeCollector(dataset_name, episode_length, noise, seed)


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
    args = (dataset_name, episode_length, noise, seed)
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


if __name__ == '__main__':
    from absl import app

    _define_flags()
    app.run(_main, argv=sys.argv)
