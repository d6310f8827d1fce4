"""Robomimic environments from dataset metadata (needs the Robomimic extra)."""

import numpy as np
import pytest

pytest.importorskip("robosuite", reason="needs the Robomimic extra: pip install -e .[robomimic]")

from dfp_jax import robomimic_data, robomimic_env  # noqa: E402
from dfp_jax.ogbench_data import DatasetError  # noqa: E402

OSC_POSE = robomimic_env.OSC_POSE


def _meta(env_name, controller=OSC_POSE):
  return {"env_name": env_name, "type": 1,
          "env_kwargs": {"robots": ["Panda"], "control_freq": 20, "controller_configs": controller,
                         "has_renderer": False, "use_camera_obs": False, "reward_shaping": False}}


def _rollout(env, seed, steps=15):
  rng = np.random.default_rng(seed)
  obs = [env.reset(seed=seed)[0]]
  for _ in range(steps):
    obs.append(env.step(rng.uniform(-1, 1, 7))[0])
  return np.stack(obs)


@pytest.mark.parametrize("task, obs_dim", [("lift", 19), ("can", 23), ("square", 23)])
def test_env_from_metadata_steps_with_shifted_reward_and_repeats_seeded_episodes(task, obs_dim):
  env = robomimic_env.make_env(_meta(robomimic_data.TASKS[task][0]), task)
  assert env.observation_space.shape == (obs_dim,) and env.action_space.shape == (7,)
  assert env.max_episode_steps == robomimic_data.TASKS[task][1]
  obs, reward, terminated, truncated, info = env.step(np.zeros(7))
  assert obs.shape == (obs_dim,) and reward == -1.0 and not terminated and not truncated
  assert info["success"] == 0.0
  a, b, c, d = _rollout(env, 3), _rollout(env, 3), _rollout(env, 4), _rollout(env, 3)
  np.testing.assert_array_equal(a, b)  # a seeded (soft) reset repeats the episode...
  np.testing.assert_array_equal(a, d)  # ...whatever episode came before
  assert np.abs(a[0] - c[0]).max() > 1e-3  # other seeds place the objects elsewhere


def test_composite_controller_config_drives_the_env_like_the_legacy_one():
  composite = {"type": "BASIC", "body_parts": {"right": {**OSC_POSE, "gripper": {"type": "GRIP"}}}}
  legacy = robomimic_env.make_env(_meta("Lift"), "lift")
  new = robomimic_env.make_env(_meta("Lift", composite), "lift")
  np.testing.assert_array_equal(_rollout(legacy, 0), _rollout(new, 0))


def test_episode_is_cut_at_the_step_limit_and_bad_metadata_is_an_error():
  env = robomimic_env.RobomimicEnv(_meta("Lift"), max_episode_steps=3)
  env.reset(seed=0)
  flags = [env.step(np.zeros(7))[3] for _ in range(3)]
  assert flags == [False, False, True]
  with pytest.raises(DatasetError, match="cannot build robosuite env 'NoSuchEnv'"):
    robomimic_env.RobomimicEnv(_meta("NoSuchEnv"), 10)
  with pytest.raises(DatasetError, match="unknown Robomimic task 'pour'"):
    robomimic_env.make_env(_meta("Lift"), "pour")


def test_resets_do_not_leak_file_descriptors():
  """Hard resets rebuild the MuJoCo model; mujoco 3.1.6 left ~50 mesh files open per build,
  which ended a 28k-step run with 'resource not found' (hence the extra's mujoco pin)."""
  import os
  env = robomimic_env.make_env(_meta("Lift"), "lift")
  env.reset(seed=0)
  before = len(os.listdir("/proc/self/fd"))
  for seed in range(5):
    env.reset(seed=seed)
  assert len(os.listdir("/proc/self/fd")) - before < 10
