"""What every command line shares: flag errors as one `error:` line."""

import sys

from absl import flags


def parse_flags(argv):
  """absl's flag parsing, with a bad flag or value as one `error:` line instead of absl's
  FATAL message and usage hint."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {' '.join(str(e).split())}")
