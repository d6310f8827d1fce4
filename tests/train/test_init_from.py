"""`train.init_from`: a run that starts online from another run's offline checkpoint continues
exactly as that run did; offline-phase fields must match; bad sources fail before anything is
written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dfp_jax.data import synthetic
from dfp_jax.train import checkpoint, init_from, loop, phases
from dfp_jax.train.metrics import read_csv
from experiments.configs import dfp as dfp_configs
from experiments.configs import dfp_no_topk as dfp_no_topk_configs
from experiments.configs import qc_fql as qc_fql_configs

pytestmark = pytest.mark.slow  # trains

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASK = synthetic.TINY


def _config(module=dfp_configs, **train):
  """The smoke preset on the simulator-free synthetic task (runs are compared with runs)."""
  c = module.get_config("smoke")
  c.env.task = TASK
  c.train.tensorboard = False
  c.train.update(train)
  return c


def _rows(path):
  return {k: v for k, v in read_csv(path).items() if not k.endswith("time_s") and k != "steps_per_s"}


def _device_tree(workdir, step=None):
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  try:
    return checkpoint.by_path(ckpt.restore_saved(ckpt.latest_step() if step is None else step))
  finally:
    ckpt.close()


def _assert_same_trees(x, y, skip=()):
  assert x.keys() == y.keys()
  for k in x:
    if not any(k.startswith(s) for s in skip):
      np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """A two-seed smoke run (20 offline steps, 30 online): its workdir."""
  work = str(tmp_path_factory.mktemp("source"))
  loop.train_and_evaluate(_config(), work, seeds=[0, 1])
  return work


def test_a_run_from_the_offline_checkpoint_continues_as_the_source_did(source, tmp_path):
  work = str(tmp_path / "online")
  summaries = loop.train_and_evaluate(_config(init_from=source), work, seeds=[0, 1])
  for member in ("seed_0", "seed_1"):
    for name in ("train.csv", "eval.csv"):  # the offline rows copied, the online rows computed
      a, b = _rows(os.path.join(source, member, name)), _rows(os.path.join(work, member, name))
      assert a.keys() == b.keys()
      for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{member}/{name}: {k}")
    config = json.load(open(os.path.join(work, member, "config.json")))
    assert config["train"]["init_from"] == source
  _assert_same_trees(_device_tree(source), _device_tree(work))
  assert summaries[0]["init_from"] == {"workdir": os.path.abspath(source), "step": 20}
  # The source kept its offline-phase checkpoint beside its newest two.
  ckpt = checkpoint.Checkpointer(os.path.join(source, "checkpoints"), read_only=True)
  assert ckpt.all_steps() == [20, 40, 50]
  ckpt.close()


def test_online_phase_fields_may_differ_and_members_pick_their_seed(source, tmp_path):
  """A population of lambda values on seed 1 only, without top-K's online budget: each member
  starts from seed 1's pretraining and trains its own online phase."""
  work = str(tmp_path / "sweep")
  c = _config(init_from=source, online_steps=15, start_training=5)
  loop.train_and_evaluate(c, work, seeds=[1], sweep={"agent.topk_weight": [0.1, 2.0]})
  a = _rows(os.path.join(work, "topk_weight=0.1", "seed_1", "train.csv"))
  b = _rows(os.path.join(work, "topk_weight=2", "seed_1", "train.csv"))
  src = _rows(os.path.join(source, "seed_1", "train.csv"))
  offline = a["step"] <= 20
  np.testing.assert_array_equal(a["actor/loss"][offline], src["actor/loss"][src["step"] <= 20])
  np.testing.assert_array_equal(a["step"], [10, 20, 30])
  assert a["actor/loss"][-1] != b["actor/loss"][-1]  # lambda weighs the top-K term
  for m in ("topk_weight=0.1", "topk_weight=2"):
    assert read_csv(os.path.join(work, m, "seed_1", "eval.csv"))["step"][-1] == 35


def test_dfp_without_top_k_has_the_same_offline_phase(source, tmp_path):
  """dfp_no_topk shares dfp's offline phase: its own offline checkpoint equals dfp's (so
  starting it from dfp's pretraining is what it would have computed)."""
  work = str(tmp_path / "no_topk")
  loop.train_and_evaluate(_config(dfp_no_topk_configs, online_steps=0), work,
                          seeds=[0, 1])
  _assert_same_trees(_device_tree(source, step=20), _device_tree(work, step=20))


def _stop_after(step):
  """phases.at_boundary that stops the run (as a kill would) after checkpointing `step`."""
  original = phases.at_boundary

  def at_boundary(run, state, prev, phase_end):
    original(run, state, prev, phase_end)
    if state.step == step:
      raise KeyboardInterrupt
  return at_boundary


def test_bad_sources_are_one_error_and_write_nothing(source, tmp_path, monkeypatch):
  inside = str(tmp_path / "inside")
  with monkeypatch.context() as m:
    m.setattr(phases, "at_boundary", _stop_after(10))
    with pytest.raises(KeyboardInterrupt):
      loop.train_and_evaluate(_config(), inside)
  cases = [
      (_config(init_from=str(tmp_path / "nowhere")), "holds no checkpoints/"),
      (_config(qc_fql_configs, init_from=source), "another agent"),
      (_config(init_from=f"{source}@7"), "no checkpoint at step 7"),
      (_config(init_from=f"{source}@40"), "is in its online phase"),
      (_config(init_from=inside), "still in its offline phase"),
      (_config(init_from=f"{inside}@10"), "train.offline_steps=20 must equal"),
  ]
  hidden = _config(init_from=source)
  hidden.agent.actor_hidden = (16, 16)
  cases.append((hidden, "agent.actor_hidden: [32, 32] -> [16, 16] differs"))
  for config, message in cases:
    work = tmp_path / "run"
    with pytest.raises(init_from.InitFromError, match=None) as e:
      loop.train_and_evaluate(config, str(work), seeds=[0])
    assert message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)
    assert not work.exists()
  with pytest.raises(init_from.InitFromError, match="no member with seed 3"):
    loop.train_and_evaluate(_config(init_from=source), str(tmp_path / "r"),
                            seeds=[3])


def test_share_offline_pretrains_once_for_an_ablation(tmp_path):
  res = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config=experiments/configs/dfp.py:smoke",
       f"--config.env.task={TASK}", "--config.train.tensorboard=False",
       "--seeds=0", "--ablation=topk_weight", "--share_offline", f"--workdir={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert res.returncode == 0, res.stderr[-3000:]
  task = tmp_path / TASK
  pre = _rows(str(task / "offline" / "seed_0" / "train.csv"))
  assert pre["step"][-1] == 20  # the pretraining has no online phase
  for value in ("0.1", "0.5", "1", "5"):
    member = task / f"topk_weight={value}" / "seed_0"
    rows = _rows(str(member / "train.csv"))
    np.testing.assert_array_equal(rows["actor/loss"][rows["step"] <= 20], pre["actor/loss"])
    assert rows["step"][-1] == 50
    summary = json.load(open(member / "summary.json"))
    assert summary["init_from"]["workdir"] == str(task / "offline")
  assert res.stdout.count("starting the online phase from") == 1  # one population
