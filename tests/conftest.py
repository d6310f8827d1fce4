import os
import sys

import pytest

# Tests import `experiments` from the repository root, whichever directory pytest runs in.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def tiny_cube_single(tmp_path_factory):
  """A tiny generated cube-single play dataset (3 episodes of 60 steps) and its directory."""
  from dfp_jax.data import ogbench_generate
  out = tmp_path_factory.mktemp("ogbench")
  ogbench_generate.generate("cube-single-play-v0", 3, str(out), episode_length=60,
                            val_episodes=1, num_workers=1, progress=False)
  return str(out)
