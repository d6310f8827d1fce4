"""MVP configs: one-step MeanFlow policy, best-of-N acting, h = 5 (SPEC 9; presets: common.py)."""

from dfp_jax.agents import mvp
from experiments.configs import common

PRESETS, TASK_GROUPS = common.PRESETS, common.TASK_GROUPS


def get_config(preset: str = "quick", method: str = "mvp", use_topk: bool = False):
  c = common.make(method, mvp.get_config(), preset)
  c.agent.use_topk = use_topk
  if preset.startswith("cube-triple"):
    c.agent.velocity_weight = 0.0  # the authors found no IVC best on cube-triple (SPEC 9)
  return c
