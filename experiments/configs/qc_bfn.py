"""QC-BFN configs: best-of-N (N = 32) from a flow BC policy on chunks, h = 5 (docs/methods.md)."""

from dfp_jax.agents import bfn
from experiments.configs import common

PRESETS, TASK_GROUPS = common.PRESETS, common.TASK_GROUPS


def get_config(preset: str = "quick", method: str = "qc_bfn", chunk_len: int = 5,
               overrides=None):
  return common.make(method, bfn.get_config(), preset, overrides, chunk_len)
