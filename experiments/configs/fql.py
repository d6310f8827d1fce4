"""FQL configs: flow Q-learning without chunking, h = 1, alpha = 100 (docs/methods.md)."""

from experiments.configs import common, qc_fql

PRESETS, TASK_GROUPS = common.PRESETS, common.TASK_GROUPS


def get_config(preset: str = "quick"):
  return qc_fql.get_config(preset, method="fql", chunk_len=1)
