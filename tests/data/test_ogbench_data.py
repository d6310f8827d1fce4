"""OGBench loading: names, relabelled data, and clear errors for missing or wrong files."""

import os
import shutil

import numpy as np
import pytest

from dfp_jax.data import ogbench_data
from dfp_jax.data.ogbench_data import DatasetError


@pytest.mark.parametrize("task,env,dataset", [
    ("cube-double-play-singletask-task2-v0", "cube-double-singletask-task2-v0",
     "cube-double-play-v0"),
    ("cube-quadruple-play-100m-singletask-task4-v0", "cube-quadruple-singletask-task4-v0",
     "cube-quadruple-play-100m-v0"),
    ("puzzle-3x3-play-singletask-task4-v0", "puzzle-3x3-singletask-task4-v0",
     "puzzle-3x3-play-v0"),
])
def test_split_task_name(task, env, dataset):
  assert ogbench_data.split_task_name(task) == (env, dataset)


def test_not_a_task_name():
  with pytest.raises(DatasetError, match="not an OGBench single-task name"):
    ogbench_data.split_task_name("cube-double-v0")


def test_load_generated_dataset(tiny_cube_single):
  env, train, val = ogbench_data.load_task("cube-single-play-singletask-task2-v0",
                                           tiny_cube_single, download=False)
  assert len(train["observations"]) == 3 * 60 and len(val["observations"]) == 60
  assert train["observations"].shape[1] == env.observation_space.shape[0]
  # Task rewards from ogbench's relabelling: -1 unsolved, 0 solved.
  assert set(np.unique(train["rewards"])) <= {-1.0, 0.0}
  np.testing.assert_array_equal(train["masks"], train["rewards"] + 1.0 == 0.0)
  np.testing.assert_array_equal(np.flatnonzero(train["terminals"]), [59, 119, 179])
  # next_observations[t] == observations[t + 1] inside an episode.
  np.testing.assert_array_equal(train["next_observations"][:59], train["observations"][1:60])


def test_missing_dataset_names_the_generator(tmp_path):
  with pytest.raises(DatasetError) as e:
    ogbench_data.load_task("cube-double-play-singletask-task2-v0", str(tmp_path),
                           download=False)
  assert "python -m experiments.generate_ogbench --dataset=cube-double-play-v0" in str(e.value)


def test_dataset_of_another_task_is_rejected(tiny_cube_single, tmp_path):
  for suffix in ("", "-val"):
    shutil.copy(os.path.join(tiny_cube_single, f"cube-single-play-v0{suffix}.npz"),
                tmp_path / f"cube-double-play-v0{suffix}.npz")
  with pytest.raises(DatasetError, match="observations have shape"):
    ogbench_data.load_task("cube-double-play-singletask-task2-v0", str(tmp_path),
                           download=False)


def test_corrupt_file_is_a_clear_error(tmp_path):
  (tmp_path / "cube-single-play-v0.npz").write_bytes(b"not a zip file at all")
  (tmp_path / "cube-single-play-v0-val.npz").write_bytes(b"nor this")
  with pytest.raises(DatasetError, match="cannot be read"):
    ogbench_data.load_task("cube-single-play-singletask-task2-v0", str(tmp_path),
                           download=False)


def test_file_with_wrong_keys_is_a_clear_error(tmp_path):
  for suffix in ("", "-val"):
    np.savez(tmp_path / f"cube-single-play-v0{suffix}.npz", obs=np.zeros((3, 28)))
  with pytest.raises(DatasetError, match="missing keys"):
    ogbench_data.load_task("cube-single-play-singletask-task2-v0", str(tmp_path),
                           download=False)


def test_sharded_dataset_directory(tiny_cube_single, tmp_path):
  """The 100M layout: <dir>/<dataset>/<name>-NNN.npz with -NNN-val.npz beside each."""
  shard_dir = tmp_path / "cube-single-play-v0"
  shard_dir.mkdir()
  for i in range(3):
    for suffix in ("", "-val"):
      with np.load(os.path.join(tiny_cube_single, f"cube-single-play-v0{suffix}.npz")) as f:
        arrays = dict(f)
      arrays["observations"] = arrays["observations"] + 100.0 * i  # tell the shards apart
      np.savez(shard_dir / f"cube-single-play-v0-{i:03d}{suffix}.npz", **arrays)
  _, full, _ = ogbench_data.load_task("cube-single-play-singletask-task2-v0", str(tmp_path),
                                      download=False)
  _, two, _ = ogbench_data.load_task("cube-single-play-singletask-task2-v0", str(tmp_path),
                                     num_shards=2, download=False)
  assert len(full["observations"]) == 3 * 180 and len(two["observations"]) == 2 * 180
  assert ogbench_data.count_shards("cube-single-play-singletask-task2-v0", str(tmp_path)) == 3
  _, one, _ = ogbench_data.load_task("cube-single-play-singletask-task2-v0", str(tmp_path),
                                     shard=4, download=False)  # shard 4 % 3 == 1
  np.testing.assert_array_equal(one["observations"], full["observations"][180:360])
  assert np.all(one["observations"] != full["observations"][:180])


