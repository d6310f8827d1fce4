"""The agents: method name -> agent module. Every module has the interface in `base.py`."""

from dfp_jax.agents import bfn, dfp, fql, mvp

METHODS = {
    "dfp": dfp, "dfp_no_topk": dfp,
    "qc_fql": fql, "fql": fql,
    "qc_bfn": bfn, "bfn": bfn,
    "mvp": mvp, "mvp_topk": mvp,
}


def get(method: str):
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
  return METHODS[method]
