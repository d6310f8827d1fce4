"""QC-FQL configs: FQL on action chunks, h = 5, alpha = 100 (SPEC 9; presets: common.py)."""

from dfp_jax.agents import fql
from experiments.configs import common

PRESETS, TASK_GROUPS = common.PRESETS, common.TASK_GROUPS


def get_config(preset: str = "quick", method: str = "qc_fql", chunk_len: int = 5):
  return common.make(method, fql.get_config(), preset, chunk_len)
