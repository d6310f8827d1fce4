"""What every method's config file shares: tasks, presets, environment and training fields.

Each method file (`dfp.py`, `qc_fql.py`, ...) calls `make(method, agent_config,
preset)` and then sets its own per-preset agent values. Presets: the paper's
OGBench and Robomimic tasks (SPEC sections 7-8) with Table 5 values, the pure
offline-RL tasks (prefix `offline-`), `quick` (the default: a small locally
generated task that trains on a laptop CPU), `quick-lift`, `quick-can` and
`quick-square` (Robomimic at quick's size, on scripted demonstrations
generated on first use) and `smoke` (tests). A preset changes the
same environment, training and network-size fields for every method, so the
methods compare at equal budgets and network sizes.
"""

import ml_collections
from ml_collections import config_dict

# Paper tasks: preset name -> OGBench single-task name.
ONLINE_TASKS = {
    **{f"cube-double-task{i}": f"cube-double-play-singletask-task{i}-v0" for i in (2, 3, 4)},
    **{f"cube-triple-task{i}": f"cube-triple-play-singletask-task{i}-v0" for i in (2, 3, 4)},
    **{f"cube-quadruple-100m-task{i}": f"cube-quadruple-play-100m-singletask-task{i}-v0"
       for i in (2, 3, 4)},
}
OFFLINE_TASKS = {
    "offline-cube-single-task2": "cube-single-play-singletask-task2-v0",
    "offline-cube-double-task2": "cube-double-play-singletask-task2-v0",
    "offline-scene-task2": "scene-play-singletask-task2-v0",
    "offline-puzzle-3x3-task4": "puzzle-3x3-play-singletask-task4-v0",
    "offline-puzzle-4x4-task4": "puzzle-4x4-play-singletask-task4-v0",
}
# Robomimic tasks (multi-human low-dim data; SPEC 8): the preset is the task name.
ROBOMIMIC_TASKS = ("lift", "can", "square")
# Small Robomimic runs on locally generated scripted demonstrations: preset -> scripted demos.
QUICK_ROBOMIMIC = {"quick-lift": 100, "quick-can": 200, "quick-square": 200}
PRESETS = (tuple(ONLINE_TASKS) + ROBOMIMIC_TASKS + tuple(OFFLINE_TASKS) + ("quick",)
           + tuple(QUICK_ROBOMIMIC) + ("smoke",))
# Named groups for `--tasks=` sweeps.
TASK_GROUPS = {
    "cube-double": [p for p in ONLINE_TASKS if p.startswith("cube-double")],
    "cube-triple": [p for p in ONLINE_TASKS if p.startswith("cube-triple")],
    "cube-quadruple-100m": [p for p in ONLINE_TASKS if p.startswith("cube-quadruple")],
    "robomimic": list(ROBOMIMIC_TASKS),
    "paper": list(ROBOMIMIC_TASKS) + list(ONLINE_TASKS),
    "offline": list(OFFLINE_TASKS),
}


def base_config(method: str, agent_config):
  c = ml_collections.ConfigDict()
  c.method = method             # which agent (dfp_jax/agents/__init__.py: METHODS)
  c.seed = 0                    # PRNG seed for init, sampling and updates
  c.env = ml_collections.ConfigDict()
  c.env.task = "cube-double-play-singletask-task2-v0"  # OGBench single-task name, or lift/can/square
  c.env.dataset_dir = "~/.ogbench/data"  # official npz files (downloaded here if a network exists)
  c.env.dataset_filter = config_dict.placeholder(str)  # Robomimic: train on this mask/<split> only
  c.env.num_shards = config_dict.placeholder(int)  # read only this many shards of sharded data
  c.env.shard_interval = 1_000  # sharded data: next shard every this many steps (0: no swaps)
  c.env.success_timing = "post"  # "post": the paper's (ogbench 1.1.2); ogbench >= 1.2 uses "pre"
  c.env.generate_episodes = 0   # > 0: generate this many play episodes if the data is missing
  c.env.generate_episode_length = config_dict.placeholder(int)  # None: the official length
  c.env.generate_task_goal_prob = 0.0  # generated play: fraction of targets that are the task's goal
  c.agent = agent_config         # the method's hyperparameters (its module's get_config)
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 256      # minibatch of chunks per update
  c.train.offline_steps = 1_000_000  # gradient steps of offline pretraining
  c.train.online_steps = 1_000_000   # environment steps of online fine-tuning
  c.train.start_training = 5_000     # online updates begin after this many env steps
  c.train.updates_per_dispatch = 10  # offline updates fused into one jitted scan
  c.train.replay_capacity = 2_000_000  # FIFO replay of max(this, N_offline + 1) transitions (impl)
  c.train.replay_keep_offline = False  # True: never overwrite offline data (online part FIFO)
  c.train.data_parallel = True       # split each batch over all devices when there are several
  c.train.eval_interval = 100_000    # steps between evaluations (each phase)
  c.train.eval_episodes = 50         # seeded evaluation episodes
  c.train.eval_seed = 1_000_000      # seed of the first evaluation episode
  c.train.train_seed = 0             # seed of the first online training episode
  c.train.log_interval = 5_000       # steps between train-metric rows
  c.train.tensorboard = True         # also write TensorBoard events
  c.train.progress_bar = True
  c.train.checkpoint_interval = 50_000  # steps between checkpoints in <workdir>/checkpoints (0: none)
  c.train.keep_checkpoints = 2       # keep the newest few checkpoints
  c.train.async_checkpointing = True  # write checkpoints in the background
  c.train.on_nonfinite = "stop"      # NaN/inf in a loss or the parameters: "stop" or "skip" the update
  return c


