"""MVP + top-K: DFP's top-K positives fitted with the MeanFlow loss (the backbone ablation).

The top-K term runs online only, as the paper's separate MVP and MVP + top-K rows
suggest; `--config.agent.topk_offline=True` runs it in both phases with the EMA
anchor from step 0, reset to the actor at the online switch, as the released MVP code
does (docs/methods.md).
"""

from experiments.configs import common, dfp, mvp

PRESETS, TASK_GROUPS = common.PRESETS, common.TASK_GROUPS
ABLATIONS = {k: v for k, v in dfp.ABLATIONS.items() if k in ("top_k", "topk_weight")}


def get_config(preset: str = "quick"):
  return mvp.get_config(preset, method="mvp_topk", use_topk=True)
