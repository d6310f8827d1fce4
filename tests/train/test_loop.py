"""The `smoke` preset end to end through the real entry point, and the config presets."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dfp_jax.data import synthetic
from dfp_jax.train.metrics import read_csv
from experiments.configs import dfp as dfp_configs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Where runs are compared with runs or only the loop's bookkeeping is checked, the
# simulator-free synthetic task (test_smoke_preset_trains_end_to_end is the MuJoCo run).
SYNTHETIC = synthetic.TINY


def _train(*args, cwd=ROOT):
  return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=600)


def test_a_tiny_two_seed_run_in_process_writes_every_output_and_is_not_trained_twice(tmp_path):
  from dfp_jax.train import checkpoint, loop
  c = dfp_configs.get_config("smoke")
  c.env.task = SYNTHETIC
  c.train.offline_steps, c.train.online_steps, c.train.start_training = 10, 10, 5
  c.train.eval_interval, c.train.log_interval, c.train.checkpoint_interval = 10, 5, 10
  c.train.tensorboard = False
  summaries = loop.train_and_evaluate(c, str(tmp_path), seeds=[0, 1])
  assert [s["seed"] for s in summaries] == [0, 1]
  for seed in (0, 1):
    run = tmp_path / f"seed_{seed}"
    train, evals = read_csv(str(run / "train.csv")), read_csv(str(run / "eval.csv"))
    np.testing.assert_array_equal(train["step"], [5, 10, 15, 20])
    np.testing.assert_array_equal(evals["step"], [10, 20])
    np.testing.assert_array_equal(evals["online"], [0.0, 1.0])
    assert np.all(np.isfinite(train["critic/loss"]))
    online = train["step"] > 10  # the top-K term only online
    assert np.all(np.isfinite(train["actor/topk_loss"][online]))
    assert np.all(np.isnan(train["actor/topk_loss"][~online]))
    assert json.loads((run / "config.json").read_text())["seed"] == seed
  # The two seeds are different runs, and both were checkpointed at the end.
  a = read_csv(str(tmp_path / "seed_0" / "train.csv"))["critic/loss"]
  b = read_csv(str(tmp_path / "seed_1" / "train.csv"))["critic/loss"]
  assert not np.array_equal(a, b)
  assert checkpoint.Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 20
  again = loop.train_and_evaluate(c, str(tmp_path), seeds=[0, 1])
  drop = lambda s: {k: v for k, v in s.items() if k not in ("wall_time_s", "time_s")}  # noqa: E731
  assert [drop(s) for s in again] == [drop(s) for s in summaries]
  np.testing.assert_array_equal(read_csv(str(tmp_path / "seed_0" / "train.csv"))["critic/loss"],
                                a)  # nothing trained or written again


@pytest.mark.slow
def test_smoke_preset_trains_end_to_end(tmp_path):
  workdir = tmp_path / "run"
  res = _train("--config=experiments/configs/dfp.py:smoke", f"--workdir={workdir}",
               f"--config.env.dataset_dir={tmp_path / 'data'}")
  assert res.returncode == 0, res.stderr[-3000:]
  # It generated its dataset on first use...
  assert (tmp_path / "data" / "cube-single-play-v0-val.npz").exists()
  # ...and wrote the resolved config, metrics, TensorBoard events and a summary.
  config = json.loads((workdir / "config.json").read_text())
  assert config["env"]["task"] == "cube-single-play-singletask-task2-v0"
  train = read_csv(str(workdir / "train.csv"))
  evals = read_csv(str(workdir / "eval.csv"))
  steps = config["train"]["offline_steps"] + config["train"]["online_steps"]
  assert train["step"].max() == steps and evals["step"].max() == steps
  assert set(evals["online"]) == {0.0, 1.0}  # both phases evaluated
  for key in ("actor/loss", "critic/loss", "actor/bc_drift_norm", "steps_per_s"):
    assert np.all(np.isfinite(train[key])), key
  # The online phase uses the top-K term; the offline phase does not.
  online = train["step"] > config["train"]["offline_steps"]
  assert np.all(np.isfinite(train["actor/topk_loss"][online]))
  assert np.all(np.isnan(train["actor/topk_loss"][~online]))
  assert any(f.startswith("events") for f in os.listdir(workdir / "tb"))
  assert (workdir / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
  summary = json.loads((workdir / "summary.json").read_text())
  assert 0.0 <= summary["final_success"] <= 1.0 and summary["online_steps"] == 30
  # Where the time went: every part, non-negative, adding up to the total.
  parts = dict(summary["time_s"])
  total = parts.pop("total")
  assert set(parts) == {"setup", "offline_updates", "online_updates", "env_steps", "evaluation",
                        "checkpoints", "other"}
  assert all(v >= 0 for k, v in parts.items() if k != "other"), parts
  assert sum(parts.values()) == pytest.approx(total, abs=0.01)
  assert abs(parts["other"]) < 0.5 * total, parts


@pytest.mark.slow
def test_missing_dataset_is_one_clear_error(tmp_path):
  res = _train("--config=experiments/configs/dfp.py:smoke", f"--workdir={tmp_path / 'run'}",
               f"--config.env.dataset_dir={tmp_path / 'empty'}",
               "--config.env.generate_episodes=0", "--config.env.task="
               "cube-double-play-singletask-task2-v0")
  assert res.returncode != 0
  assert "Traceback" not in res.stderr
  assert "python -m experiments.generate_ogbench --dataset=cube-double-play-v0" in res.stderr


@pytest.mark.parametrize("preset", dfp_configs.PRESETS)
def test_every_preset_builds(preset):
  c = dfp_configs.get_config(preset)
  assert c.agent.temperatures and c.agent.top_k <= c.agent.num_candidates


def test_paper_presets_use_table5_values():
  c = dfp_configs.get_config("cube-triple-task4")
  assert c.env.task == "cube-triple-play-singletask-task4-v0"
  a, t = c.agent, c.train
  assert (t.batch_size, a.lr, a.discount, a.tau) == (256, 3e-4, 0.99, 5e-3)
  assert (t.offline_steps, t.online_steps, t.start_training) == (1_000_000, 1_000_000, 5_000)
  assert (a.chunk_len, a.num_candidates, a.num_gen, a.top_k, a.num_act_samples) == (5, 16, 8, 4, 16)
  assert (a.topk_weight, a.ema_tau, tuple(a.temperatures)) == (0.5, 1e-4, (0.05,))
  assert a.actor_hidden == (512,) * 4 and a.critic_ensemble == 2
  assert c.env.success_timing == "post"
  off = dfp_configs.get_config("offline-puzzle-4x4-task4")
  assert (off.agent.top_k, off.agent.num_candidates, off.agent.chunk_len) == (16, 32, 1)
  assert off.agent.topk_offline and off.train.online_steps == 0


@pytest.mark.slow
def test_sharded_data_rotates_one_shard_at_a_time(tiny_cube_single, tmp_path, monkeypatch):
  from dfp_jax.data import ogbench_data
  from dfp_jax.train import loop as trainer
  shard_dir = tmp_path / "data" / "cube-single-play-v0"
  shard_dir.mkdir(parents=True)
  for i in range(3):
    for suffix in ("", "-val"):
      os.symlink(os.path.join(tiny_cube_single, f"cube-single-play-v0{suffix}.npz"),
                 shard_dir / f"cube-single-play-v0-{i:03d}{suffix}.npz")
  loaded = []
  real_load = ogbench_data.load_task

  def spy(*args, **kwargs):
    loaded.append(kwargs.get("shard"))
    return real_load(*args, **kwargs)

  monkeypatch.setattr(ogbench_data, "load_task", spy)
  c = dfp_configs.get_config("smoke")
  c.env.dataset_dir = str(tmp_path / "data")
  c.env.shard_interval = 10
  c.train.offline_steps, c.train.online_steps, c.train.eval_episodes = 35, 0, 0
  c.train.tensorboard = False
  trainer.train_and_evaluate(c, str(tmp_path / "run"))
  assert loaded == [0, 1, 2, 3]  # shard 3 wraps around to the first file


@pytest.mark.slow
def test_vectorised_seeds_equal_single_runs(tmp_path):
  """Seed k of a vmapped multi-seed run computes what seed k alone computes."""
  from dfp_jax.train import loop as trainer
  c = dfp_configs.get_config("smoke")
  c.env.task = SYNTHETIC
  c.train.tensorboard = False
  together = trainer.train_and_evaluate(c, str(tmp_path / "vec"), seeds=(0, 3))
  c.seed = 3
  alone = trainer.train_and_evaluate(c, str(tmp_path / "single"))
  assert [s["seed"] for s in together] == [0, 3] and alone[0]["seed"] == 3
  vec = read_csv(str(tmp_path / "vec" / "seed_3" / "train.csv"))
  single = read_csv(str(tmp_path / "single" / "train.csv"))
  for key in ("actor/loss", "critic/loss", "critic/q_mean", "actor/topk_q_mean",
              "actor/grad_norm"):
    np.testing.assert_allclose(vec[key], single[key], rtol=1e-4, atol=1e-6, err_msg=key)
  ev_vec = read_csv(str(tmp_path / "vec" / "seed_3" / "eval.csv"))
  ev_single = read_csv(str(tmp_path / "single" / "eval.csv"))
  np.testing.assert_allclose(ev_vec["return"], ev_single["return"])
  # ...and the two seeds of the vectorised run are different runs.
  other = read_csv(str(tmp_path / "vec" / "seed_0" / "train.csv"))
  assert np.abs(other["critic/q_mean"] - vec["critic/q_mean"]).max() > 1e-3
  assert json.loads((tmp_path / "vec" / "seed_0" / "config.json").read_text())["seed"] == 0


@pytest.mark.slow
def test_seed_and_task_sweep_from_the_entry_point(tmp_path):
  res = _train("--tasks=smoke", "--seeds=0,1", f"--workdir={tmp_path}",
               f"--config.env.dataset_dir={tmp_path / 'data'}", "--config.train.online_steps=12")
  assert res.returncode == 0, res.stderr[-3000:]
  for seed in (0, 1):
    run = tmp_path / "cube-single-play-singletask-task2-v0" / f"seed_{seed}"
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == seed and config["train"]["online_steps"] == 12  # override kept
    assert json.loads((run / "summary.json").read_text())["num_seeds_vectorised"] == 2


def test_task_groups_expand_with_overrides():
  from dfp_jax.train import plan
  presets, configs = zip(*plan.sweep_configs(os.path.join(ROOT, "experiments/configs/dfp.py"),
                                              ["cube-triple", "quick"], {"agent.top_k": 2}))
  assert presets == ("cube-triple-task2", "cube-triple-task3", "cube-triple-task4", "quick")
  assert [c.env.task for c in configs] == [
      "cube-triple-play-singletask-task2-v0", "cube-triple-play-singletask-task3-v0",
      "cube-triple-play-singletask-task4-v0", "cube-single-play-singletask-task2-v0"]
  assert all(c.agent.top_k == 2 for c in configs)
  assert configs[0].agent.actor_hidden == (512,) * 4  # each preset's own values otherwise


@pytest.mark.slow
def test_ablation_flag_sweeps_the_papers_values_and_the_report_tables_them(tmp_path):
  res = _train("--config=experiments/configs/dfp.py:smoke", "--ablation=top_k", "--seeds=0",
               f"--workdir={tmp_path}", f"--config.env.task={SYNTHETIC}",
               "--config.train.online_steps=12", "--config.agent.num_candidates=8")
  assert res.returncode == 0, res.stderr[-3000:]
  task_dir = tmp_path / SYNTHETIC
  assert sorted(p.name for p in task_dir.iterdir()) == [f"top_k={k}" for k in (1, 2, 4, 8)]
  for k in (1, 2, 4, 8):
    config = json.loads((task_dir / f"top_k={k}" / "seed_0" / "config.json").read_text())
    assert config["agent"]["top_k"] == k and config["agent"]["num_candidates"] == 8
  from experiments import report
  rows = report.summarise(report.find_runs([str(tmp_path)]), "agent.top_k")
  assert [r["label"] for r in rows] == [f"agent.top_k={k}" for k in (1, 2, 4, 8)]
  bad = _train("--config=experiments/configs/qc_fql.py:smoke", "--ablation=top_k",
               f"--workdir={tmp_path / 'bad'}")
  assert bad.returncode != 0 and "unknown ablation 'top_k'" in bad.stderr
  assert "Traceback" not in bad.stderr


def _update_count(workdir):
  from dfp_jax.train import checkpoint
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  try:
    flat = checkpoint.by_path(ckpt.restore_saved(ckpt.latest_step()))
  finally:
    ckpt.close()
  return np.asarray(flat["agent/critic_opt_state/0/count"]), flat


def test_utd_ratio_runs_that_many_online_updates_per_step_in_one_dispatch(tmp_path):
  import jax
  from dfp_jax import agents
  from dfp_jax.train import loop, updates
  c = dfp_configs.get_config("smoke")
  c.env.task = SYNTHETIC
  c.train.offline_steps, c.train.online_steps, c.train.start_training = 10, 10, 5
  c.train.eval_episodes, c.train.tensorboard, c.train.env_workers = 0, False, 0
  counts = {}
  for utd in (1, 2):
    c.train.utd_ratio = utd
    loop.train_and_evaluate(c, str(tmp_path / f"utd{utd}"), seeds=[0, 1])
    counts[utd] = _update_count(str(tmp_path / f"utd{utd}"))[0]
  online_updates = counts[1] - c.train.offline_steps
  assert np.all(online_updates == 6), counts  # env steps 5..10
  np.testing.assert_array_equal(counts[2], c.train.offline_steps + 2 * online_updates)
  # One fused dispatch of u updates equals u dispatches of one (same batches, same keys).
  method = agents.get("dfp")
  agent = jax.vmap(lambda k: method.create(c.agent, 4, 2, k))(
      jax.random.split(jax.random.PRNGKey(0), 2))
  rng = np.random.default_rng(0)
  def batch():
    return {"observations": rng.standard_normal((2, 8, 4), np.float32),
            "actions": rng.uniform(-1, 1, (2, 8, 2 * c.agent.chunk_len)).astype(np.float32),
            "rewards": -np.ones((2, 8), np.float32), "masks": np.ones((2, 8), np.float32),
            "valid": np.ones((2, 8), np.float32),
            "next_observations": rng.standard_normal((2, 8, 4), np.float32)}
  batches = [batch() for _ in range(3)]
  keys = jax.random.split(jax.random.PRNGKey(1), 2)
  _, one = updates.make_update_fns(method.update)
  _, fused = updates.make_update_fns(method.update, utd_ratio=3)
  seq_agent, seq_keys = agent, keys
  for b in batches:
    seq_agent, seq_keys, _ = one(seq_agent, b, seq_keys)
  stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
  fused_agent, fused_keys, info = fused(agent, stacked, keys)
  np.testing.assert_array_equal(fused_keys, seq_keys)
  for a, b in zip(jax.tree.leaves(fused_agent), jax.tree.leaves(seq_agent)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(fused_agent.critic_opt_state[0].count) == 3)


def test_offline_batch_ratio_trains_a_population_and_keeps_the_offline_phase(tmp_path):
  """A separate offline buffer changes nothing before the online switch (it holds the
  offline data alone), so the offline rows equal a single-buffer run's; online, every
  minibatch holds that fraction of offline chunks (tests/data/test_replay.py)."""
  from dfp_jax.train import loop
  c = dfp_configs.get_config("smoke")
  c.env.task = SYNTHETIC
  c.train.offline_steps, c.train.online_steps, c.train.start_training = 10, 10, 5
  c.train.eval_interval, c.train.log_interval, c.train.checkpoint_interval = 10, 5, 10
  c.train.tensorboard, c.train.env_workers = False, 0
  loop.train_and_evaluate(c, str(tmp_path / "fifo"), seeds=[0, 1])
  c.train.offline_batch_ratio, c.train.bc_offline_only = 0.5, True
  loop.train_and_evaluate(c, str(tmp_path / "mixed"), seeds=[0, 1])
  for seed in (0, 1):
    a = read_csv(str(tmp_path / "fifo" / f"seed_{seed}" / "train.csv"))
    b = read_csv(str(tmp_path / "mixed" / f"seed_{seed}" / "train.csv"))
    offline = a["step"] <= 10
    for k in ("critic/loss", "actor/bc_loss"):
      np.testing.assert_array_equal(a[k][offline], b[k][offline])
      assert np.all(np.isfinite(b[k]))
    assert not np.array_equal(a["actor/bc_loss"][~offline], b["actor/bc_loss"][~offline])
