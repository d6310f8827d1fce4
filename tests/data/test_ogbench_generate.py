"""Tests for dfp_jax/data/ogbench_generate.py and ogbench_play.py (local OGBench play data)."""

import os
import sys

import numpy as np
import pytest

# Make the repository root importable when pytest is run without `python -m`.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

ogbench = pytest.importorskip('ogbench')

from dfp_jax.data import ogbench_generate as gen  # noqa: E402

EP_LEN = 60  # Transitions per episode; each episode stores EP_LEN + 1 rows.
N_TRAIN = 2
N_VAL = 1


@pytest.fixture(scope='module')
def cube_double(tmp_path_factory):
    out = tmp_path_factory.mktemp('cube_double')
    paths = gen.generate(
        'cube-double-play-v0', N_TRAIN, str(out), episode_length=EP_LEN, val_episodes=N_VAL, num_workers=1,
        seed=3, progress=False,
    )
    return out, paths


def test_files_and_raw_layout(cube_double):
    out, (train_path, val_path) = cube_double
    assert train_path == os.path.join(str(out), 'cube-double-play-v0.npz')
    assert val_path == os.path.join(str(out), 'cube-double-play-v0-val.npz')
    # No temporary files are left behind.
    assert sorted(os.listdir(out)) == ['cube-double-play-v0-val.npz', 'cube-double-play-v0.npz']

    env = ogbench.make_env_and_datasets('cube-double-play-v0', env_only=True)
    ob_dim = env.observation_space.shape[0]
    act_dim = env.action_space.shape[0]
    model = env.unwrapped
    env.reset()
    nq, nv = model._model.nq, model._model.nv

    for path, n_eps in [(train_path, N_TRAIN), (val_path, N_VAL)]:
        with np.load(path) as f:
            assert set(f.files) == {'observations', 'actions', 'terminals', 'qpos', 'qvel'}
            rows = n_eps * (EP_LEN + 1)
            assert f['observations'].shape == (rows, ob_dim) and f['observations'].dtype == np.float32
            assert f['actions'].shape == (rows, act_dim) and f['actions'].dtype == np.float32
            assert f['terminals'].shape == (rows,) and f['terminals'].dtype == np.float32
            assert f['qpos'].shape == (rows, nq) and f['qvel'].shape == (rows, nv)
            # Terminals are exactly the last row of each episode.
            expected = np.zeros(rows, np.float32)
            expected[EP_LEN :: EP_LEN + 1] = 1.0
            np.testing.assert_array_equal(f['terminals'], expected)
            assert np.all(np.isfinite(f['observations'])) and np.all(np.isfinite(f['qpos']))
            assert np.all(np.abs(f['actions']) <= 1.0)
            # Actions are not trivially zero / saturated: the oracle really acts.
            assert np.abs(f['actions']).mean() > 0.01
            assert (np.abs(f['actions']) < 1.0).mean() > 0.5


def test_ogbench_load_dataset(cube_double):
    _, (train_path, _) = cube_double
    ds = ogbench.utils.load_dataset(train_path, add_info=True)
    n = N_TRAIN * EP_LEN  # The loader drops the last row of each episode.
    for k in ['observations', 'next_observations', 'actions', 'terminals', 'qpos', 'qvel']:
        assert ds[k].shape[0] == n, k
    # Transitions are consecutive states: next_observations[t] == observations[t + 1] inside an episode.
    np.testing.assert_array_equal(ds['next_observations'][: EP_LEN - 1], ds['observations'][1:EP_LEN])
    assert ds['terminals'].sum() == N_TRAIN
    assert ds['terminals'][EP_LEN - 1] == 1.0 and ds['terminals'][-1] == 1.0

    # The recorded qpos/qvel are the simulator state of the recorded observation: restoring them reproduces the
    # observation. (Effector pose, indices 12:17, and gripper contact, index 18, are excluded: after mj_step MuJoCo's
    # site poses/contact forces lag one physics substep behind qpos, so they are not a pure function of qpos.)
    env = ogbench.make_env_and_datasets('cube-double-play-v0', env_only=True)
    env.reset(seed=0)
    keep = np.setdiff1d(np.arange(ds['observations'].shape[1]), [12, 13, 14, 15, 16, 18])
    for t in [5, 40]:
        env.unwrapped.set_state(ds['qpos'][t].astype(np.float64), ds['qvel'][t].astype(np.float64))
        ob = env.unwrapped.compute_observation()
        np.testing.assert_allclose(ob[keep], ds['observations'][t][keep], atol=1e-4)
        # ...and it is not the observation of a neighbouring step (no off-by-one between ob and qpos).
        assert not np.allclose(ob[keep], ds['observations'][t + 1][keep], atol=1e-4)


