"""Robomimic hdf5: write, read back, and the transitions the replay buffer gets."""

import json

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="needs the Robomimic extra: pip install -e .[robomimic]")

from dfp_jax import robomimic_data  # noqa: E402
from dfp_jax.ogbench_data import DatasetError  # noqa: E402

DIMS = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object": 10}
ENV_META = {"env_name": "Lift", "type": 1,
            "env_kwargs": {"robots": ["Panda"], "controller_configs": {"type": "OSC_POSE"}}}


def _demo(rng, length, success_at=None):
  obs = {k: rng.standard_normal((length + 1, d)).astype(np.float32) for k, d in DIMS.items()}
  rewards = np.zeros(length, np.float32)
  if success_at is not None:
    rewards[success_at:] = 1.0  # robomimic marks success on every step after it too
  dones = np.zeros(length, np.int64)
  dones[-1] = 1
  return {"obs": {k: v[:-1] for k, v in obs.items()}, "next_obs": {k: v[1:] for k, v in obs.items()},
          "actions": rng.uniform(-1, 1, (length, 7)).astype(np.float32),
          "rewards": rewards, "dones": dones}


def test_round_trip_keeps_every_array_and_builds_the_low_dim_observation(tmp_path):
  rng = np.random.default_rng(0)
  demos = [_demo(rng, 12, success_at=9), _demo(rng, 7, success_at=6), _demo(rng, 5)]
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
      np.testing.assert_array_equal(f[f"data/demo_{i}/actions"][()], demo["actions"])
    assert list(f["mask/valid"][()]) == [b"demo_1"]

  data = robomimic_data.load_dataset(path)
  assert data["env_meta"] == ENV_META
  # Demos are cut after their first success: 10 + 7 + 5 transitions (the last never succeeds).
  assert data["observations"].shape == (22, 19) and data["actions"].shape == (22, 7)
  first = np.concatenate([demos[0]["obs"][k][:10] for k in robomimic_data.OBS_KEYS], -1)
  np.testing.assert_array_equal(data["observations"][:10], first)
  np.testing.assert_array_equal(data["next_observations"][10:17], np.concatenate(
      [demos[1]["next_obs"][k] for k in robomimic_data.OBS_KEYS], -1))
  # Reward shifted by -1: 0 at success (where bootstrapping stops), -1 before.
  expected = -np.ones(22, np.float32)
  expected[[9, 16]] = 0.0
  np.testing.assert_array_equal(data["rewards"], expected)
  np.testing.assert_array_equal(data["masks"], -expected)
  assert list(np.flatnonzero(data["terminals"])) == [9, 16, 21]

  # A split reads only its demos.
  valid = robomimic_data.load_dataset(path, filter_key="valid")
  assert len(valid["observations"]) == 7 and valid["rewards"][-1] == 0.0


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
