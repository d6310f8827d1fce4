"""The DFP agent on a problem whose best action is known."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dfp_jax.agents import base, dfp
from dfp_jax.parallel import example_keys


def _small_config(**kw):
  c = dfp.get_config()
  c.actor_hidden = (64, 64)
  c.critic_hidden = (64, 64)
  c.chunk_len = 1
  c.lr = 1e-3
  c.ema_tau = 0.05  # a fast anchor so a few hundred steps show the shift
  c.temperatures = (0.05, 0.2)
  c.update(kw)
  return c


def _bandit_batch(rng, n, obs_dim=2):
  """A bimodal dataset: actions near -0.6 or +0.6, equally often; only +0.6 is rewarded.

  Every transition ends its episode (masks 0), so Q(s, a) is the reward itself.
  """
  sign = rng.choice([-1.0, 1.0], size=n)
  actions = (0.6 * sign + 0.05 * rng.standard_normal(n)).astype(np.float32)[:, None]
  return {
      "observations": rng.standard_normal((n, obs_dim)).astype(np.float32),
      "actions": actions,
      "rewards": (sign > 0).astype(np.float32),
      "masks": np.zeros(n, np.float32),
      "valid": np.ones(n, np.float32),
      "next_observations": rng.standard_normal((n, obs_dim)).astype(np.float32),
  }


def _positive_fraction(agent, key, params=None):
  obs = jax.random.normal(key, (256, 2))
  chunks = dfp.sample_chunks(agent, agent.actor_params if params is None else params,
                             obs, example_keys(key, 256), 8)
  return float(jnp.mean(chunks[..., 0] > 0))


@pytest.fixture(scope="module")
def pretrained():
  """Offline phase: L_BC only; the policy learns both modes."""
  agent = dfp.create(_small_config(), obs_dim=2, action_dim=1, key=jax.random.PRNGKey(0))
  update = jax.jit(functools.partial(dfp.update, online=False))
  rng = np.random.default_rng(0)
  key = jax.random.PRNGKey(1)
  for _ in range(1000):
    key, k = jax.random.split(key)
    agent, info = update(agent, _bandit_batch(rng, 128), k)
  assert np.isfinite(float(info["actor/loss"])) and np.isfinite(float(info["critic/loss"]))
  return agent


def test_offline_bc_learns_both_modes(pretrained):
  frac = _positive_fraction(pretrained, jax.random.PRNGKey(5))
  assert 0.3 < frac < 0.7, frac
  # ...and the samples sit on the modes (|a| near 0.6), not in between.
  chunks = dfp.sample_chunks(pretrained, pretrained.actor_params,
                             jax.random.normal(jax.random.PRNGKey(6), (256, 2)),
                             example_keys(jax.random.PRNGKey(7), 256), 8)
  assert float(jnp.mean(jnp.abs(jnp.abs(chunks) - 0.6) < 0.2)) > 0.7


def test_critic_ranks_the_rewarded_mode_higher(pretrained):
  obs = jnp.zeros((1, 2))
  q = base.q_values(pretrained, pretrained.critic_params, obs, jnp.array([[[0.6], [-0.6]]]))
  assert float(q[0, 0] - q[0, 1]) > 0.5, q


def _online(agent, use_topk, topk_weight=0.5, steps=200):
  config = ml_collections.ConfigDict(agent.config)
  config.topk_weight = topk_weight
  config.use_topk = use_topk
  agent = dfp.start_online(agent).replace(config=ml_collections.FrozenConfigDict(config))
  update = jax.jit(functools.partial(dfp.update, online=True))
  rng = np.random.default_rng(1)
  key = jax.random.PRNGKey(2)
  for _ in range(steps):
    key, k = jax.random.split(key)
    agent, info = update(agent, _bandit_batch(rng, 128), k)
  return _positive_fraction(agent, jax.random.PRNGKey(5)), info


@pytest.mark.slow
def test_online_topk_update_shifts_policy_to_the_rewarded_mode(pretrained):
  control, _ = _online(pretrained, use_topk=False)
  frac, info = _online(pretrained, use_topk=True)
  # L_BC keeps pulling toward the 50/50 data (the batches here never contain online
  # data), so the two unit-RMS fields balance at a majority on the rewarded mode.
  assert control < 0.6, control
  assert frac > 0.6 and frac > control + 0.08, (frac, control)
  # The top-K positives are better than the average candidate.
  assert float(info["actor/topk_q_mean"]) > float(info["actor/candidate_q_mean"])
  # A larger lambda moves the balance further toward the rewarded mode.
  frac_strong, _ = _online(pretrained, use_topk=True, topk_weight=1.0)
  assert frac_strong > frac + 0.05, (frac_strong, frac)


def test_act_returns_the_best_of_n_under_the_critic(pretrained):
  obs = jax.random.normal(jax.random.PRNGKey(3), (16, 2))
  key = jax.random.PRNGKey(4)
  chosen = dfp.act(pretrained, obs, key, num_samples=32)
  samples = dfp.sample_chunks(pretrained, pretrained.actor_params, obs,
                              example_keys(key, 16), 32)
  q = base.q_values(pretrained, pretrained.critic_params, obs, samples)
  best = jnp.take_along_axis(samples, jnp.argmax(q, -1)[:, None, None], 1)[:, 0]
  np.testing.assert_allclose(chosen, best, atol=1e-6)
  assert float(jnp.abs(chosen).max()) <= 1.0
  assert float(jnp.mean(chosen[:, 0] > 0)) > 0.9  # best-of-N alone already prefers +0.6


def test_update_compiles_once_and_is_one_program():
  agent = dfp.create(_small_config(chunk_len=2), obs_dim=2, action_dim=1,
                     key=jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  calls = {"n": 0}

  def counted(agent, batch, key):
    calls["n"] += 1  # runs only while tracing
    return dfp.update(agent, batch, key, online=True)

  update = jax.jit(counted)
  for i in range(3):
    b = _bandit_batch(rng, 32)
    b["actions"] = np.repeat(b["actions"], 2, axis=1)
    agent, _ = update(agent, b, jax.random.PRNGKey(i))
  assert calls["n"] == 1
  assert int(agent.step) == 3
  # The whole update lowers to a single XLA module with no host callbacks.
  hlo = jax.jit(counted).lower(agent, b, jax.random.PRNGKey(0)).as_text()
  assert "custom_call_target=\"xla_python" not in hlo and "callback" not in hlo.lower()


@functools.lru_cache(maxsize=None)
def _one_update(precision):
  """One online update of a fresh agent on a fixed batch, traced under `precision`."""
  from dfp_jax.train.updates import matmul_precision
  agent = dfp.create(_small_config(), obs_dim=2, action_dim=1, key=jax.random.PRNGKey(0))
  batch = _bandit_batch(np.random.default_rng(0), 128)
  with matmul_precision(precision):  # traced (and so compiled) inside the context
    return jax.jit(functools.partial(dfp.update, online=True))(agent, batch,
                                                              jax.random.PRNGKey(3))


@pytest.mark.parametrize("precision", ["tf32", "bf16", "default"])
def test_lower_precision_matmuls_keep_the_update_finite_and_close_to_fp32(precision):
  """train.matmul_precision: one online update (BC + top-K drift, critic) per precision, from
  the same state, batch and key, against fp32. (A CPU computes every precision in float32, so
  here they agree exactly; on a GPU or TPU the tolerance is what is tested.)"""
  ref_agent, ref_info = _one_update("fp32")
  new_agent, new_info = _one_update(precision)
  for k in ("actor/loss", "critic/loss"):
    assert np.isfinite(float(new_info[k])), k
    np.testing.assert_allclose(float(new_info[k]), float(ref_info[k]), rtol=5e-2, atol=1e-3,
                               err_msg=k)
  for new, ref in zip(jax.tree.leaves(new_agent.actor_params), jax.tree.leaves(ref_agent.actor_params)):
    assert np.all(np.isfinite(new))
    np.testing.assert_allclose(new, ref, rtol=5e-2, atol=1e-3)


def test_offline_update_does_not_depend_on_use_topk():
  """Top-K acts only online: DFP and DFP without top-K run the same offline update, bit for bit
  (their `quick` runs' offline phases still differ: README, comparison on `quick`)."""
  batch = _bandit_batch(np.random.default_rng(0), 64)
  out = []
  for use_topk in (True, False):
    agent = dfp.create(_small_config(use_topk=use_topk), obs_dim=2, action_dim=1,
                       key=jax.random.PRNGKey(0))
    update = jax.jit(functools.partial(dfp.update, online=False))
    for i in range(2):
      agent, info = update(agent, batch, jax.random.PRNGKey(i))
    out.append(jax.device_get((agent.actor_params, agent.critic_params, info)))
  for x, y in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1])):
    np.testing.assert_array_equal(x, y)
  # ... while online, or offline with topk_offline (the offline-RL preset), the flag changes
  # it: the check above can tell the two configs apart.
  for online, extra in ((True, {}), (False, {"topk_offline": True})):
    actors = []
    for use_topk in (True, False):
      agent = dfp.create(_small_config(use_topk=use_topk, **extra), obs_dim=2, action_dim=1,
                         key=jax.random.PRNGKey(0))
      agent, _ = jax.jit(functools.partial(dfp.update, online=online))(agent, batch,
                                                                       jax.random.PRNGKey(0))
      actors.append(jax.device_get(agent.actor_params))
    assert any(not np.array_equal(x, y)
               for x, y in zip(jax.tree.leaves(actors[0]), jax.tree.leaves(actors[1]))), extra


