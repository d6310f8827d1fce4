"""MVP configs: one-step MeanFlow policy, best-of-N acting, h = 5 (docs/methods.md;
presets: common.py)."""

from dfp_jax.agents import mvp
from experiments.configs import common

PRESETS, TASK_GROUPS = common.PRESETS, common.TASK_GROUPS
# MVP's own values per preset, applied after common.PRESET_OVERRIDES.
OVERRIDES = {
    # The authors found no instantaneous-velocity constraint best on cube-triple (docs/methods.md).
    **{p: {"agent.velocity_weight": 0.0} for p in common.ONLINE_TASKS
       if p.startswith("cube-triple")},
    # Robomimic's K for the top-K variant (Table 5).
    **{p: {"agent.top_k": 2} for p in common.ROBOMIMIC_TASKS + tuple(common.QUICK_ROBOMIMIC)},
}


def get_config(preset: str = "quick", method: str = "mvp", use_topk: bool = False):
  c = common.make(method, mvp.get_config(), preset, OVERRIDES)
  c.agent.use_topk = use_topk
  return c
