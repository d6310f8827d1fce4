"""BFN configs: best-of-N (N = 32) from a flow BC policy, no chunking, h = 1 (SPEC 9)."""

from experiments.configs import common, qc_bfn

PRESETS, TASK_GROUPS = common.PRESETS, common.TASK_GROUPS


def get_config(preset: str = "quick"):
  return qc_bfn.get_config(preset, method="bfn", chunk_len=1)
