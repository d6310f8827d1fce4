"""MemberEnvs and EnvPool: chunk queues, key consumption, episodes, batched evaluation, and
environment workers (same transitions as in-process stepping; a dead worker is one error)."""

import os
import signal

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfp_jax import agents
from dfp_jax.train import updates
from dfp_jax.train.env_pool import EnvPool, EnvWorkerError
from dfp_jax.train.envs import Episodes, MemberEnvs, env_seed
from experiments.configs import dfp as dfp_configs


class CountingEnv(gymnasium.Env):
  """1-D env: obs = [t, reset seed]; success when the summed action exceeds 2; ends at t = 6."""

  observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
  action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)

  def reset(self, *, seed=None, options=None):
    self.t, self.total, self.seed = 0, 0.0, seed
    return np.array([0.0, seed or 0], np.float32), {}

  def step(self, action):
    self.t += 1
    self.total += float(action[0])
    success = self.total > 2.0
    return (np.array([self.t, self.seed], np.float32), float(success) - 1.0, success,
            self.t >= 6 and not success, {"success": float(success)})


class ActionSumEnv(gymnasium.Env):
  """Observations follow the actions taken (obs = [t / 10, seed % 7 / 7, running sum]); the
  reward is the first action coordinate, so an episode's return shows any change of action;
  success when the sum exceeds 1, else the episode ends at t = 12."""

  observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (3,), np.float32)
  action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)

  def _obs(self):
    return np.array([self.t / 10, self.seed % 7 / 7, self.total], np.float32)

  def reset(self, *, seed=None, options=None):
    self.t, self.total, self.seed = 0, 0.0, seed or 0
    return self._obs(), {}

  def step(self, action):
    self.t += 1
    self.total += float(action[0])
    success = self.total > 1.0
    return self._obs(), float(action[0]), success, self.t >= 12, {"success": float(success)}


def _act(agents, obs, keys):
  """Chunks of 3 actions, all equal to the member's agent value."""
  del obs, keys
  return jnp.repeat(agents[:, None].astype(jnp.float32), 3, axis=1)


def _eval_act(agents, obs, keys, episode, chunk):
  del keys, episode, chunk
  return jnp.broadcast_to(agents[:, None, None], obs.shape[:2] + (3,)).astype(jnp.float32)


def test_only_members_with_an_empty_queue_act_and_consume_a_key():
  envs = MemberEnvs(CountingEnv, [0, 1], chunk_len=3, act_fn=_act)
  keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
  queues = [[], [np.zeros(1)] * 2]  # member 1 still has two actions queued
  actions, new_keys = envs.next_actions(jnp.array([0.5, 0.5]), [np.zeros(2)] * 2, keys, queues,
                                        [True, True])
  assert len(queues[0]) == 2 and len(queues[1]) == 1  # member 0 refilled a chunk of 3, used one
  assert not np.array_equal(new_keys[0], keys[0])  # member 0 consumed a key
  np.testing.assert_array_equal(new_keys[1], keys[1])  # member 1 did not
  np.testing.assert_array_equal(actions[1], np.zeros(1))
  # An inactive member neither acts nor consumes.
  _, newer = envs.next_actions(jnp.array([0.5, 0.5]), [np.zeros(2)] * 2, new_keys,
                               [[], []], [False, True])
  np.testing.assert_array_equal(newer[0], new_keys[0])


class Buffer:
  def __init__(self):
    self.rows = []

  def add(self, t):
    self.rows.append(t)


@pytest.mark.parametrize("workers", [0, 2])
def test_steps_fill_buffers_count_episodes_and_reseed_resets(workers):
  envs = MemberEnvs(CountingEnv, [3, 4], chunk_len=3, act_fn=_act, workers=workers)
  try:
    episodes, buffers = Episodes.empty(2), [Buffer(), Buffer()]
    envs.start(episodes)
    assert episodes.obs[0][1] == np.float32(env_seed(3, 0))
    keys = jnp.stack([jax.random.PRNGKey(0)] * 2)
    agents_ = jnp.array([1.0, 0.1])  # member 0 succeeds at step 3, member 1 times out at step 6
    for _ in range(6):
      keys = envs.step(agents_, keys, episodes, buffers)
    assert episodes.count == [2, 1]
    assert episodes.successes == [[1.0, 1.0], [0.0]]
    assert len(buffers[0].rows) == 6 and buffers[0].rows[2]["masks"] == 0.0
    assert buffers[1].rows[5]["terminals"] == 1.0 and buffers[1].rows[5]["masks"] == 1.0
    assert episodes.obs[1][1] == np.float32(env_seed(4, 1))  # reset with the next episode's seed
    # Replaying the episode so far rebuilds the same observation.
    episodes.actions[0] = [np.ones(1, np.float32)]
    assert envs.replay(episodes)[0][0] == 1.0
  finally:
    envs.close()


