"""Robomimic hdf5: write, read back, and the transitions the replay buffer gets."""

import json

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="needs the Robomimic extra: pip install -e .[robomimic]")

from dfp_jax.data import robomimic_data  # noqa: E402
from dfp_jax.data.ogbench_data import DatasetError  # noqa: E402

DIMS = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object": 10}
ENV_META = {"env_name": "Lift", "type": 1,
            "env_kwargs": {"robots": ["Panda"], "controller_configs": {"type": "OSC_POSE"}}}


def _demo(rng, length, success_at=None, last_done=1):
  """A random demo; robomimic marks success (reward 1, done 1 with done_mode 2) on every step
  from `success_at` on, and done at the last step (`last_done=0`: done_mode 0, no success)."""
  obs = {k: rng.standard_normal((length + 1, d)).astype(np.float32) for k, d in DIMS.items()}
  rewards = np.zeros(length, np.float32)
  dones = np.zeros(length, np.int64)
  if success_at is not None:
    rewards[success_at:] = 1.0
    dones[success_at:] = 1
  dones[-1] = max(dones[-1], last_done)
  return {"obs": {k: v[:-1] for k, v in obs.items()},
          "next_obs": {k: v[1:] for k, v in obs.items()},
          "actions": rng.uniform(-1, 1, (length, 7)).astype(np.float32),
          "rewards": rewards, "dones": dones,
          "states": rng.standard_normal((length, 32)), "model_file": f"<mujoco>{length}</mujoco>"}


def test_round_trip_keeps_every_array_and_builds_the_low_dim_observation(tmp_path):
  rng = np.random.default_rng(0)
  demos = [_demo(rng, 12, success_at=9), _demo(rng, 7, success_at=6), _demo(rng, 5, last_done=0)]
  demos[0]["actions"][0, :3] = [1.0, -1.0, 1.5]  # robomimic's actions reach the limits
  path = str(tmp_path / "low_dim_v15.hdf5")
  robomimic_data.write_dataset(path, demos, ENV_META, masks={"train": [0, 2], "valid": [1]})

  # The file is in robomimic's layout, with the same arrays.
  with h5py.File(path, "r") as f:
    assert json.loads(f["data"].attrs["env_args"]) == ENV_META
    assert f["data"].attrs["total"] == 24
    for i, demo in enumerate(demos):
      for group in ("obs", "next_obs"):
        for k, v in demo[group].items():
          np.testing.assert_array_equal(f[f"data/demo_{i}/{group}/{k}"][()], v)
      for k in ("actions", "rewards", "dones", "states"):
        np.testing.assert_array_equal(f[f"data/demo_{i}/{k}"][()], demo[k])
      assert f[f"data/demo_{i}"].attrs["model_file"] == demo["model_file"]
    assert list(f["mask/valid"][()]) == [b"demo_1"]

  data = robomimic_data.load_dataset(path)
  assert data["env_meta"] == ENV_META
  # Whole demos: 12 + 7 + 5 transitions, in order.
  assert data["observations"].shape == (24, 19) and data["actions"].shape == (24, 7)
  first = np.concatenate([demos[0]["obs"][k] for k in robomimic_data.OBS_KEYS], -1)
  np.testing.assert_array_equal(data["observations"][:12], first)
  np.testing.assert_array_equal(data["next_observations"][12:19], np.concatenate(
      [demos[1]["next_obs"][k] for k in robomimic_data.OBS_KEYS], -1))
  # Actions clipped to +-(1 - 1e-5); the rest unchanged.
  limit = np.float32(1 - 1e-5)
  np.testing.assert_array_equal(data["actions"][0, :3], [limit, -limit, limit])
  np.testing.assert_array_equal(data["actions"][1:12], demos[0]["actions"][1:])
  assert np.abs(data["actions"]).max() < 1.0
  # Reward shifted by -1: 0 at every success step (9, 10, 11 and 18), -1 elsewhere.
  success = np.zeros(24, bool)
  success[[9, 10, 11, 18]] = True
  np.testing.assert_array_equal(data["rewards"], success - 1.0)
  # masks = 1 - dones: bootstrapping stops at the success steps and at the failed demo's end
  # only if its dones says so (done_mode 0 leaves it 0 there).
  np.testing.assert_array_equal(data["masks"], 1.0 - success)
  # terminals = dones, plus each demo's last step: the third demo ends although its dones is 0.
  assert list(np.flatnonzero(data["terminals"])) == [9, 10, 11, 18, 23]

  # A split reads only its demos.
  valid = robomimic_data.load_dataset(path, filter_key="valid")
  assert len(valid["observations"]) == 7 and valid["rewards"][-1] == 0.0

  # The layout check's input: demo_0's first state and observation.
  state, obs, meta, name = robomimic_data.read_first_step(path)
  np.testing.assert_array_equal(state, demos[0]["states"][0])
  np.testing.assert_array_equal(obs, first[0])
  assert meta == ENV_META and name == "demo_0"
  del demos[0]["states"]
  robomimic_data.write_dataset(path, demos, ENV_META)
  assert robomimic_data.read_first_step(path) is None  # nothing to check against


def test_bad_files_are_dataset_errors(tmp_path):
  with pytest.raises(DatasetError, match="not found"):
    robomimic_data.load_dataset(str(tmp_path / "missing.hdf5"))
  junk = tmp_path / "junk.hdf5"
  junk.write_bytes(b"not hdf5 at all")
  with pytest.raises(DatasetError, match="cannot be read as hdf5"):
    robomimic_data.load_dataset(str(junk))
  rng = np.random.default_rng(1)
  demo = _demo(rng, 4)
  del demo["obs"]["object"]
  path = str(tmp_path / "partial.hdf5")
  robomimic_data.write_dataset(path, [demo], ENV_META)
  with pytest.raises(DatasetError, match="demo_0 lacks obs/object"):
    robomimic_data.load_dataset(path)
  robomimic_data.write_dataset(path, [_demo(rng, 4)], ENV_META, masks={"train": [0]})
  with pytest.raises(DatasetError, match=r"no split mask/valid \(has \['train'\]\)"):
    robomimic_data.load_dataset(path, filter_key="valid")
