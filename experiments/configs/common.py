"""What every method's config file shares: tasks, presets, environment and training fields.

A preset is data: a table of overrides of the base config (`PRESET_OVERRIDES`),
the same for every method, so the methods compare at equal budgets and
network sizes. Each method file (`dfp.py`, `qc_fql.py`, ...) calls
`make(method, agent_config, preset, method_overrides)`, where
`method_overrides` holds the values only that method sets per preset; they are
applied after the shared ones. Presets: the paper's OGBench and Robomimic tasks
(docs/datasets.md) with Table 5 values, the pure offline-RL tasks (prefix
`offline-`), `quick` (the default: a small locally generated task that trains
on a laptop CPU), `quick-lift`, `quick-can` and `quick-square` (Robomimic at
quick's size, on scripted demonstrations generated on first use) and `smoke`
(tests).
"""

import ast

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
# Robomimic tasks (multi-human low-dim data; docs/datasets.md): the preset is the task name.
ROBOMIMIC_TASKS = ("lift", "can", "square")
# Small Robomimic runs on locally generated scripted demonstrations: preset -> scripted demos.
QUICK_ROBOMIMIC = {"quick-lift": 100, "quick-can": 200, "quick-square": 200}
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
  """Every field, with the paper's defaults (Table 5); presets override some of them."""
  c = ml_collections.ConfigDict()
  c.method = method             # which agent (dfp_jax/agents/__init__.py: METHODS)
  c.seed = 0                    # PRNG seed for init, sampling, updates and training episodes
  c.env = ml_collections.ConfigDict()
  c.env.task = "cube-double-play-singletask-task2-v0"  # OGBench single-task name, or lift/can/square
  c.env.dataset_dir = "~/.ogbench/data"  # official npz files (downloaded here if a network exists)
  c.env.dataset_filter = config_dict.placeholder(str)  # Robomimic: train on this mask/<split> only
  c.env.num_shards = config_dict.placeholder(int)  # read only this many shards of sharded data
  c.env.shard_interval = 1_000  # sharded data: next shard every this many steps (0: no swaps)
  c.env.success_timing = "post"  # "post": the paper's (ogbench 1.1.2); ogbench >= 1.2 uses "pre"
  c.env.sparse_reward = False   # -1 until success, 0 at it, offline and online (Q-chunking's --sparse)
  # Noisy demonstrations (robustness study): Gaussian noise on the offline data only, drawn
  # from env.dataset_noise_seed. Actions: sigma x half the action box; observations: sigma x
  # each dimension's std in the data (a state's noise is the same as observation and as the
  # previous transition's next observation).
  c.env.dataset_action_noise = 0.0
  c.env.dataset_obs_noise = 0.0
  c.env.dataset_noise_seed = 0
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
  c.train.utd_ratio = 1              # online updates per environment step (one dispatch; RLPD's UTD)
  c.train.replay_capacity = 2_000_000  # FIFO replay of max(this, N_offline + 1) transitions (impl)
  c.train.replay_keep_offline = False  # True: never overwrite offline data (online part FIFO)
  c.train.offline_batch_ratio = config_dict.placeholder(float)  # None: one FIFO buffer; else this
  #   fraction of each online minibatch from the offline data, kept whole (RLPD: 0.5)
  c.train.bc_offline_only = False     # with offline_batch_ratio: DFP's L_BC on offline chunks only
  c.train.use_mesh = True            # lay the run over a mesh of all devices (members along POP,
                                     # each batch along DATA) when there are several; False: one
  c.train.init_from = ""              # WORKDIR[@STEP]: start online from that run's offline phase
  c.train.eval_interval = 100_000    # steps between evaluations (each phase)
  c.train.eval_episodes = 100        # seeded evaluation episodes (the released trainer's count)
  c.train.eval_seed = 1_000_000      # seed of the first evaluation episode
  c.train.eval_envs = config_dict.placeholder(int)  # episodes per member run side by side (None: auto)
  c.train.env_workers = config_dict.placeholder(int)  # env worker processes (None: usable cores; 0: none)
  c.train.log_interval = 5_000       # steps between train-metric rows
  c.train.tensorboard = True         # also write TensorBoard events
  c.train.progress_bar = True        # a progress bar on the terminal
  c.train.checkpoint_interval = 50_000  # steps between checkpoints in <workdir>/checkpoints (0: none)
  c.train.keep_checkpoints = 2       # keep the newest few checkpoints
  c.train.async_checkpointing = True  # write checkpoints in the background
  c.train.on_nonfinite = "stop"      # NaN/inf in a loss or the parameters: "stop" or "skip" the update
  c.train.matmul_precision = "fp32"  # matmuls: "fp32" (the paper), "tf32", "bf16", "default" (the backend's)
  c.train.video_episodes = 0         # record this many evaluation episodes per member as videos
  c.train.video_size = 128           # their frame width and height in pixels
  c.train.wandb_project = ""         # log to this Weights & Biases project ("": off)
  return c


