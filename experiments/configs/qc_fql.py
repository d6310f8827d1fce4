"""QC-FQL configs: FQL on action chunks, h = 5, alpha = 100 (docs/methods.md;
presets: common.py)."""

from dfp_jax.agents import fql
from experiments.configs import common

PRESETS, TASK_GROUPS = common.PRESETS, common.TASK_GROUPS
# FQL acts with its one-step policy and bootstraps from one sample on every preset (the
# presets' best-of-N' and best-of-N target values are for the best-of-N methods).
OVERRIDES = {p: {"agent.num_act_samples": 1, "agent.num_target_samples": 1}
             for p in common.PRESETS}


def get_config(preset: str = "quick", method: str = "qc_fql", chunk_len: int = 5):
  return common.make(method, fql.get_config(), preset, OVERRIDES, chunk_len)
