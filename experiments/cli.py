"""What every command line shares: a bad flag or a failure as one `error:` line."""

import sys

from absl import app, flags


def parse_flags(argv):
  """absl's flag parsing, with a bad flag or value as one `error:` line instead of absl's
  FATAL message and usage hint."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {' '.join(str(e).split())}")


def failure_line(e: BaseException) -> str:
  """A known failure as one line: an unreadable or unwritable file names the file and why."""
  if isinstance(e, OSError) and not isinstance(e, ConnectionError):
    what = e.strerror or type(e).__name__
    return f"{e.filename}: {what}" if e.filename else " ".join(str(e).split()) or what
  return " ".join(str(e).split()) or type(e).__name__


def run(main, flags_parser=parse_flags):
  """app.run(main) with what a command line can meet (bad values, missing or damaged data
  and checkpoints, files it cannot read or write, environment workers that die) as one
  `error:` line and exit status 1, never a traceback."""
  from dfp_jax.data import DatasetError
  from dfp_jax.train.checkpoint import CheckpointError
  from dfp_jax.train.env_pool import EnvWorkerError

  def guarded(argv):
    try:
      return main(argv)
    except (ValueError, DatasetError, CheckpointError, EnvWorkerError, OSError) as e:
      sys.exit(f"error: {failure_line(e)}")

  app.run(guarded, flags_parser=flags_parser)
