"""Training-step throughput and best-of-N' action latency, printed as a table.

  python -m experiments.benchmark [--presets=cube-double-task2,quick] [--iters=20]

Times one jitted call at a time (block_until_ready after each), after a
warm-up call that compiles; inputs are random arrays of the task's sizes.
"""

import functools
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from dfp_jax import dfp
from experiments.configs import dfp as dfp_configs

flags.DEFINE_list("presets", ["cube-double-task2", "quick"], "Config presets to measure.")
flags.DEFINE_integer("iters", 20, "Timed calls per measurement.")
flags.DEFINE_integer("obs_dim", 40, "Observation size (cube-double: 40).")
flags.DEFINE_integer("action_dim", 5, "Action size (OGBench manipulation: 5).")
FLAGS = flags.FLAGS


def time_calls(fn, args_fn, iters):
  """Median milliseconds per call of fn(*args_fn(i)), after one compiling call."""
  jax.block_until_ready(fn(*args_fn(0)))
  times = []
  for i in range(iters):
    args = args_fn(i + 1)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return 1e3 * float(np.median(times))


def measure(config, obs_dim, action_dim, iters):
  ac, batch_size = config.agent, config.train.batch_size
  agent = dfp.create(ac, obs_dim, action_dim, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  s = ac.chunk_len * action_dim
  batch = {
      "observations": jnp.asarray(rng.standard_normal((batch_size, obs_dim)), jnp.float32),
      "actions": jnp.asarray(rng.uniform(-1, 1, (batch_size, s)), jnp.float32),
      "rewards": -jnp.ones(batch_size), "masks": jnp.ones(batch_size),
      "valid": jnp.ones(batch_size),
      "next_observations": jnp.asarray(rng.standard_normal((batch_size, obs_dim)), jnp.float32),
  }
  row = {}
  for name, use_topk in (("offline", False), ("online", True)):
    update = jax.jit(functools.partial(dfp.update, use_topk=use_topk))
    row[f"{name} ms/step"] = time_calls(
        lambda a, k: update(a, batch, k)[0], lambda i: (agent, jax.random.PRNGKey(i)), iters)
  act = jax.jit(dfp.act)
  obs = batch["observations"][0]
  row["act ms/call"] = time_calls(act, lambda i: (agent, obs, jax.random.PRNGKey(i)), iters)
  row["hidden"] = "x".join(str(w) for w in ac.actor_hidden)
  row["batch"] = batch_size
  row["N/K/N'"] = f"{ac.num_candidates}/{ac.top_k}/{ac.num_act_samples}"
  return row


def main(argv):
  del argv
  dev = jax.devices()[0]
  print(f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, "
        f"host: {platform.processor() or platform.machine()}, jax {jax.__version__}")
  cols = ["preset", "hidden", "batch", "N/K/N'", "offline ms/step", "online ms/step",
          "online steps/s", "act ms/call"]
  print("| " + " | ".join(cols) + " |")
  print("|" + "---|" * len(cols))
  for preset in FLAGS.presets:
    row = measure(dfp_configs.get_config(preset), FLAGS.obs_dim, FLAGS.action_dim, FLAGS.iters)
    row["preset"] = preset
    row["online steps/s"] = 1e3 / row["online ms/step"]
    print("| " + " | ".join(f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c])
                            for c in cols) + " |", flush=True)


if __name__ == "__main__":
  app.run(main)
