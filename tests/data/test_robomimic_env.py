"""Robomimic environments from dataset metadata on robosuite 1.5.1 (needs the Robomimic extra)."""

import json
import os

import ml_collections
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

pytest.importorskip("robosuite", reason="needs the Robomimic extra: pip install -e .[robomimic]")
import h5py  # noqa: E402  (in the extra)

from dfp_jax.data import robomimic_data, robomimic_env, robomimic_scripted, tasks  # noqa: E402
from dfp_jax.data.ogbench_data import DatasetError  # noqa: E402

OSC_POSE = robomimic_env.OSC_POSE
# What robosuite 1.5.1 (and robomimic's v1.5 files) make of the stored OSC_POSE config for a Panda.
COMPOSITE = {"type": "BASIC", "body_parts": {"right": {**OSC_POSE, "gripper": {"type": "GRIP"}}}}


def _meta(env_name, controller=OSC_POSE, version="1.5.1"):
  return {"env_name": env_name, "env_version": version, "type": 1,
          "env_kwargs": {"robots": ["Panda"], "control_freq": 20, "controller_configs": controller,
                         "has_renderer": False, "use_camera_obs": False, "reward_shaping": False}}


def _rollout(env, seed, steps=15):
  rng = np.random.default_rng(seed)
  obs = [env.reset(seed=seed)[0]]
  for _ in range(steps):
    obs.append(env.step(rng.uniform(-1, 1, 7))[0])
  return np.stack(obs)


@pytest.mark.parametrize("task, obs_dim, obj", [("lift", 19, None), ("can", 23, "Can"),
                                                ("square", 23, "SquareNut")])
def test_env_from_metadata_has_robosuite_15_layout_and_repeats_seeded_episodes(task, obs_dim, obj):
  env = robomimic_env.make_env(_meta(robomimic_data.TASKS[task][0]), task)
  assert env.observation_space.shape == (obs_dim,) and env.action_space.shape == (7,)
  assert env.max_episode_steps == robomimic_data.TASKS[task][1]
  previous = env.reset(seed=1)[0]
  obs, reward, terminated, truncated, info = env.step(np.zeros(7))
  assert obs.shape == (obs_dim,) and reward == -1.0 and not terminated and not truncated
  assert info["success"] == 0.0
  raw = env.raw_observation()
  for k, part in (("robot0_eef_pos", obs[:3]), ("robot0_eef_quat", obs[3:7]),
                  ("robot0_gripper_qpos", obs[7:9])):
    np.testing.assert_allclose(part, raw[k], atol=1e-6)  # float32 of robosuite's float64
  eef, o = obs[:3], obs[9:]
  if task == "lift":  # [cube_pos, cube_quat (xyzw), cube_pos - eef_pos]: 1.4 had eef - cube
    parts = ("cube_pos", "cube_quat", "gripper_to_cube_pos")
    np.testing.assert_allclose(o[7:10], o[:3] - eef, atol=1e-6)
  else:  # [pose in the gripper frame, pos, quat (xyzw)]: 1.4 had the world pose first
    parts = (f"{obj}_to_robot0_eef_pos", f"{obj}_to_robot0_eef_quat", f"{obj}_pos", f"{obj}_quat")
    # robosuite 1.5.1 puts the object position cached at the previous update in the frame of
    # the current gripper (the object, dropped at reset, is still settling).
    in_gripper = Rotation.from_quat(obs[3:7]).inv().apply(previous[16:19] - eef)
    np.testing.assert_allclose(o[:3], in_gripper, atol=1e-5)
  np.testing.assert_allclose(o, np.concatenate([raw[k] for k in parts]), atol=1e-6)
  a, b, c, d = _rollout(env, 3), _rollout(env, 3), _rollout(env, 4), _rollout(env, 3)
  np.testing.assert_array_equal(a, b)  # a seeded (hard) reset repeats the episode...
  np.testing.assert_array_equal(a, d)  # ...whatever episode came before
  assert np.abs(a[0] - c[0]).max() > 1e-3  # other seeds place the objects elsewhere


def test_legacy_controller_config_is_converted_by_robosuite_and_drives_like_the_composite():
  assert robomimic_env.composite_controller_config(OSC_POSE, "Panda") == COMPOSITE
  assert robomimic_env.composite_controller_config(COMPOSITE, "Panda") == COMPOSITE
  legacy = robomimic_env.make_env(_meta("Lift"), "lift")
  new = robomimic_env.make_env(_meta("Lift", COMPOSITE), "lift")
  np.testing.assert_array_equal(_rollout(legacy, 0), _rollout(new, 0))
  slow = {"type": "BASIC", "body_parts": {"right": {**COMPOSITE["body_parts"]["right"], "kp": 30}}}
  other = robomimic_env.make_env(_meta("Lift", slow), "lift")  # the composite's values are used
  assert np.abs(_rollout(other, 0) - _rollout(new, 0)).max() > 1e-3
  with pytest.raises(DatasetError, match="controller config without a type"):
    robomimic_env.composite_controller_config({"kp": 150}, "Panda")