def test_evaluation_reports_success_return_and_length_per_member():
  envs = MemberEnvs(CountingEnv, [0, 1], chunk_len=3, act_fn=_act, eval_act_fn=_eval_act,
                    eval_envs=2)
  keys = jnp.zeros((2, 2), jnp.uint32)
  results, new_keys, per_episode = envs.evaluate(jnp.array([1.0, 0.1]), keys, num_episodes=3,
                                                 first_seed=100)
  assert results[0] == {"success": 1.0, "return": -2.0, "length": 3.0}
  assert results[1] == {"success": 0.0, "return": -6.0, "length": 6.0}
  np.testing.assert_array_equal(per_episode["length"], [[3, 3, 3], [6, 6, 6]])
  assert not np.array_equal(new_keys, keys)  # one split per evaluation


def _dfp_members(num: int):
  config = dfp_configs.get_config("smoke").agent
  method = agents.get("dfp")
  keys = jax.random.split(jax.random.PRNGKey(0), num)
  states = jax.vmap(lambda k: method.create(config, 3, 2, k))(keys)
  return method, config, states


def test_evaluation_episodes_do_not_depend_on_how_many_run_side_by_side_or_where():
  """Each (member, episode) acts from its own key stream: eval_envs = 1, 3 and = episodes,
  in-process or in two workers, give the same per-episode success and return."""
  method, config, states = _dfp_members(2)
  keys = jax.random.split(jax.random.PRNGKey(7), 2)
  runs = {}
  for workers, width in ((0, 1), (0, 5), (2, 3)):
    envs = MemberEnvs(ActionSumEnv, [0, 1], config.chunk_len, updates.make_act_fn(method),
                      eval_act_fn=updates.make_eval_act_fn(method), workers=workers,
                      eval_envs=width)
    try:
      runs[(workers, width)] = envs.evaluate(states, keys, 5, 100)[2]
    finally:
      envs.close()
  ref = runs[(0, 1)]
  assert len(set(np.round(ref["return"].ravel(), 6))) > 3  # the episodes do differ
  for other in runs.values():
    for k in ("success", "return", "length"):
      np.testing.assert_array_equal(other[k], ref[k])


def _random_walk(pool, steps=40):
  rng = np.random.default_rng(0)
  trace = [pool.reset({0: 5, 1: 6, 2: 7})]
  for t in range(steps):
    trace.append(pool.step({s: rng.uniform(-1, 1, 2).astype(np.float32)
                            for s in range(3) if (s + t) % 3}))  # some slots skip a step
    if t == 20:
      trace.append(pool.reset({1: 9}))
  return trace


def test_a_pool_with_workers_steps_as_the_environments_in_process_would():
  env = ActionSumEnv()
  local = EnvPool(ActionSumEnv, 3, 0, env.observation_space, env.action_space)
  remote = EnvPool(ActionSumEnv, 3, 2, env.observation_space, env.action_space)
  try:
    assert len(remote.processes) == 2 and remote.where(2) == (0, 1)
    for a, b in zip(_random_walk(local), _random_walk(remote)):
      assert a.keys() == b.keys()
      for slot in a:
        for x, y in zip(a[slot] if isinstance(a[slot], tuple) else (a[slot],),
                        b[slot] if isinstance(b[slot], tuple) else (b[slot],)):
          np.testing.assert_array_equal(x, y)
  finally:
    local.close()
    remote.close()
  assert not any(p.is_alive() for p in remote.processes + [])


class FailingEnv(ActionSumEnv):
  def step(self, action):
    if action[0] > 0.5:
      raise RuntimeError("mujoco: simulation unstable\nmore detail")
    return super().step(action)


def test_a_killed_worker_or_a_failing_environment_is_one_error_naming_the_worker():
  env = ActionSumEnv()
  pool = EnvPool(ActionSumEnv, 4, 2, env.observation_space, env.action_space)
  pool.reset({0: 1, 1: 2})
  processes = pool.processes
  os.kill(processes[1].pid, signal.SIGKILL)
  processes[1].join(5)
  with pytest.raises(EnvWorkerError) as e:
    pool.step({0: np.zeros(2, np.float32), 1: np.zeros(2, np.float32)})
  assert str(e.value) == "environment worker 1 stopped (killed by SIGKILL)"
  assert e.value.slots == (1, 3)
  assert not any(p.is_alive() for p in processes)  # the pool stopped the other worker too

  pool = EnvPool(FailingEnv, 2, 2, env.observation_space, env.action_space)
  pool.reset({0: 1, 1: 2})
  with pytest.raises(EnvWorkerError, match=r"^environment worker 0 stopped \(RuntimeError: "
                                           r"mujoco: simulation unstable\)$"):
    pool.step({0: np.ones(2, np.float32), 1: np.zeros(2, np.float32)})
