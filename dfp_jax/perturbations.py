"""Perturbed environments for robustness evaluation: composable gymnasium wrappers.

The paper leaves open how a kernel-based drifting field copes with real-world
noise (its limitations section). Each perturbation is a wrapper with one
strength; wrappers compose (`wrap(env, [("obs_noise", 0.1), ("latency", 2)])`,
applied in that order, the first innermost). Every wrapper draws its noise from a
generator seeded at each seeded reset from (episode seed, wrapper), so episode j
of an evaluation meets the same perturbation whichever policy acts in it and
whichever worker steps it. Strength 0 leaves the environment as it is (the
wrapper passes everything through), so a strength-0 evaluation equals an
unperturbed one.

| name | strength | what |
|---|---|---|
| `obs_noise` | sigma >= 0 | Gaussian noise on every observation, sigma times that dimension's std in the offline data |
| `action_noise` | sigma >= 0 | Gaussian noise on the executed action, sigma times half the action box's width, clipped to the box |
| `latency` | k, an integer >= 0 | the executed action is the one chosen k control steps earlier (the box's centre before that) |
| `sticky` | p in [0, 1] | with probability p the previous executed action is repeated |
| `mass` | s > -1 | every free object's mass and inertia times 1 + s |
| `friction` | s > -1 | every free object's contacts: sliding friction times 1 + s |
| `push` | force >= 0 (newtons) | one horizontal push on a random free object, in a random direction, for one control step at a random step of the episode's first half |

The dynamics perturbations act on the MuJoCo model of OGBench and Robomimic
(robosuite) environments; "free objects" are the bodies with a free joint (the
cubes, Robomimic's cube, can and nut), found in the model after every reset
(robosuite rebuilds its model at each reset).
"""

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np

Perturbation = Tuple[str, float]  # (name, strength)


def _nonnegative(s: float) -> str:
  return "" if s >= 0 else "must be >= 0"


def _probability(s: float) -> str:
  return "" if 0 <= s <= 1 else "must be in [0, 1]"


def _steps(s: float) -> str:
  return "" if s >= 0 and float(s).is_integer() else "must be an integer >= 0 (control steps)"


def _scale(s: float) -> str:
  return "" if s > -1 else "must be > -1 (a factor 1 + s)"


# name -> (check of a strength: "" or what is wrong, salt of its noise stream, one-line help)
RULES: Dict[str, Tuple[Callable[[float], str], int, str]] = {
    "obs_noise": (_nonnegative, 1, "Gaussian observation noise, sigma x the data's std"),
    "action_noise": (_nonnegative, 2, "Gaussian action noise, sigma x half the box width"),
    "latency": (_steps, 3, "actions executed k control steps late"),
    "sticky": (_probability, 4, "the previous action repeated with probability p"),
    "mass": (_scale, 5, "object masses x (1 + s)"),
    "friction": (_scale, 6, "sliding friction of the objects' contacts x (1 + s)"),
    "push": (_nonnegative, 7, "one push of this many newtons on an object"),
}
NAMES = tuple(RULES)


def check(name: str, strength: float):
  """Raise ValueError (one line) unless `strength` is a valid strength of perturbation `name`."""
  if name not in RULES:
    raise ValueError(f"unknown perturbation {name!r}; choose from {', '.join(NAMES)}")
  if not math.isfinite(strength):
    raise ValueError(f"perturbation {name}={strength}: must be a finite number")
  why = RULES[name][0](strength)
  if why:
    raise ValueError(f"perturbation {name}={strength:g}: {why}")


def _number(name: str, text: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise ValueError(f"perturbation {name}={text}: {text!r} is not a number") from None


def _name_and_values(item: str, flag: str) -> Tuple[str, str]:
  name, eq, values = item.strip().partition("=")
  if not eq or not name or not values:
    raise ValueError(f"{flag}: expected NAME=STRENGTH, got {item!r}")
  return name.strip(), values


def parse(text: str, flag: str = "--perturb") -> Tuple[Perturbation, ...]:
  """'obs_noise=0.1,latency=2' -> (('obs_noise', 0.1), ('latency', 2.0)), checked."""
  out = []
  for item in filter(None, (t.strip() for t in (text or "").split(","))):
    name, value = _name_and_values(item, flag)
    out.append((name, _number(name, value)))
    check(*out[-1])
  names = [n for n, _ in out]
  for n in names:
    if names.count(n) > 1:
      raise ValueError(f"{flag}: perturbation {n} is given twice")
  return tuple(out)


def parse_sweep(text: str, flag: str = "--perturb") -> Tuple[str, List[float]]:
  """'obs_noise=0;0.1;0.3' -> ('obs_noise', [0.0, 0.1, 0.3]), checked."""
  name, values = _name_and_values(text, flag)
  strengths = [_number(name, v) for v in values.split(";") if v.strip()]
  if not strengths:
    raise ValueError(f"{flag}: expected NAME=S1;S2;..., got {text!r}")
  for s in strengths:
    check(name, s)
  if len(set(strengths)) < len(strengths):
    raise ValueError(f"{flag}={text}: a strength is given twice")
  return name, strengths


class _Perturbed(gym.Wrapper):
  """A wrapper with a strength and its own noise stream, re-seeded at each seeded reset."""

  name = ""

  def __init__(self, env, strength: float):
    super().__init__(env)
    check(self.name, strength)
    self.strength = float(strength)
    self.rng = np.random.default_rng([RULES[self.name][1]])

  def reset(self, *, seed=None, options=None):
    if seed is not None:
      self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), RULES[self.name][1]]))
    return self.env.reset(seed=seed, options=options)

  def __getattr__(self, name):  # the wrapped environment's attributes (max_episode_steps, ...)
    if name.startswith("_"):
      raise AttributeError(name)
    return getattr(self.env, name)


