"""BFN configs: best-of-N (N = 4) from a flow BC policy, no chunking, h = 1 (docs/methods.md)."""

from experiments.configs import common, qc_bfn

PRESETS, TASK_GROUPS = common.PRESETS, common.TASK_GROUPS
# The released BFN (h = 1) command uses N = 4, for acting and the critic target, on every preset.
OVERRIDES = {p: {"agent.num_act_samples": 4, "agent.num_target_samples": 4}
             for p in common.PRESETS}


def get_config(preset: str = "quick"):
  return qc_bfn.get_config(preset, method="bfn", chunk_len=1, overrides=OVERRIDES)
