"""The shared command-line wrapper: every known failure is one `error:` line."""

import errno

import pytest

from dfp_jax.data import DatasetError
from dfp_jax.train.checkpoint import CheckpointError
from experiments import cli


@pytest.mark.parametrize("failure, line", [
    (ValueError("bad value\n  on two lines"), "error: bad value on two lines"),
    (DatasetError("dataset x not found"), "error: dataset x not found"),
    (CheckpointError("checkpoint 20 cannot be restored"), "error: checkpoint 20 cannot be restored"),
    (OSError(errno.EACCES, "Permission denied", "/ro/out"), "error: /ro/out: Permission denied"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/no/file"),
     "error: /no/file: No such file or directory"),
])
def test_known_failures_exit_with_one_error_line(failure, line, monkeypatch):
  def main(argv):
    raise failure
  monkeypatch.setattr(cli.app, "run", lambda f, flags_parser=None: f(["prog"]))
  with pytest.raises(SystemExit) as e:
    cli.run(main)
  assert e.value.code == line


def test_other_exceptions_are_not_hidden(monkeypatch):
  def main(argv):
    raise RuntimeError("a bug")
  monkeypatch.setattr(cli.app, "run", lambda f, flags_parser=None: f(["prog"]))
  with pytest.raises(RuntimeError, match="a bug"):
    cli.run(main)


def test_bad_flag_values_are_one_whole_line():
  """A bad value keeps its quotes; a KeyError's own quotes go (`no config field x`)."""
  from absl import flags
  fv = flags.FlagValues()
  flags.DEFINE_integer("episodes", 1, "", flag_values=fv)
  with pytest.raises(SystemExit) as e:
    cli.parse_flags(["prog", "--episodes=x"], fv)
  assert e.value.code == "error: flag --episodes=x: invalid literal for int() with base 10: 'x'"
  assert cli.chain_line(KeyError("nosuch")) == "no config field nosuch"
