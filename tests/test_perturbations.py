"""Perturbation wrappers: strength 0 is no perturbation, each perturbation does what it says,
and an episode's perturbation depends on its seed alone (the same for every policy)."""

import gymnasium as gym
import numpy as np
import pytest

from dfp_jax import perturbations as P
from dfp_jax.data import ogbench_data

TASK = "cube-single-play-singletask-task2-v0"


class Recorder(gym.Env):
  """A 3-dimensional environment that records the actions it executes; obs = step count."""

  def __init__(self):
    self.action_space = gym.spaces.Box(-np.ones(2, np.float32), np.ones(2, np.float32))
    self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    self.executed = []

  def reset(self, *, seed=None, options=None):
    self.t, self.executed = 0, []
    return np.zeros(3, np.float32), {}

  def step(self, action):
    self.t += 1
    self.executed.append(np.array(action))
    return np.full(3, self.t, np.float32), 0.0, False, self.t >= 400, {}


def _episode(env, policy, seed=7, steps=400):
  """Observations and chosen actions of one seeded episode under `policy(t, obs)`."""
  obs, chosen = [env.reset(seed=seed)[0]], []
  for t in range(steps):
    chosen.append(policy(t, obs[-1]))
    obs.append(env.step(chosen[-1])[0])
  return np.array(obs), np.array(chosen)


def _policies():
  rng = np.random.default_rng(0)
  a = rng.uniform(-0.3, 0.3, (400, 2)).astype(np.float32)
  b = rng.uniform(-0.3, 0.3, (400, 2)).astype(np.float32)
  return (lambda t, o: a[t]), (lambda t, o: b[t])


def test_parsing_and_checks_are_one_line_errors():
  assert P.parse("obs_noise=0.1, latency=2") == (("obs_noise", 0.1), ("latency", 2.0))
  assert P.parse("") == ()
  assert P.parse_sweep("sticky=0;0.1;0.5") == ("sticky", [0.0, 0.1, 0.5])
  for text, message in [("nosuch=1", "unknown perturbation 'nosuch'; choose from obs_noise"),
                        ("sticky=1.5", "sticky=1.5: must be in [0, 1]"),
                        ("latency=1.5", "latency=1.5: must be an integer >= 0"),
                        ("latency=-1", "latency=-1: must be an integer >= 0"),
                        ("obs_noise=-0.1", "obs_noise=-0.1: must be >= 0"),
                        ("mass=-1", "mass=-1: must be > -1"),
                        ("push=nan", "push=nan: must be a finite number"),
                        ("push=x", "push=x: 'x' is not a number"),
                        ("push", "expected NAME=STRENGTH"),
                        ("push=1,push=2", "push is given twice")]:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
      P.parse(text)
    assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="a strength is given twice"):
    P.parse_sweep("push=1;1")
  with pytest.raises(ValueError, match="expected NAME=S1;S2"):
    P.parse_sweep("push=;")
  with pytest.raises(ValueError, match="needs the offline data's observation std"):
    P.wrap(Recorder(), [("obs_noise", 0.1)])


@pytest.mark.parametrize("name", P.NAMES)
def test_strength_zero_is_the_unperturbed_environment_bit_for_bit(name):
  """A cube-single episode under an observation-dependent policy, wrapped at strength 0,
  equals the bare environment's; at a positive strength it does not."""
  w = np.random.default_rng(1).normal(size=(28, 5)).astype(np.float32) * 0.2

  def policy(t, obs):
    return np.tanh(obs @ w + np.sin(t / 7)).astype(np.float32)

  make = lambda: ogbench_data.make_env(TASK, success_timing="pre")  # noqa: E731
  std = np.full(28, 0.05)
  bare, _ = _episode(make(), policy, steps=120)
  zero, _ = _episode(P.wrap(make(), [(name, 0.0)], std), policy, steps=120)
  np.testing.assert_array_equal(zero, bare)
  if name not in ("mass", "friction"):  # their effect needs contact: tested on the model below
    strength = {"latency": 2.0, "sticky": 0.5, "push": 2.0}.get(name, 0.3)
    perturbed, _ = _episode(P.wrap(make(), [(name, strength)], std), policy, steps=120)
    assert not np.allclose(perturbed, bare)