def make(method: str, agent_config, preset: str, chunk_len=None):
  """The config of `method` at `preset`, with the method-independent preset values.

  `chunk_len`, if given, replaces the agent's h except on the offline-RL presets (h = 1).
  """
  c = base_config(method, agent_config)
  if chunk_len is not None:
    c.agent.chunk_len = chunk_len
  if preset in ONLINE_TASKS:
    c.env.task = ONLINE_TASKS[preset]
  elif preset in OFFLINE_TASKS:
    # Pure offline RL: no chunking, no online phase.
    c.env.task = OFFLINE_TASKS[preset]
    c.agent.chunk_len = 1
    c.train.online_steps = 0
  elif preset in ROBOMIMIC_TASKS or preset in QUICK_ROBOMIMIC:
    # Robomimic (SPEC 6-7): best-of-N' with N' = 4 (also the critic target's best-of),
    # K = 2; DFP's temperatures {0.005, 0.05} are set in dfp.py.
    c.env.task = preset.removeprefix("quick-")
    c.env.dataset_dir = "~/.robomimic"  # <dir>/<task>/mh/low_dim_v15.hdf5, as robomimic downloads
    for field in ("num_act_samples", "num_target_samples"):
      c.agent[field] = min(4, c.agent[field])
    if "top_k" in c.agent:
      c.agent.top_k = 2
    if preset in QUICK_ROBOMIMIC:
      # Scripted demonstrations generated on first use (experiments/generate_robomimic.py),
      # quick's network and budget.
      c.env.dataset_dir = "~/.cache/dfp_jax/robomimic-scripted"
      c.env.generate_episodes = QUICK_ROBOMIMIC[preset]
      _quick_budget(c)
  elif preset == "quick":
    # Small enough for a 2-core CPU in about 10 minutes including data generation
    # (measured: README). Its generated play data is task-biased: half of the oracle's
    # targets (and starts) are task 2's, so the data is multimodal and only one mode is
    # rewarded.
    c.env.task = "cube-single-play-singletask-task2-v0"
    c.env.dataset_dir = "~/.cache/dfp_jax/quick-taskbiased"
    c.env.generate_episodes = 100
    c.env.generate_episode_length = 1000
    c.env.generate_task_goal_prob = 0.5
    _quick_budget(c)
  elif preset == "smoke":
    c.env.task = "cube-single-play-singletask-task2-v0"
    c.env.dataset_dir = "~/.cache/dfp_jax/smoke"
    c.env.generate_episodes = 2
    c.env.generate_episode_length = 100
    c.agent.actor_hidden = (32, 32)
    c.agent.critic_hidden = (32, 32)
    c.train.batch_size = 16
    c.train.offline_steps = 20
    c.train.online_steps = 30
    c.train.start_training = 10
    c.train.updates_per_dispatch = 5
    c.train.eval_interval = 20
    c.train.eval_episodes = 1
    c.train.log_interval = 10
    c.train.checkpoint_interval = 10
    c.train.progress_bar = False
  else:
    raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
  return c


def _quick_budget(c):
  """The `quick` presets' network sizes and budget (2-core CPU)."""
  c.agent.actor_hidden = (256, 256)
  c.agent.critic_hidden = (256, 256)
  c.agent.num_target_samples = min(8, c.agent.num_target_samples)
  c.train.batch_size = 128
  c.train.offline_steps = 20_000
  c.train.online_steps = 10_000
  c.train.start_training = 1_000
  c.train.eval_interval = 2_500
  c.train.eval_episodes = 20
  c.train.log_interval = 500
  c.train.checkpoint_interval = 2_500
