"""Shared by the launchers: printing or running the exact commands."""

import shlex
import subprocess
from typing import List, Sequence


def quote(cmd: Sequence[str]) -> str:
  return " ".join(shlex.quote(c) for c in cmd)


def train_args(argv: Sequence[str]) -> List[str]:
  """Arguments after `--` go to `python -m experiments.train`."""
  return list(argv[argv.index("--") + 1:]) if "--" in argv else []


def run(cmds: Sequence[Sequence[str]], dry_run: bool) -> int:
  """Print every command; unless dry_run, run them one after another."""
  for cmd in cmds:
    print(quote(cmd), flush=True)
  if dry_run:
    return 0
  for cmd in cmds:
    rc = subprocess.call(list(cmd))
    if rc:
      return rc
  return 0