def test_noise_latency_and_sticky_do_what_they_say_and_depend_on_the_episode_seed_only():
  first, second = _policies()
  # Action noise: the same draw for both policies, sigma x half the box width.
  env = P.wrap(Recorder(), [("action_noise", 0.05)])
  noise = []
  for policy in (first, second):
    _, chosen = _episode(env, policy)
    noise.append(np.array(env.unwrapped.executed) - chosen)
  np.testing.assert_allclose(noise[0], noise[1], atol=1e-6)
  assert 0.04 < noise[0].std() < 0.06
  _, chosen = _episode(env, first, seed=8)
  assert not np.allclose(np.array(env.unwrapped.executed) - chosen, noise[0])
  # Latency: the action chosen k steps earlier, the box's centre before.
  env = P.wrap(Recorder(), [("latency", 3)])
  _, chosen = _episode(env, first)
  executed = np.array(env.unwrapped.executed)
  np.testing.assert_array_equal(executed[:3], np.zeros((3, 2)))
  np.testing.assert_array_equal(executed[3:], chosen[:-3])
  # Sticky: the previous executed action with probability p, at the same steps for both.
  env = P.wrap(Recorder(), [("sticky", 0.25)])
  repeats = []
  for policy in (first, second):
    _, chosen = _episode(env, policy)
    executed = np.array(env.unwrapped.executed)
    repeated = np.all(executed[1:] == executed[:-1], axis=1)
    np.testing.assert_array_equal(executed[1:][~repeated], chosen[1:][~repeated])
    repeats.append(repeated)
  np.testing.assert_array_equal(repeats[0], repeats[1])
  assert 0.18 < repeats[0].mean() < 0.32
  # Observation noise: sigma x std per dimension, the same draw for both policies.
  std = np.array([1.0, 0.1, 0.0])
  env = P.wrap(Recorder(), [("obs_noise", 0.5)], std)
  seen = [_episode(env, policy)[0] - np.arange(401)[:, None] for policy in (first, second)]
  np.testing.assert_array_equal(seen[0], seen[1])
  np.testing.assert_allclose(seen[0].std(axis=0), 0.5 * std, rtol=0.15)
  # Composed: each wrapper keeps its own stream (noise unchanged by an added latency).
  env = P.wrap(Recorder(), [("obs_noise", 0.5), ("latency", 2)], std)
  np.testing.assert_array_equal(_episode(env, first)[0] - np.arange(401)[:, None], seen[0])


def test_dynamics_scale_the_objects_of_ogbench_and_robosuite_models_once_per_reset():
  env = P.wrap(ogbench_data.make_env(TASK, success_timing="pre"), [("mass", 1.0),
                                                                   ("friction", -0.5)])
  model, _ = P.mujoco_handles(env)
  (cube,) = P.free_objects(model)
  mass = model.body_mass[cube]
  robot_mass = model.body_mass[model.body_rootid != cube].copy()
  objects, partners = P.object_contact_geoms(model)
  pairs = [(o, g) for o in objects for g in partners if g != o]
  # The gripper pads' priority wins their contacts with the cube, the floor's equal friction
  # its own: scaling the cube's geoms alone would leave both contacts as they were.
  import mujoco
  assert {model.geom_priority[g] for _, g in pairs} == {0, 1} and "floor" in {
      mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) for _, g in pairs}
  friction = [P.contact_friction(model, *pair) for pair in pairs]
  for seed in (0, 1):  # OGBench keeps its model: scaled from the built values, not compounded
    env.reset(seed=seed)
    assert model.body_mass[cube] == pytest.approx(2 * mass)
    np.testing.assert_allclose([P.contact_friction(model, *pair) for pair in pairs],
                               0.5 * np.array(friction))
    np.testing.assert_array_equal(model.body_mass[model.body_rootid != cube], robot_mass)
  # A push moves the cube at the drawn step, and nothing before it.
  policy = lambda t, o: np.zeros(5, np.float32)  # noqa: E731
  make = lambda: ogbench_data.make_env(TASK, success_timing="pre")  # noqa: E731
  bare, _ = _episode(make(), policy, steps=100)
  pushed_env = P.wrap(make(), [("push", 2.0)])
  pushed, _ = _episode(pushed_env, policy, steps=100)
  when = pushed_env.when
  assert 0 <= when < 100
  np.testing.assert_allclose(pushed[:when + 1], bare[:when + 1], atol=1e-9)
  assert np.abs(pushed[when + 2:] - bare[when + 2:]).max() > 0.01
  again = P.wrap(make(), [("push", 2.0)])
  again.reset(seed=7)
  assert (again.when, again.body) == (when, pushed_env.body)
  np.testing.assert_array_equal(again.force, pushed_env.force)
  # robosuite builds a new model at every reset: scaled again, from its own values.
  from dfp_jax.data import robomimic_env, robomimic_generate
  lift = P.wrap(robomimic_env.make_env(robomimic_generate.env_meta("lift"), "lift"),
                [("mass", 2.0), ("friction", 1.0)])
  for seed in (0, 1):
    lift.reset(seed=seed)
    model, _ = P.mujoco_handles(lift)
    (cube,) = P.free_objects(model)
    built = robomimic_env.make_env(robomimic_generate.env_meta("lift"), "lift")
    built.reset(seed=seed)
    original, _ = P.mujoco_handles(built)
    assert model.body_mass[cube] == pytest.approx(3 * original.body_mass[cube])
    objects, partners = P.object_contact_geoms(original)
    pairs = [(o, g) for o in objects for g in partners if g != o]
    assert pairs
    np.testing.assert_allclose([P.contact_friction(model, *pair) for pair in pairs],
                               [2 * P.contact_friction(original, *pair) for pair in pairs])
  with pytest.raises(ValueError, match="need a MuJoCo environment"):
    P.wrap(Recorder(), [("mass", 1.0)]).reset(seed=0)