class ObservationNoise(_Perturbed):
  """obs + sigma * std * N(0, 1) per dimension; `std`: [O], the offline data's."""

  name = "obs_noise"

  def __init__(self, env, sigma: float, std: np.ndarray):
    super().__init__(env, sigma)
    self.scale = (self.strength * np.asarray(std, np.float64)).astype(
        env.observation_space.dtype)

  def _noisy(self, obs):
    if self.strength == 0:
      return obs
    return (obs + self.scale * self.rng.standard_normal(obs.shape)).astype(obs.dtype)

  def reset(self, *, seed=None, options=None):
    obs, info = super().reset(seed=seed, options=options)
    return self._noisy(obs), info

  def step(self, action):
    obs, reward, terminated, truncated, info = self.env.step(action)
    return self._noisy(obs), reward, terminated, truncated, info


class ActionNoise(_Perturbed):
  """The executed action is clip(a + sigma * (high - low) / 2 * N(0, 1), low, high)."""

  name = "action_noise"

  def step(self, action):
    if self.strength:
      box = self.env.action_space
      half = (box.high - box.low) / 2
      noisy = action + self.strength * half * self.rng.standard_normal(np.shape(action))
      action = np.clip(noisy, box.low, box.high).astype(np.asarray(action).dtype)
    return self.env.step(action)


class Latency(_Perturbed):
  """The action executed at step t is the one chosen at step t - k (the box's centre for
  t < k)."""

  name = "latency"

  def reset(self, *, seed=None, options=None):
    box = self.env.action_space
    self.pending = [((box.low + box.high) / 2).astype(box.dtype)] * int(self.strength)
    return super().reset(seed=seed, options=options)

  def step(self, action):
    if not self.strength:
      return self.env.step(action)
    self.pending.append(np.asarray(action))
    return self.env.step(self.pending.pop(0))


class StickyActions(_Perturbed):
  """With probability p the previous executed action is executed again."""

  name = "sticky"

  def reset(self, *, seed=None, options=None):
    self.previous = None
    return super().reset(seed=seed, options=options)

  def step(self, action):
    if self.strength and self.previous is not None and self.rng.random() < self.strength:
      action = self.previous
    self.previous = action
    return self.env.step(action)


def mujoco_handles(env):
  """(MjModel, MjData) of an OGBench or Robomimic environment (ValueError for others)."""
  base = env.unwrapped
  raw = getattr(base, "raw_env", None)
  if raw is not None:  # robosuite: its simulator's wrapped mujoco structures
    return raw.sim.model._model, raw.sim.data._data
  model, data = getattr(base, "_model", None), getattr(base, "_data", None)
  if model is None or data is None:
    raise ValueError(f"the dynamics perturbations need a MuJoCo environment (OGBench or "
                     f"Robomimic); {type(base).__name__} has no MuJoCo model")
  return model, data


def free_objects(model) -> List[int]:
  """Bodies with a free joint (the manipulated objects), by body id."""
  import mujoco
  return sorted({int(model.jnt_bodyid[j]) for j in range(model.njnt)
                 if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE})


class _Dynamics(_Perturbed):
  """Changes the MuJoCo model's objects after every reset, from the values the model was
  built with (robosuite builds a new model at each reset, OGBench keeps one)."""

  def __init__(self, env, strength: float):
    super().__init__(env, strength)
    self._model, self._original = None, None

  def reset(self, *, seed=None, options=None):
    out = super().reset(seed=seed, options=options)
    if self.strength:
      model, _ = mujoco_handles(self.env)
      if model is not self._model:
        self._model, self._original = model, self.read(model)
      self.apply(model, self._original)
    return out

  def read(self, model):
    raise NotImplementedError

  def apply(self, model, original):
    raise NotImplementedError


class MassScale(_Dynamics):
  """Every free object's bodies: mass and inertia times 1 + s."""

  name = "mass"

  def read(self, model):
    bodies = np.flatnonzero(np.isin(model.body_rootid, free_objects(model)))
    return bodies, model.body_mass[bodies].copy(), model.body_inertia[bodies].copy()

  def apply(self, model, original):
    import mujoco
    bodies, mass, inertia = original
    model.body_mass[bodies] = mass * (1 + self.strength)
    model.body_inertia[bodies] = inertia * (1 + self.strength)
    mujoco.mj_setConst(model, mujoco.MjData(model))  # derived constants (subtree masses, ...)