def test_make_env_and_datasets_singletask(cube_double):
    _, (train_path, _) = cube_double
    env, train, val = ogbench.make_env_and_datasets('cube-double-play-singletask-task2-v0', dataset_path=train_path)
    assert train['observations'].shape == (N_TRAIN * EP_LEN, *env.observation_space.shape)
    assert val['observations'].shape == (N_VAL * EP_LEN, *env.observation_space.shape)
    assert train['actions'].shape[1:] == env.action_space.shape
    # Singletask relabelling: reward = (#cubes at their goal) - (#cubes), so in {-2, -1, 0} for cube-double.
    assert set(np.unique(train['rewards'])).issubset({-2.0, -1.0, 0.0})
    assert train['masks'].shape == train['rewards'].shape
    assert 'qpos' not in train  # add_info=False removes the info keys again.


def test_oracle_moves_cubes(cube_double):
    _, (train_path, _) = cube_double
    with np.load(train_path) as f:
        qpos = f['qpos']
    rows = EP_LEN + 1
    moved = []
    for ep in range(N_TRAIN):
        q = qpos[ep * rows : (ep + 1) * rows]
        cubes = np.stack([q[:, 14 + 7 * i : 17 + 7 * i] for i in range(2)], axis=1)  # (T, 2, 3) cube xyz
        moved.append(np.linalg.norm(cubes[-1] - cubes[0], axis=-1).max())
        # Cubes start on the table.
        assert np.all(np.abs(cubes[0, :, 2] - 0.02) < 0.01)
    # Within 60 steps the oracle picks a cube up and carries it somewhere else (several cm).
    assert max(moved) > 0.03, moved
    # The episodes differ from each other (different seeds per episode).
    assert not np.allclose(qpos[:rows], qpos[rows : 2 * rows])


def test_worker_count_invariance(tmp_path, cube_double):
    _, (train1, val1) = cube_double
    train2, val2 = gen.generate(
        'cube-double-play-v0', N_TRAIN, str(tmp_path), episode_length=EP_LEN, val_episodes=N_VAL, num_workers=2,
        seed=3, progress=False,
    )
    for a, b in [(train1, train2), (val1, val2)]:
        with np.load(a) as fa, np.load(b) as fb:
            assert fa.files == fb.files
            for k in fa.files:
                np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def test_seed_changes_data_and_prefix_stability(tmp_path, cube_double):
    _, (train1, _) = cube_double
    # A different seed gives different data.
    other, _ = gen.generate(
        'cube-double-play-v0', 1, str(tmp_path / 'a'), episode_length=EP_LEN, val_episodes=1, num_workers=1, seed=4,
        progress=False,
    )
    # The same seed with fewer episodes reproduces the first episode exactly.
    prefix, _ = gen.generate(
        'cube-double-play-v0', 1, str(tmp_path / 'b'), episode_length=EP_LEN, val_episodes=1, num_workers=1, seed=3,
        progress=False,
    )
    with np.load(train1) as f1, np.load(other) as fo, np.load(prefix) as fp:
        assert not np.array_equal(f1['qpos'][: EP_LEN + 1], fo['qpos'])
        for k in f1.files:
            np.testing.assert_array_equal(f1[k][: EP_LEN + 1], fp[k], err_msg=k)