# The `quick` presets' network sizes and budget: a 2-core CPU in about 10 minutes (README).
_QUICK_BUDGET = {
    "agent.actor_hidden": (256, 256),
    "agent.critic_hidden": (256, 256),
    "agent.num_target_samples": 8,  # best-of-8 in the critic target (1 stays 1: method files)
    "train.batch_size": 128,
    "train.offline_steps": 20_000,
    "train.online_steps": 10_000,
    "train.start_training": 1_000,
    "train.eval_interval": 2_500,
    # The most episodes that keep evaluation under ~15% of the run on 2 cores (docs/protocol.md);
    # 20 made a seed's score depend on which 20 starts were drawn.
    "train.eval_episodes": 36,
    "train.log_interval": 500,
    "train.checkpoint_interval": 2_500,
}
# Robomimic: multi-human files where robomimic's download script puts them, best-of-N'
# with N' = 4 (also the critic target's). K = 2 and DFP's temperatures are the method files'.
_ROBOMIMIC = {
    "env.dataset_dir": "~/.robomimic",  # <dir>/<task>/mh/low_dim_v15.hdf5
    "agent.num_act_samples": 4,
    "agent.num_target_samples": 4,
}

# Preset name -> overrides of the base config (flattened field names), for every method.
PRESET_OVERRIDES = {
    **{name: {"env.task": task} for name, task in ONLINE_TASKS.items()},
    **{task: {"env.task": task, **_ROBOMIMIC} for task in ROBOMIMIC_TASKS},
    # Pure offline RL: no chunking, no online phase.
    **{name: {"env.task": task, "agent.chunk_len": 1, "train.online_steps": 0}
       for name, task in OFFLINE_TASKS.items()},
    # cube-single on generated task-biased play data: half of the oracle's targets (and starts)
    # are task 2's, so the data is multimodal and only one mode is rewarded.
    "quick": {
        "env.task": "cube-single-play-singletask-task2-v0",
        "env.dataset_dir": "~/.cache/dfp_jax/quick-taskbiased",
        "env.generate_episodes": 100,
        "env.generate_episode_length": 1000,
        "env.generate_task_goal_prob": 0.5,
        **_QUICK_BUDGET,
    },
    # Robomimic at quick's size, on scripted demonstrations generated on first use.
    **{f"quick-{task}": {
        "env.task": task, **_ROBOMIMIC,
        "env.dataset_dir": "~/.cache/dfp_jax/robomimic-scripted",
        "env.generate_episodes": QUICK_ROBOMIMIC[f"quick-{task}"],
        **_QUICK_BUDGET, "agent.num_target_samples": 4,
    } for task in ROBOMIMIC_TASKS},
    # Tiny: the tests' end-to-end run.
    "smoke": {
        "env.task": "cube-single-play-singletask-task2-v0",
        "env.dataset_dir": "~/.cache/dfp_jax/smoke",
        "env.generate_episodes": 2,
        "env.generate_episode_length": 100,
        "agent.actor_hidden": (32, 32),
        "agent.critic_hidden": (32, 32),
        "train.batch_size": 16,
        "train.offline_steps": 20,
        "train.online_steps": 30,
        "train.start_training": 10,
        "train.updates_per_dispatch": 5,
        "train.eval_interval": 20,
        "train.eval_episodes": 1,
        "train.log_interval": 10,
        "train.checkpoint_interval": 10,
        "train.progress_bar": False,
        "train.env_workers": 0,  # at this size starting worker processes costs more than it saves
    },
}
PRESETS = tuple(PRESET_OVERRIDES)


def make(method: str, agent_config, preset: str, method_overrides=None, chunk_len=None):
  """The config of `method` at `preset`.

  `chunk_len`, if given, is the method's h (the offline-RL presets then set 1);
  the shared preset overrides come next, then `method_overrides[preset]`.
  """
  if preset not in PRESET_OVERRIDES:
    raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
  c = base_config(method, agent_config)
  if chunk_len is not None:
    c.agent.chunk_len = chunk_len
  c.update_from_flattened_dict(PRESET_OVERRIDES[preset])
  c.update_from_flattened_dict((method_overrides or {}).get(preset, {}))
  return c


def apply_overrides(config, overrides):
  """`config` with each "dotted.key=value" of `overrides` set (value a Python literal, else a
  string); a field the config lacks, or a value of the wrong type, is a ValueError naming it."""
  for item in overrides:
    key, sep, text = item.partition("=")
    *parents, name = key.strip().split(".")
    target = config
    for parent in parents:
      target = target.get(parent) if hasattr(target, "get") else None
    if not sep or target is None or not hasattr(target, "get") or name not in target:
      raise ValueError(f"--overrides={item}: not field=value of a config field")
    try:
      value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
      value = text.strip()  # a bare word: a string (e.g. train.matmul_precision=bf16)
    try:
      target[name] = value
    except TypeError as e:
      raise ValueError(f"--overrides={item}: {e}") from e
  return config