def contact_friction(model, g1: int, g2: int) -> float:
  """The sliding friction MuJoCo gives a contact between geoms g1 and g2: the higher-priority
  geom's, or the larger of the two at equal priority."""
  p1, p2 = model.geom_priority[g1], model.geom_priority[g2]
  f1, f2 = model.geom_friction[g1, 0], model.geom_friction[g2, 0]
  return float(f1 if p1 > p2 else f2 if p2 > p1 else max(f1, f2))


def object_contact_geoms(model) -> Tuple[np.ndarray, np.ndarray]:
  """(the free objects' geoms, every geom that can collide with one of them, objects included)."""
  bodies = np.flatnonzero(np.isin(model.body_rootid, free_objects(model)))
  objects = np.flatnonzero(np.isin(model.geom_bodyid, bodies))
  contype, conaffinity = model.geom_contype, model.geom_conaffinity
  touch = np.zeros(model.ngeom, bool)
  for o in objects:
    touch |= ((contype & conaffinity[o]) != 0) | ((contype[o] & conaffinity) != 0)
  touch[objects] = True
  return objects, np.flatnonzero(touch)


class FrictionScale(_Dynamics):
  """Every contact of a free object: sliding friction times 1 + s.

  MuJoCo takes a contact's friction from the higher-priority geom (OGBench's gripper pads),
  or the larger of the two: scaling the objects' geoms alone changes nothing where the
  partner's value wins (a slipperier cube on a floor of equal friction). So the objects and
  every geom that can touch them are scaled, which scales each contact of an object exactly
  (and also the contacts among those partners, such as the gripper on the floor)."""

  name = "friction"

  def read(self, model):
    geoms = object_contact_geoms(model)[1]
    return geoms, model.geom_friction[geoms, 0].copy()

  def apply(self, model, original):
    geoms, sliding = original
    model.geom_friction[geoms, 0] = sliding * (1 + self.strength)


class Push(_Perturbed):
  """A horizontal force of `strength` newtons on one free object (drawn per episode), in a
  direction and at a step drawn per episode in the first half of the episode, for one
  control step."""

  name = "push"

  def reset(self, *, seed=None, options=None):
    out = super().reset(seed=seed, options=options)
    self.t = 0
    if self.strength:
      model, _ = mujoco_handles(self.env)
      objects = free_objects(model)
      if not objects:
        raise ValueError("perturbation push: the environment has no free object to push")
      length = _episode_length(self.env)
      self.when = int(self.rng.integers(0, max(length // 2, 1)))
      self.body = objects[int(self.rng.integers(len(objects)))]
      angle = self.rng.uniform(0, 2 * np.pi)
      self.force = self.strength * np.array([np.cos(angle), np.sin(angle), 0.0])
    return out

  def step(self, action):
    if not self.strength or self.t != self.when:
      self.t += 1
      return self.env.step(action)
    _, data = mujoco_handles(self.env)
    data.xfrc_applied[self.body, :3] = self.force
    try:
      out = self.env.step(action)
    finally:
      _, data = mujoco_handles(self.env)
      data.xfrc_applied[self.body, :3] = 0.0
    self.t += 1
    return out


def _episode_length(env) -> int:
  length = getattr(env.unwrapped, "max_episode_steps", None)
  if length is None and env.spec is not None:
    length = env.spec.max_episode_steps
  return int(length or 200)


WRAPPERS = {"obs_noise": ObservationNoise, "action_noise": ActionNoise, "latency": Latency,
            "sticky": StickyActions, "mass": MassScale, "friction": FrictionScale, "push": Push}


def wrap(env, perturbations: Sequence[Perturbation], obs_std: Optional[np.ndarray] = None):
  """`env` under every perturbation, in order (the first innermost). `obs_noise` needs
  `obs_std` [O], the offline observations' std per dimension."""
  for name, strength in perturbations:
    check(name, strength)
    if name == "obs_noise":
      if obs_std is None:
        raise ValueError("perturbation obs_noise needs the offline data's observation std")
      env = ObservationNoise(env, strength, obs_std)
    else:
      env = WRAPPERS[name](env, strength)
  return env


def make_env(env_config, perturbations: Sequence[Perturbation],
             obs_std: Optional[np.ndarray] = None):
  """A fresh environment of the task (`tasks.make_env`) under `perturbations`."""
  from dfp_jax.data import tasks
  return wrap(tasks.make_env(env_config), perturbations, obs_std)


def observation_std(env_config) -> np.ndarray:
  """Std of every observation dimension over the task's offline training data: [O]."""
  from dfp_jax.data import tasks
  env, train, _ = tasks.load_task(env_config)
  env.close()
  return np.asarray(train["observations"], np.float64).std(axis=0)
