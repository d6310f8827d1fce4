"""What every command line shares: a bad flag or a failure as one `error:` line."""

import os
import sys

from absl import app, flags


def parse_flags(argv, fv=flags.FLAGS):
  """absl's flag parsing, with a bad flag or value (or a config file, preset or override that
  cannot be read) as one `error:` line instead of absl's FATAL message and usage hint."""
  try:
    argv = fv(argv)
    if "config" in fv:  # a config file that failed to load raises on first use
      fv.config.get("method")
  except Exception as e:  # noqa: BLE001  (config_flags raises several types, often chained)
    sys.exit(f"error: {chain_line(e)}")
  return argv


def chain_line(e: BaseException) -> str:
  """An exception chain (config_flags chains several, some with tracebacks inside) as one line."""
  parts = []
  while e is not None:
    text = str(e).split("Traceback")[0].strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":  # a KeyError's quotes
      text = text[1:-1]
    if isinstance(e, (KeyError, AttributeError)) and text:
      text = f"no config field {text.strip(chr(39))}"
    text = " ".join(text.split())
    if text and not any(text in p for p in parts):
      parts.append(text)
    e = e.__cause__ or e.__context__
  return " ".join(parts) or "invalid flags"


def failure_line(e: BaseException) -> str:
  """A known failure as one line: an unreadable or unwritable file names the file and why."""
  if isinstance(e, OSError) and not isinstance(e, ConnectionError):
    what = e.strerror or type(e).__name__
    return f"{e.filename}: {what}" if e.filename else " ".join(str(e).split()) or what
  return " ".join(str(e).split()) or type(e).__name__


def exit_now(line: str):
  """Exit with one error line, skipping the exit handlers: when the disk is full or the
  workdir is gone, the TensorBoard and orbax writer threads would each add a traceback."""
  print(f"error: {line}", file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(1)


def known_errors():
  """What every command line reports as one line: bad values, missing or damaged data and
  checkpoints, files it cannot read or write, environment workers that die."""
  from dfp_jax.data import DatasetError
  from dfp_jax.train.checkpoint import CheckpointError
  from dfp_jax.train.env_pool import EnvWorkerError
  return (ValueError, DatasetError, CheckpointError, EnvWorkerError, OSError)


def run(main, flags_parser=parse_flags, errors=(), fatal=()):
  """app.run(main) with what a command line can meet (bad values, missing or damaged data
  and checkpoints, files it cannot read or write, environment workers that die, and the
  command's own `errors`) as one `error:` line and exit status 1, never a traceback.
  `fatal` failures exit at once (`exit_now`), without the exit handlers."""
  known = (*known_errors(), *errors)

  def guarded(argv):
    try:
      return main(argv)
    except tuple(fatal) as e:
      exit_now(failure_line(e))
    except known as e:
      sys.exit(f"error: {failure_line(e)}")

  app.run(guarded, flags_parser=flags_parser)
