"""DFP without the top-K loss: L_BC only, improvement by best-of-N' only (docs/methods.md)."""

from experiments.configs import common, dfp

PRESETS, TASK_GROUPS = common.PRESETS, common.TASK_GROUPS


def get_config(preset: str = "quick"):
  return dfp.get_config(preset, method="dfp_no_topk", use_topk=False, topk_offline=False)
