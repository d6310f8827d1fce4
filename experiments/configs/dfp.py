"""DFP configs: `--config=experiments/configs/dfp.py:<preset>` (presets: common.py)."""

from dfp_jax.agents import dfp
from experiments.configs import common

PRESETS, TASK_GROUPS = common.PRESETS, common.TASK_GROUPS
# The paper's ablations, one `--ablation=<name>` each: name -> (config field, values).
ABLATIONS = {
    "top_k": ("agent.top_k", [1, 2, 4, 8]),                   # K, with N = 16
    "topk_weight": ("agent.topk_weight", [0.1, 0.5, 1.0, 5.0]),  # lambda
    # Kernel temperature sets R: Table 5's OGBench {0.05} and Robomimic {0.005, 0.05}, the
    # released drift.yaml's {0.1} (docs/fidelity.md), and a smaller and a larger one.
    "temperatures": ("agent.temperatures",
                     [(0.005,), (0.05,), (0.1,), (0.2,), (0.005, 0.05)]),
}

# Pure offline RL (docs/fidelity.md): no best-of-N', L_BC + lambda * L_topK from the start,
# K/N = 8/16.
_OFFLINE_RL = {"agent.num_act_samples": 1, "agent.topk_offline": True, "agent.top_k": 8,
               "agent.num_candidates": 16}
# DFP's own values per preset, applied after common.PRESET_OVERRIDES.
OVERRIDES = {
    **{p: _OFFLINE_RL for p in common.OFFLINE_TASKS},
    "offline-puzzle-4x4-task4": {**_OFFLINE_RL, "agent.top_k": 16, "agent.num_candidates": 32},
    # Table 5's Robomimic K and temperatures, also on the quick-* presets.
    **{p: {"agent.top_k": 2, "agent.temperatures": (0.005, 0.05)}
       for p in common.ROBOMIMIC_TASKS + tuple(common.QUICK_ROBOMIMIC)},
}


def get_config(preset: str = "quick", method: str = "dfp", **agent):
  c = common.make(method, dfp.get_config(), preset, OVERRIDES)
  c.agent.update(agent)
  return c
