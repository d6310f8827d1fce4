"""Every config field against its rule (`validation.RULES`), in-process: bad values given as
`--config.<field>=...` overrides (parsed by the same config_flags machinery as the trainer's
command line) and as swept values end in one error naming the field, or are accepted only
where the field's documented rule accepts them."""

import glob
import math
import os

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from dfp_jax.train import population, validation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "experiments", "configs", "*.py"))
                      if os.path.basename(p) not in ("__init__.py", "common.py"))

# Bad texts for every numeric field, list fields and choice fields.
NUMERIC_BAD = ["nan", "inf", "-inf", "-1", "0", "-0.5", "0.5", "1e30", str(10**30), "x", "True"]
LIST_BAD = ["()", "(0,)", "(-1,2)", "(nan,)", "(inf,)", "(1e30,)", "x"]
CHOICE_BAD = ["no_such_value", ""]
# Rules between fields, checked beside the table: field -> (its message, whether it holds).
CROSS = {
    "agent.top_k": ("K must not exceed", lambda a: a.top_k <= a.num_candidates),
    "agent.num_bottom_negatives": ("at most N - K",
                                   lambda a: a.num_bottom_negatives <= a.num_candidates - a.top_k),
}


def _parse(config_file, overrides):
  """The config the trainer's command line would build, or the flag error it would print."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", default=f"{config_file}:smoke", flag_values=fv)
  fv(["train", *[f"--config.{k}={v}" for k, v in overrides.items()]])
  return fv.config


def _leaves(config, prefix=""):
  for key in config.keys():
    value = config[key]
    if hasattr(value, "keys"):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", config.get_type(key)


def _fields():
  """(field, type, the first config file that has it) for every field of every method."""
  seen = {}
  for path in CONFIG_FILES:
    for field, kind in _leaves(_parse(path, {})):
      seen.setdefault(field, (kind, path))
  return seen


FIELDS = _fields()
CHECKED = sorted(f for f, (kind, _) in FIELDS.items() if kind in (int, float, tuple)
                 or f in validation.RULES)


def test_every_numeric_list_and_choice_field_has_a_rule():
  """A field a method adds is refused here until it has a rule; the rest are flags, paths and
  names (checked where they are used)."""
  unruled = [f for f, (kind, _) in FIELDS.items()
             if kind in (int, float, tuple) and f not in validation.RULES]
  assert not unruled, f"fields without a validation rule: {unruled}"
  stale = [f for f in validation.RULES if f not in FIELDS]
  assert not stale, f"rules for fields no config has: {stale}"


def test_the_docs_list_every_rule():
  with open(os.path.join(ROOT, "docs", "checkpoints.md")) as f:
    docs = f.read()
  missing = [f for f, rule in validation.RULES.items()
             if f"| `{f}` | {rule.text().removeprefix('must be ')} |" not in docs]
  assert not missing, f"docs/checkpoints.md lacks these rows of its rules table: {missing}"


def _bad_texts(field):
  rule = validation.RULES[field]
  return {"widths": LIST_BAD, "temperatures": LIST_BAD, "choice": CHOICE_BAD}.get(
      rule.kind, NUMERIC_BAD)


@pytest.mark.parametrize("field", CHECKED)
def test_bad_values_are_refused_in_one_line_or_accepted_by_the_rule(field):
  rule = validation.RULES[field]
  config_file = FIELDS[field][1]
  for text in _bad_texts(field):
    try:
      config = _parse(config_file, {field: text})
    except flags.Error as e:  # the command line prints this as one `error:` line
      assert "Traceback" not in " ".join(str(e).split()[:3]), (field, text)
      continue
    value = config
    for part in field.split("."):
      value = value[part]
    try:
      validation.check_config(config)
    except validation.ConfigError as e:
      message = str(e)
      assert "\n" not in message and message.startswith(f"config {field}="), (field, text, e)
      cross = CROSS.get(field)
      if rule.accepts(value):  # then only a rule between fields may refuse it
        assert cross and cross[0] in message and not cross[1](config.agent), (field, text, e)
      else:
        assert rule.text() in message, (field, text, e)
      continue
    # Accepted: only values the rule accepts, never a non-finite, wrong-typed or huge value.
    assert rule.accepts(value), (field, text, value)
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
      if rule.kind in ("int", "number", "widths", "temperatures"):
        assert isinstance(v, (int, float)) and not isinstance(v, bool), (field, text, v)
        assert math.isfinite(v) and abs(v) <= validation.MAX_INT, (field, text, v)
        assert v >= rule.lo, (field, text, v)


def _expected(rule, v):
  """The rule's bounds, applied here independently of Rule.accepts."""
  if rule.kind == "int":
    return float(v).is_integer() and isinstance(v, int) and rule.lo <= v <= rule.hi
  if not math.isfinite(v):
    return False
  above = v > rule.lo if rule.lo_open else v >= rule.lo
  below = v < rule.hi if rule.hi_open else v <= rule.hi
  return above and below