def test_cube_single_singletask(tmp_path):
    train, val = gen.generate(
        'cube-single-play-v0', 1, str(tmp_path), episode_length=40, num_workers=1, seed=0, progress=False
    )
    assert os.path.exists(val)
    env, tr, va = ogbench.make_env_and_datasets('cube-single-play-singletask-task1-v0', dataset_path=train)
    assert tr['observations'].shape == (40, *env.observation_space.shape)
    assert va['observations'].shape == (40, *env.observation_space.shape)  # default val_episodes = max(1, n // 10)
    assert set(np.unique(tr['rewards'])).issubset({-1.0, 0.0})


def test_unknown_dataset_rejected(tmp_path):
    with pytest.raises(ValueError, match='cube-double-play-v0'):
        gen.generate('cube-sextuple-play-v0', 1, str(tmp_path))
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------------------------------------------------
# Task-biased play.

BIAS_LEN = 180  # Long enough for one pick-and-place (about 100-150 steps).


def _task2_rewards(train_path):
    env, tr, _ = ogbench.make_env_and_datasets('cube-single-play-singletask-task2-v0', dataset_path=train_path)
    return tr['rewards'], tr['terminals']


@pytest.mark.slow
def test_task_goal_prob_solves_task(tmp_path):
    kw = dict(episode_length=BIAS_LEN, val_episodes=1, seed=0, progress=False)
    biased, _ = gen.generate('cube-single-play-v0', 2, str(tmp_path / 'b'), num_workers=1, task_goal_prob=1.0, **kw)
    rewards, terminals = _task2_rewards(biased)
    episodes = np.split(rewards, np.flatnonzero(terminals)[:-1] + 1)
    # Every episode starts from the task's initial configuration (not solved) and then solves task 2.
    assert len(episodes) == 2
    for ep in episodes:
        assert ep[0] == -1.0 and (ep == 0.0).any(), ep
    # The task's initial cube configuration (task 2: cube at (0.35, 0, 0.02), +-1 cm) is used.
    with np.load(biased) as f:
        cube0 = f['qpos'][0, 14:17]
    np.testing.assert_allclose(cube0, [0.35, 0.0, 0.02], atol=0.012)
    # Worker-count invariance holds with biasing as well.
    biased2, _ = gen.generate('cube-single-play-v0', 2, str(tmp_path / 'c'), num_workers=2, task_goal_prob=1.0, **kw)
    with np.load(biased) as fa, np.load(biased2) as fb:
        for k in fa.files:
            np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def test_task_goal_prob_zero_is_default(tmp_path):
    kw = dict(episode_length=BIAS_LEN, val_episodes=1, num_workers=1, seed=0, progress=False)
    default = gen.generate('cube-single-play-v0', 1, str(tmp_path / 'a'), **kw)
    zero = gen.generate('cube-single-play-v0', 1, str(tmp_path / 'b'), task_goal_prob=0.0, task_id=4, **kw)
    for a, b in zip(default, zero):
        with open(a, 'rb') as fa, open(b, 'rb') as fb:
            assert fa.read() == fb.read()
    # The plain play episode does not start at the task-2 goal.
    rewards, _ = _task2_rewards(default[0])
    assert rewards[0] == -1.0


def test_task_goal_prob_validation(tmp_path):
    with pytest.raises(ValueError, match='cube'):
        gen.generate('scene-play-v0', 1, str(tmp_path), task_goal_prob=0.5)
    with pytest.raises(ValueError, match='task_goal_prob'):
        gen.generate('cube-single-play-v0', 1, str(tmp_path), task_goal_prob=1.5)
    with pytest.raises(ValueError, match='task_id'):
        gen.generate('cube-single-play-v0', 1, str(tmp_path), task_goal_prob=0.5, task_id=6)
    assert not os.listdir(tmp_path)
