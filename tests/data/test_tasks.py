"""Task names route to OGBench or Robomimic; the Robomimic presets carry the paper's values."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from ml_collections import ConfigDict

from dfp_jax import agents
from dfp_jax.data import tasks
from dfp_jax.data.ogbench_data import DatasetError
from experiments.configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_task_names_route_to_their_benchmark():
  assert [tasks.is_robomimic(t) for t in ("lift", "can", "square")] == [True] * 3
  assert not tasks.is_robomimic("cube-double-play-singletask-task2-v0")
  tasks.check_task("square")
  tasks.check_task("cube-quadruple-play-100m-singletask-task3-v0")
  with pytest.raises(DatasetError, match="neither an OGBench single-task name.*lift, can, square"):
    tasks.check_task("stack")
  env = ConfigDict({"task": "can", "dataset_dir": "/data/rm", "dataset_filter": None})
  assert tasks.robomimic_path(env) == "/data/rm/can/mh/low_dim_v15.hdf5"
  assert tasks.count_shards(env) == 1


def test_missing_robomimic_dataset_names_both_ways_to_get_it(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no download attempt, network or not
  env = ConfigDict({"task": "lift", "dataset_dir": str(tmp_path), "dataset_filter": None,
                    "success_timing": "post"})
  for fn in (tasks.make_env, tasks.load_task):
    with pytest.raises(DatasetError) as e:
      fn(env)
    text = str(e.value)
    assert f"{tmp_path}/lift/mh/low_dim_v15.hdf5 not found" in text
    assert "download_datasets.py --tasks lift" in text
    assert (f"python -m experiments.generate_robomimic --task=lift --episodes=200 "
            f"--out={tmp_path}/lift/mh/low_dim_v15.hdf5") in text


@pytest.mark.parametrize("preset", common.ROBOMIMIC_TASKS + tuple(common.QUICK_ROBOMIMIC))
def test_robomimic_presets_use_the_papers_robomimic_values_for_every_method(preset):
  task = preset.removeprefix("quick-")
  for method in agents.METHODS:
    c = __import__(f"experiments.configs.{method}", fromlist=["get_config"]).get_config(preset)
    assert c.env.task == task and c.method == method
    # N' = 4 for the methods that act best-of-N (FQL acts with one sample).
    assert c.agent.num_act_samples == (1 if "fql" in method else 4), method
    assert c.agent.num_target_samples <= 4
    if "top_k" in c.agent:
      assert c.agent.top_k == 2, method
    quick = preset.startswith("quick-")
    if method in ("dfp", "dfp_no_topk"):  # Table 5's set, also at the quick size
      assert tuple(c.agent.temperatures) == (0.005, 0.05)
    assert c.env.generate_episodes == (common.QUICK_ROBOMIMIC[preset] if quick else 0)
    assert c.env.dataset_dir == ("~/.cache/dfp_jax/robomimic-scripted" if quick
                                 else "~/.robomimic")
    assert c.train.offline_steps == (20_000 if quick else 1_000_000)
    assert c.agent.actor_hidden == ((256, 256) if quick else (512,) * 4)


def test_paper_group_holds_the_twelve_tasks():
  assert len(common.TASK_GROUPS["paper"]) == 12
  assert common.TASK_GROUPS["robomimic"] == ["lift", "can", "square"]


def test_train_cli_names_the_generator_for_a_missing_robomimic_dataset(tmp_path):
  res = subprocess.run([sys.executable, "-m", "experiments.train",
                        "--config=experiments/configs/dfp.py:lift", f"--workdir={tmp_path / 'run'}",
                        f"--config.env.dataset_dir={tmp_path / 'data'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"))
  assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
  assert "error: robomimic dataset" in res.stderr
  assert "python -m experiments.generate_robomimic --task=lift" in res.stderr


def test_missing_robomimic_file_is_fetched_from_the_hub_into_the_dataset_layout(tmp_path,
                                                                                monkeypatch):
  """Where the hub answers, the file lands at <dataset_dir>/<task>/mh/low_dim_v15.hdf5."""
  import socket
  import huggingface_hub
  calls = []

  def fake_download(repo_id, filename, repo_type, local_dir, **kwargs):
    calls.append((repo_id, filename, repo_type))
    path = os.path.join(local_dir, filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write("hdf5 bytes")
    return path

  monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
  monkeypatch.setattr(socket, "create_connection", lambda *a, **k: types.SimpleNamespace(
      close=lambda: None))
  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  env = ConfigDict({"task": "square", "dataset_dir": str(tmp_path), "dataset_filter": None})
  assert tasks.robomimic_file(env) == f"{tmp_path}/square/mh/low_dim_v15.hdf5"
  assert calls == [("robomimic/robomimic_datasets", "v1.5/square/mh/low_dim_v15.hdf5", "dataset")]
  assert open(f"{tmp_path}/square/mh/low_dim_v15.hdf5").read() == "hdf5 bytes"
  assert os.listdir(tmp_path / "square" / "mh") == ["low_dim_v15.hdf5"]  # staging removed


def test_unreachable_hub_gives_the_missing_file_message(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  env = ConfigDict({"task": "can", "dataset_dir": str(tmp_path), "dataset_filter": None,
                    "success_timing": "post"})
  with pytest.raises(DatasetError) as e:
    tasks.load_task(env)
  text = str(e.value)
  assert "could not be downloaded from the Hugging Face hub (cannot reach 127.0.0.1:9" in text
  assert "robomimic/robomimic_datasets: v1.5/can/mh/low_dim_v15.hdf5" in text
  assert f"--task=can --episodes=200 --out={tmp_path}/can/mh/low_dim_v15.hdf5" in text
  assert not os.path.exists(tmp_path / "can")  # nothing left behind


def test_a_synthetic_task_has_the_real_sizes_and_episode_length_and_no_simulator():
  env_config = ConfigDict({"task": "synthetic-cube-double", "dataset_dir": "/nonexistent"})
  tasks.check_task(env_config.task)
  assert tasks.count_shards(env_config) == 1
  env, data, val = tasks.load_task(env_config)
  assert val is None
  assert env.observation_space.shape == (37,) and env.action_space.shape == (5,)
  from dfp_jax.data.ogbench_data import check_dataset
  check_dataset(data, 37, 5, "synthetic")
  assert len(data["observations"]) == 100 * 500 and data["terminals"].sum() == 100
  first, _ = env.reset(seed=3)
  again, _ = tasks.make_env(env_config).reset(seed=3)
  assert (first == again).all()  # seeded like a real environment
  for t in range(1, 501):
    _, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert reward == -1.0 and not terminated and info["success"] == 0.0
    assert truncated == (t == 500)
  with pytest.raises(DatasetError, match="unknown synthetic task 'synthetic-nope'"):
    tasks.check_task("synthetic-nope")


def test_sparse_reward_applies_to_the_offline_data_the_online_steps_and_evaluation(tmp_path):
  """env.sparse_reward: -1 until success, 0 at it (Q-chunking's --sparse), on cube-double,
  whose native reward is minus the number of unsolved cubes (-2, -1, 0)."""
  import ml_collections
  from dfp_jax.data import ogbench_generate
  from dfp_jax.train import loop
  from dfp_jax.train.metrics import read_csv
  from experiments.configs import dfp as dfp_configs
  np.testing.assert_array_equal(tasks.sparse_rewards([0.0, -1.0, -2.0, 0.0, -3.0, 1.0]),
                                [0, -1, -1, 0, -1, -1])
  data_dir = tmp_path / "data"
  ogbench_generate.generate("cube-double-play-v0", 2, str(data_dir), episode_length=60,
                            val_episodes=1, num_workers=1, progress=False)
  config = dfp_configs.get_config("smoke")
  config.env.task = "cube-double-play-singletask-task2-v0"
  config.env.dataset_dir, config.env.generate_episodes = str(data_dir), 0
  dense = tasks.load_task(ml_collections.ConfigDict(config.env))
  config.env.sparse_reward = True
  sparse = tasks.load_task(config.env)
  for d, s in zip(dense[1:], sparse[1:]):  # the train and validation data
    assert np.any(d["rewards"] == -2)
    np.testing.assert_array_equal(s["rewards"], -(d["rewards"] != 0).astype(np.float32))
  # The environment (both phases' and evaluation's: all made by tasks.make_env) on the same
  # seeded episode with the same actions.
  for env in (sparse[0], tasks.make_env(config.env)):
    dense_env = dense[0]
    dense_env.reset(seed=3), env.reset(seed=3)
    actions = np.random.default_rng(0).uniform(-1, 1, (30, env.action_space.shape[0]))
    raw = [dense_env.step(a)[1] for a in actions]
    got = [env.step(a)[1] for a in actions]
    assert -2 in raw
    np.testing.assert_array_equal(got, tasks.sparse_rewards(raw))
    assert isinstance(env, tasks.SparseReward) and env.spec.id == dense_env.spec.id
  # A short run: evaluation returns count -1 per step until success.
  config.train.offline_steps, config.train.online_steps, config.train.start_training = 10, 10, 5
  config.train.eval_interval, config.train.log_interval, config.train.checkpoint_interval = 10, 5, 0
  config.train.tensorboard, config.train.env_workers = False, 0
  loop.train_and_evaluate(config, str(tmp_path / "run"), seeds=[0])
  evals = read_csv(str(tmp_path / "run" / "seed_0" / "eval.csv"))
  assert np.all(evals["return"] >= -evals["length"]) and np.all(evals["return"] <= 0)
  assert json.loads((tmp_path / "run" / "seed_0" / "config.json").read_text())["env"]["sparse_reward"]


def test_dataset_noise_perturbs_the_training_data_consistently_and_reproducibly(
    tiny_cube_single):
  """env.dataset_action_noise / env.dataset_obs_noise: seeded Gaussian noise on the offline
  training data; a state's observation noise is the same where it is the next observation."""
  import ml_collections
  from experiments.configs import dfp as dfp_configs
  config = dfp_configs.get_config("smoke")
  config.env.dataset_dir, config.env.generate_episodes = tiny_cube_single, 0
  _, clean, clean_val = tasks.load_task(ml_collections.ConfigDict(config.env))
  config.env.dataset_action_noise, config.env.dataset_obs_noise = 0.3, 0.1
  env, noisy, noisy_val = tasks.load_task(config.env)
  again = tasks.load_task(config.env)[1]
  for k in clean:
    np.testing.assert_array_equal(noisy[k], again[k], err_msg=k)  # the same draw each time
  for k in ("rewards", "masks", "terminals"):
    np.testing.assert_array_equal(noisy[k], clean[k], err_msg=k)
  np.testing.assert_array_equal(noisy_val["actions"], clean_val["actions"])  # measures only
  low, high = env.action_space.low, env.action_space.high
  act = noisy["actions"] - clean["actions"]
  assert np.all(noisy["actions"] >= low) and np.all(noisy["actions"] <= high)
  inside = (noisy["actions"] > low) & (noisy["actions"] < high)  # not clipped
  assert 0.25 < act[inside].std() / ((high - low) / 2).mean() < 0.35
  obs = noisy["observations"] - clean["observations"]
  std = clean["observations"].astype(np.float64).std(axis=0)
  varying = std > 1e-6  # noise in units of each dimension's own spread
  ratio = obs[:, varying].std(axis=0) / std[varying]
  assert np.all((ratio > 0.07) & (ratio < 0.13)), ratio
  # Within an episode the next observation is the next row's observation, noise included.
  same = clean["terminals"][:-1] == 0
  np.testing.assert_array_equal(noisy["next_observations"][:-1][same],
                                noisy["observations"][1:][same])
  assert not np.array_equal(noisy["next_observations"][:-1][~same],
                            noisy["observations"][1:][~same])
  config.env.dataset_noise_seed = 1
  other = tasks.load_task(config.env)[1]
  assert not np.allclose(other["actions"], noisy["actions"])
