"""SeedEnvs on a fake environment: chunk queues, key consumption, episodes, evaluation."""

import jax
import jax.numpy as jnp
import numpy as np

from dfp_jax.train.envs import Episodes, SeedEnvs, env_seed


class CountingEnv:
  """1-D env: obs = [t, reset seed]; success when the summed action exceeds 2; ends at t = 6."""

  class _Space:
    def __init__(self, shape):
      self.shape = shape

  observation_space, action_space = _Space((2,)), _Space((1,))

  def reset(self, seed=None):
    self.t, self.total, self.seed = 0, 0.0, seed
    return np.array([0.0, seed or 0], np.float32), {}

  def step(self, action):
    self.t += 1
    self.total += float(action[0])
    success = self.total > 2.0
    return (np.array([self.t, self.seed], np.float32), float(success) - 1.0, success,
            self.t >= 6 and not success, {"success": float(success)})


def _act(agents, obs, keys):
  """Chunks of 3 actions, all equal to the seed's agent value."""
  del obs, keys
  return jnp.repeat(agents[:, None].astype(jnp.float32), 3, axis=1)


def test_only_seeds_with_an_empty_queue_act_and_consume_a_key():
  envs = SeedEnvs(CountingEnv, [0, 1], chunk_len=3, act_fn=_act)
  keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
  queues = [[], [np.zeros(1)] * 2]  # seed 1 still has two actions queued
  actions, new_keys = envs.next_actions(jnp.array([0.5, 0.5]), [np.zeros(2)] * 2, keys, queues,
                                        [True, True])
  assert len(queues[0]) == 2 and len(queues[1]) == 1  # seed 0 refilled a chunk of 3, used one
  assert not np.array_equal(new_keys[0], keys[0])  # seed 0 consumed a key
  np.testing.assert_array_equal(new_keys[1], keys[1])  # seed 1 did not
  np.testing.assert_array_equal(actions[1], np.zeros(1))
  # An inactive seed neither acts nor consumes.
  _, newer = envs.next_actions(jnp.array([0.5, 0.5]), [np.zeros(2)] * 2, new_keys,
                               [[], []], [False, True])
  np.testing.assert_array_equal(newer[0], new_keys[0])


def test_steps_fill_buffers_count_episodes_and_reseed_resets():
  class Buffer:
    def __init__(self):
      self.rows = []

    def add(self, t):
      self.rows.append(t)

  envs = SeedEnvs(CountingEnv, [3, 4], chunk_len=3, act_fn=_act)
  episodes, buffers = Episodes.empty(2), [Buffer(), Buffer()]
  envs.start(episodes)
  assert episodes.obs[0][1] == env_seed(3, 0)
  keys = jnp.stack([jax.random.PRNGKey(0)] * 2)
  agents = jnp.array([1.0, 0.1])  # seed 0 succeeds at step 3, seed 1 times out at step 6
  for _ in range(6):
    keys = envs.step(agents, keys, episodes, buffers)
  assert episodes.count == [2, 1]
  assert episodes.successes == [[1.0, 1.0], [0.0]]
  assert len(buffers[0].rows) == 6 and buffers[0].rows[2]["masks"] == 0.0
  assert buffers[1].rows[5]["terminals"] == 1.0 and buffers[1].rows[5]["masks"] == 1.0
  assert episodes.obs[1][1] == env_seed(4, 1)  # reset with the next episode's seed
  # Replaying the episode so far rebuilds the same observation.
  episodes.actions[0] = [np.ones(1, np.float32)]
  assert envs.replay(episodes)[0][0] == 1.0


def test_evaluation_reports_success_return_and_length_per_seed():
  envs = SeedEnvs(CountingEnv, [0, 1], chunk_len=3, act_fn=_act)
  keys = jnp.zeros((2, 2), jnp.uint32)
  results, _ = envs.evaluate(jnp.array([1.0, 0.1]), keys, num_episodes=2, first_seed=100)
  assert results[0] == {"success": 1.0, "return": -2.0, "length": 3.0}
  assert results[1] == {"success": 0.0, "return": -6.0, "length": 6.0}