def test_episode_is_cut_at_the_step_limit_and_bad_metadata_is_an_error():
  env = robomimic_env.RobomimicEnv(_meta("Lift"), max_episode_steps=3)
  env.reset(seed=0)
  flags = [env.step(np.zeros(7))[3] for _ in range(3)]
  assert flags == [False, False, True]
  with pytest.raises(DatasetError, match="cannot build robosuite env 'NoSuchEnv'"):
    robomimic_env.RobomimicEnv(_meta("NoSuchEnv"), 10)
  with pytest.raises(DatasetError, match="unknown Robomimic task 'pour'"):
    robomimic_env.make_env(_meta("Lift"), "pour")
  with pytest.raises(DatasetError, match="dataset's env is 'Lift', task 'can' needs 'PickPlaceCan'"):
    robomimic_env.make_env(_meta("Lift"), "can")


def test_resets_do_not_leak_file_descriptors():
  """Hard resets rebuild the MuJoCo model; mujoco 3.1.6 left ~50 mesh files open per build,
  which ended a 28k-step run with 'resource not found'. The pinned mujoco 3.7.0 must not."""
  import mujoco
  assert mujoco.__version__ == "3.7.0"
  env = robomimic_env.make_env(_meta("NutAssemblySquare"), "square")  # the most meshes
  env.reset(seed=0)
  before = len(os.listdir("/proc/self/fd"))
  for seed in range(5):
    env.reset(seed=seed)
  assert len(os.listdir("/proc/self/fd")) - before < 10


# The load-time layout check: a file's first observation against the env's at states[0].

def _config(data_dir, task):
  return ml_collections.ConfigDict({"task": task, "dataset_dir": str(data_dir),
                                    "dataset_filter": None})


def _write(data_dir, task, demo, version="1.5.1", states=True):
  path = robomimic_data.default_path(task, str(data_dir))
  demo = {k: v for k, v in demo.items() if states or k not in ("states", "model_file")}
  robomimic_data.write_dataset(path, [demo], _meta(robomimic_data.TASKS[task][0], COMPOSITE,
                                                   version))
  return path


def _as_robosuite_14(task, demo):
  """The demo with its `object` observation in robosuite 1.4's layout."""
  out = {**demo, "obs": dict(demo["obs"]), "next_obs": dict(demo["next_obs"])}
  for g in ("obs", "next_obs"):
    o = demo[g]["object"]
    if task == "lift":  # eef - cube instead of cube - eef
      out[g]["object"] = np.concatenate([o[:, :7], -o[:, 7:]], -1)
    else:  # world pose first, then the pose in the gripper frame
      out[g]["object"] = np.concatenate([o[:, 7:], o[:, :7]], -1)
  return out


@pytest.fixture(scope="module", params=["lift", "can"])
def short_demo(request):
  """A 5-step scripted demo of lift or can, with its simulator states."""
  task = request.param
  env = robomimic_env.RobomimicEnv(_meta(robomimic_data.TASKS[task][0], COMPOSITE), 5)
  return task, robomimic_scripted.rollout(env, task, seed=7)


def test_observe_state_reproduces_the_first_observation(short_demo):
  task, demo = short_demo
  env = robomimic_env.make_env(_meta(robomimic_data.TASKS[task][0], COMPOSITE), task)
  first = np.concatenate([demo["obs"][k][0] for k in robomimic_data.OBS_KEYS])
  obs, determined = env.observe_state(demo["states"][0])
  np.testing.assert_allclose(obs[determined], first[determined], atol=1e-6)
  # Only can's object-to-gripper pose depends on robosuite's cache (zeros right after a reset).
  expected = np.ones_like(determined)
  if task == "can":
    expected[9:16] = False
    np.testing.assert_array_equal(first[9:16], 0.0)
  np.testing.assert_array_equal(determined, expected)
  with pytest.raises(DatasetError, match="stored simulator state has shape"):
    env.observe_state(demo["states"][0][:-1])


def test_a_file_in_another_layout_is_a_one_line_error_at_load(short_demo, tmp_path):
  task, demo = short_demo
  good = _write(tmp_path / "good", task, demo)
  env, data, _ = tasks.load_task(_config(tmp_path / "good", task))
  assert len(data["observations"]) == 5
  env.reset(seed=0)  # the env steps normally after the check
  assert env.step(np.zeros(7))[0].shape == env.observation_space.shape
  # A robosuite 1.4 file (lift: opposite gripper-to-cube sign; can: world pose first).
  old = _write(tmp_path / "old", task, _as_robosuite_14(task, demo), version="1.4.1")
  with pytest.raises(DatasetError) as e:
    tasks.load_task(_config(tmp_path / "old", task))
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith(old)
  assert "needs robosuite 1.4.1 (its env_version)" in msg and "object[" in msg
  # The same wrong layout in a file that says 1.5.1.
  _write(tmp_path / "claims", task, _as_robosuite_14(task, demo))
  with pytest.raises(DatasetError, match=r"says robosuite 1\.5\.1 .* observation layout is not"):
    tasks.load_task(_config(tmp_path / "claims", task))
  # Without stored states there is nothing to reset to, and the check is skipped.
  _write(tmp_path / "stateless", task, _as_robosuite_14(task, demo), version="1.4.1",
         states=False)
  tasks.load_task(_config(tmp_path / "stateless", task))
  with h5py.File(good, "r") as f:
    assert json.loads(f["data"].attrs["env_args"])["env_version"] == "1.5.1"