def test_check_dataset_rejects_nan_and_out_of_range_actions():
  n = 4
  data = {"observations": np.zeros((n, 3), np.float32), "actions": np.zeros((n, 2), np.float32),
          "rewards": np.zeros(n), "masks": np.ones(n), "next_observations": np.zeros((n, 3))}
  ogbench_data.check_dataset(data, 3, 2, "ok")
  bad = dict(data, rewards=np.array([0, np.nan, 0, 0]))
  with pytest.raises(DatasetError, match="NaN"):
    ogbench_data.check_dataset(bad, 3, 2, "bad")
  bad = dict(data, actions=np.full((n, 2), 3.0, np.float32))
  with pytest.raises(DatasetError, match=r"outside \[-1, 1\]"):
    ogbench_data.check_dataset(bad, 3, 2, "bad")


def _stub_sources(monkeypatch, mirror_files):
  """The OGBench server always fails; the hub (a stub) serves `mirror_files` {name: source
  path or bytes}."""
  import socket
  import types
  import huggingface_hub
  import ogbench
  calls = []

  def server_down(names, root):
    raise ConnectionError("rail.eecs.berkeley.edu is down")

  def fake_download(repo_id, filename, repo_type, local_dir, **kwargs):
    calls.append((repo_id, filename, repo_type))
    if filename not in mirror_files:
      raise FileNotFoundError(f"404 {filename}")
    path = os.path.join(local_dir, filename)
    os.makedirs(local_dir, exist_ok=True)
    source = mirror_files[filename]
    if isinstance(source, bytes):
      with open(path, "wb") as f:
        f.write(source)
    else:
      shutil.copy(source, path)
    return path

  monkeypatch.setattr(ogbench, "download_datasets", server_down)
  monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
  monkeypatch.setattr(socket, "create_connection", lambda *a, **k: types.SimpleNamespace(
      close=lambda: None))
  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  return calls


def test_a_failed_server_download_falls_back_to_the_hugging_face_mirror(
    tiny_cube_single, tmp_path, monkeypatch, capsys):
  names = ("cube-single-play-v0.npz", "cube-single-play-v0-val.npz")
  calls = _stub_sources(monkeypatch, {n: os.path.join(tiny_cube_single, n) for n in names})
  _, train, val = ogbench_data.load_task("cube-single-play-singletask-task2-v0", str(tmp_path))
  assert calls == [(ogbench_data.HF_MIRROR, n, "dataset") for n in names]
  assert len(train["observations"]) > 0 and len(val["observations"]) > 0
  out = capsys.readouterr().out
  assert (f"dataset cube-single-play-v0: downloaded from the Hugging Face mirror "
          f"{ogbench_data.HF_MIRROR} (the OGBench server failed: ConnectionError: "
          "rail.eecs.berkeley.edu is down)") in out
  assert sorted(os.listdir(tmp_path)) == sorted(names)  # staging removed


def test_a_mirror_file_that_is_not_the_dataset_is_removed_and_named(tmp_path, monkeypatch):
  _stub_sources(monkeypatch, {"cube-single-play-v0.npz": b"<html>not found</html>" * 100})
  with pytest.raises(DatasetError) as e:
    ogbench_data.load_task("cube-single-play-singletask-task2-v0", str(tmp_path))
  text = " ".join(str(e.value).split())
  assert "OGBench server: ConnectionError: rail.eecs.berkeley.edu is down" in text
  assert f"Hugging Face mirror {ogbench_data.HF_MIRROR}: cube-single-play-v0.npz cannot be read" in text
  assert "python -m experiments.generate_ogbench --dataset=cube-single-play-v0" in text
  assert os.listdir(tmp_path) == []  # nothing that is not the dataset is left


def test_no_network_names_both_sources_and_the_generator(tmp_path, monkeypatch):
  import ogbench
  monkeypatch.setattr(ogbench, "download_datasets",
                      lambda names, root: (_ for _ in ()).throw(OSError("no network")))
  monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  with pytest.raises(DatasetError) as e:
    ogbench_data.load_task("cube-single-play-singletask-task2-v0", str(tmp_path))
  text = " ".join(str(e.value).split())
  assert "OGBench server: OSError: no network" in text
  assert f"Hugging Face mirror {ogbench_data.HF_MIRROR}: cannot reach 127.0.0.1:9" in text
  assert "Generate it locally with: python -m experiments.generate_ogbench" in text