def test_bottom_negatives_are_the_lowest_q_candidates_as_fixed_negatives_of_the_topk_term():
  """agent.num_bottom_negatives = 3: the top-K drift term is drift_loss with the 3 lowest-Q
  anchor candidates as explicit negatives; 0 is the term without them."""
  base_config = _small_config(num_candidates=8, top_k=2)
  batch = _bandit_batch(np.random.default_rng(3), 16)
  keys = example_keys(jax.random.PRNGKey(4), 16)
  losses = {}
  for bottom in (0, 3):
    config = ml_collections.FrozenConfigDict(dict(base_config, num_bottom_negatives=bottom))
    agent = dfp.create(config, obs_dim=2, action_dim=1, key=jax.random.PRNGKey(0))
    _, info = dfp.actor_loss(agent, agent.actor_params, batch, keys, use_topk=True)
    losses[bottom] = float(info["actor/topk_loss"])
  # The same term computed by hand: candidates and Q as the agent draws them, then drift_loss.
  from dfp_jax.per_example import fold, normal, repeat_obs
  c = agent.config
  obs = batch["observations"]
  gen = jnp.clip(agent.actor.apply({"params": agent.actor_params}, repeat_obs(obs, c.num_gen),
                                   normal(fold(keys, 0), c.num_gen, agent.chunk_size)), -1, 1)
  candidates, q = base.scored_samples(
      agent, lambda o, k, n: dfp.sample_chunks(agent, agent.anchor_params, o, k, n), obs,
      fold(keys, 1), c.num_candidates)
  order = np.argsort(np.asarray(q), axis=1)
  positives = np.take_along_axis(np.asarray(candidates), order[:, ::-1][:, :2, None], axis=1)
  negatives = np.take_along_axis(np.asarray(candidates), order[:, :3, None], axis=1)
  np.testing.assert_array_equal(dfp.bottom_candidates(q, candidates, 3), negatives)
  assert dfp.bottom_candidates(q, candidates, 0) is None
  drift = functools.partial(dfp.drifting.drift_loss, temperatures=c.temperatures,
                            kernel=c.kernel, affinity_floor=c.affinity_floor)
  np.testing.assert_allclose(losses[3], float(drift(gen, positives, negatives)[0]), rtol=1e-5)
  np.testing.assert_allclose(losses[0], float(drift(gen, positives)[0]), rtol=1e-5)
  assert abs(losses[3] - losses[0]) > 1e-4  # the negatives change the field


