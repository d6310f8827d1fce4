"""MVP + top-K: DFP's top-K positives fitted with the MeanFlow loss (the backbone ablation)."""

from experiments.configs import common, mvp

PRESETS, TASK_GROUPS = common.PRESETS, common.TASK_GROUPS


def get_config(preset: str = "quick"):
  return mvp.get_config(preset, method="mvp_topk", use_topk=True)
