"""Task names route to OGBench or Robomimic; the Robomimic presets carry the paper's values."""

import os
import subprocess
import sys

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


def test_missing_robomimic_dataset_names_both_ways_to_get_it(tmp_path):
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
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
  assert "error: robomimic dataset" in res.stderr
  assert "python -m experiments.generate_robomimic --task=lift" in res.stderr
