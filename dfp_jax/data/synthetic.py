"""Synthetic tasks: an OGBench task's sizes and episode length, no simulator.

`synthetic-cube-double` has cube-double's observation (37) and action (5) sizes and its
500-step episodes, random observations, reward -1 at every step and no success. Training on it
measures the loop's own host and device work (the accelerator suite's trainer figures): a
step of this environment costs microseconds, where the real one costs milliseconds of MuJoCo.
`synthetic-tiny` (cube-single's sizes, 20-step episodes) is the tests' task for what does not
need a simulator: resumption, populations, meshes and processes compared run against run.
"""

from typing import Dict, Tuple

import numpy as np

PREFIX = "synthetic-"
# Family -> (observation size, action size, episode length): OGBench's as ogbench 1.2 makes
# them, and the tests' tiny one.
SHAPES = {"cube-single": (28, 5, 200), "cube-double": (37, 5, 500),
          "cube-triple": (46, 5, 1000), "cube-quadruple": (55, 5, 1000),
          "tiny": (28, 5, 20)}
DATASET_EPISODES = 100
TINY = PREFIX + "tiny"  # the tests' task for what does not need the physics


def is_synthetic(task: str) -> bool:
  return task.startswith(PREFIX)


def shapes(task: str) -> Tuple[int, int, int]:
  family = task[len(PREFIX):]
  if family not in SHAPES:
    raise ValueError(f"unknown synthetic task {task!r}; choose one of "
                     f"{', '.join(PREFIX + f for f in SHAPES)}")
  return SHAPES[family]


def make_env(task: str):
  import gymnasium

  obs_dim, action_dim, length = shapes(task)

  class SyntheticEnv(gymnasium.Env):
    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

    def __init__(self):
      self._rng = np.random.default_rng(0)
      self._t = 0

    def reset(self, *, seed=None, options=None):
      if seed is not None:
        self._rng = np.random.default_rng(seed)
      self._t = 0
      return self._rng.standard_normal(obs_dim).astype(np.float32), {}

    def step(self, action):
      self._t += 1
      obs = self._rng.standard_normal(obs_dim).astype(np.float32)
      return obs, -1.0, False, self._t >= length, {"success": 0.0}

  return SyntheticEnv()


def dataset(task: str, episodes: int = DATASET_EPISODES, seed: int = 0) -> Dict[str, np.ndarray]:
  """`episodes` random episodes in the layout ogbench_data.load_task returns."""
  obs_dim, action_dim, length = shapes(task)
  rng = np.random.default_rng(seed)
  n = episodes * length
  obs = rng.standard_normal((n, obs_dim)).astype(np.float32)
  ends = (np.arange(n) % length == length - 1).astype(np.float32)
  return {"observations": obs,
          "actions": rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
          "rewards": -np.ones(n, np.float32), "masks": np.ones(n, np.float32),
          "terminals": ends,
          "next_observations": np.roll(obs, -1, axis=0)}
