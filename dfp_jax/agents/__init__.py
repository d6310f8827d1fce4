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


def method_name(config) -> str:
  """The method a config (a ConfigDict or its JSON) trains, by agent and variant switch:
  the DFP agent with `agent.use_topk` off is dfp_no_topk, the MVP agent with it on mvp_topk,
  however the run was configured; any other method is its `method` field."""
  method, agent = config["method"], config["agent"]
  use_topk = agent.get("use_topk") if hasattr(agent, "get") else None
  if use_topk is None or METHODS.get(method) not in (dfp, mvp):
    return method
  if METHODS[method] is dfp:
    return "dfp" if use_topk else "dfp_no_topk"
  return "mvp_topk" if use_topk else "mvp"