def test_bc_on_offline_chunks_only_averages_the_bc_term_over_the_marked_states():
  """train.bc_offline_only marks offline chunks (`offline` in the batch); L_BC is then
  drift_loss with that mask; without the mask it is the whole minibatch's."""
  config = ml_collections.FrozenConfigDict(_small_config())
  agent = dfp.create(config, obs_dim=2, action_dim=1, key=jax.random.PRNGKey(0))
  batch = _bandit_batch(np.random.default_rng(3), 16)
  keys = example_keys(jax.random.PRNGKey(4), 16)
  from dfp_jax.per_example import fold, normal, repeat_obs
  gen = jnp.clip(agent.actor.apply({"params": agent.actor_params},
                                   repeat_obs(batch["observations"], config.num_gen),
                                   normal(fold(keys, 0), config.num_gen, agent.chunk_size)), -1, 1)
  drift = functools.partial(dfp.drifting.drift_loss, temperatures=config.temperatures,
                            kernel=config.kernel, affinity_floor=config.affinity_floor)
  mask = (np.arange(16) < 6).astype(np.float32)
  _, whole = dfp.actor_loss(agent, agent.actor_params, batch, keys, use_topk=False)
  _, marked = dfp.actor_loss(agent, agent.actor_params, dict(batch, offline=mask), keys,
                             use_topk=False)
  target = batch["actions"][:, None]
  np.testing.assert_allclose(float(whole["actor/bc_loss"]), float(drift(gen, target)[0]),
                             rtol=1e-5)
  np.testing.assert_allclose(float(marked["actor/bc_loss"]),
                             float(drift(gen, target, sample_mask=mask)[0]), rtol=1e-5)
  assert abs(float(marked["actor/bc_loss"]) - float(whole["actor/bc_loss"])) > 1e-5
  # bc_mask_invalid: chunks that cross an episode end (valid 0) leave L_BC; with the offline
  # mask as well, L_BC averages over the states both keep.
  invalid = dfp.create(ml_collections.FrozenConfigDict(_small_config(bc_mask_invalid=True)),
                       obs_dim=2, action_dim=1, key=jax.random.PRNGKey(0))
  valid = (np.arange(16) % 3 != 0).astype(np.float32)
  _, masked = dfp.actor_loss(invalid, agent.actor_params, dict(batch, valid=valid), keys,
                             use_topk=False)
  np.testing.assert_allclose(float(masked["actor/bc_loss"]),
                             float(drift(gen, target, sample_mask=valid)[0]), rtol=1e-5)
  _, both = dfp.actor_loss(invalid, agent.actor_params, dict(batch, valid=valid, offline=mask),
                           keys, use_topk=False)
  np.testing.assert_allclose(float(both["actor/bc_loss"]),
                             float(drift(gen, target, sample_mask=valid * mask)[0]), rtol=1e-5)