@pytest.mark.parametrize("field", [f for f in CHECKED if validation.RULES[f].kind in ("int", "number")])
def test_random_values_are_accepted_exactly_inside_the_bounds(field):
  """A seeded property test: values from a wide log-uniform spread of both signs, the bounds
  and their neighbours, given straight to check_config."""
  rule = validation.RULES[field]
  config = _parse(FIELDS[field][1], {})
  rng = np.random.default_rng(abs(hash(field)) % 2**32)
  spread = np.concatenate([rng.choice([-1, 1], 200) * 10.0 ** rng.uniform(-8, 12, 200),
                           [0.0, -0.0, math.nan, math.inf, -math.inf]])
  bounds = [b for b in (rule.lo, rule.hi) if math.isfinite(b)]
  spread = np.concatenate([spread, bounds, np.nextafter(bounds, math.inf),
                           np.nextafter(bounds, -math.inf)])
  if rule.kind == "int":
    values = [int(v) for v in spread if math.isfinite(v) and abs(v) < 2**62]
    values += [int(b) + d for b in bounds for d in (-1, 0, 1)]
  else:
    values = [float(v) for v in spread]
  parent, _, leaf = field.rpartition(".")
  for v in values:
    probe = config.copy_and_resolve_references()
    target = probe
    for part in parent.split(".") if parent else ():
      target = target[part]
    with target.ignore_type():
      target[leaf] = v
    if field == "agent.num_candidates":  # K <= N and the bottom negatives: CROSS, checked
      probe.agent.top_k, probe.agent.num_bottom_negatives = 1, 0  # with the other fields
    try:
      validation.check_config(probe)
      accepted = True
    except validation.ConfigError as e:
      accepted = False
      assert str(e).startswith(f"config {field}="), e
    expected = _expected(rule, v)
    if expected and field in CROSS:
      expected = CROSS[field][1](probe.agent)
    assert accepted == expected, (field, v)


@pytest.mark.parametrize("field", population.SWEEPABLE)
def test_bad_swept_values_are_refused_naming_the_member(field):
  config = _parse(os.path.join(ROOT, "experiments", "configs", "dfp.py"), {})
  rule = validation.RULES[field]
  good = "0.05" if rule.kind == "temperatures" else "0.5"
  for bad in ("nan", "inf", "-1", "1e30", "0"):
    try:
      sweep = population.parse_sweeps([f"{field}={good};{bad}"])
    except population.SweepError as e:
      assert "\n" not in str(e)
      continue
    members = population.members([0], sweep)
    bad_member = members[1]
    if rule.accepts(bad_member.apply(config)[field.split(".")[0]][field.split(".")[1]]):
      validation.check_members(config, members)  # accepted by the rule, as with --config
      continue
    with pytest.raises(validation.ConfigError) as e:
      validation.check_members(config, members)
    assert str(e.value).startswith(f"member {bad_member.name}: config {field}="), e.value


def test_bc_offline_only_needs_a_separate_offline_buffer_and_dfp():
  def config(method, **train):
    c = _parse(os.path.join(ROOT, "experiments", "configs", f"{method}.py"), {})
    c.train.update(train)
    return c
  with pytest.raises(validation.ConfigError, match="needs train.offline_batch_ratio"):
    validation.check_config(config("dfp", bc_offline_only=True))
  validation.check_config(config("dfp", bc_offline_only=True, offline_batch_ratio=0.5))
  with pytest.raises(validation.ConfigError, match="only DFP's agent supports it"):
    validation.check_config(config("mvp", bc_offline_only=True, offline_batch_ratio=0.5))
