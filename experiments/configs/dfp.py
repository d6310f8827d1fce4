"""DFP configs: `--config=experiments/configs/dfp.py:<preset>` (presets: common.py)."""

from dfp_jax import dfp
from experiments.configs import common

PRESETS, TASK_GROUPS = common.PRESETS, common.TASK_GROUPS


def get_config(preset: str = "quick", method: str = "dfp", **agent):
  c = common.make(method, dfp.get_config(), preset)
  if preset in common.OFFLINE_TASKS:
    # Pure offline RL (SPEC 7): no best-of-N', L_BC + lambda * L_topK from the start.
    c.agent.num_act_samples = 1
    c.agent.topk_offline = True
    c.agent.top_k, c.agent.num_candidates = (16, 32) if "4x4" in preset else (8, 16)
  c.agent.update(agent)
  return c
