"""Shared by the launchers: printing or running the exact commands."""

import shlex
import subprocess
from typing import List, Sequence


def quote(cmd: Sequence[str]) -> str:
  return " ".join(shlex.quote(c) for c in cmd)


def train_args(argv: Sequence[str]) -> List[str]:
  """Arguments after `--` go to `python -m experiments.train` (the first command only)."""
  return train_commands(argv)[0]


def train_commands(argv: Sequence[str]) -> List[List[str]]:
  """`-- A... -- B...`: one `python -m experiments.train` command per `--` group, run one after
  another in the same job (e.g. two ablations on one pod)."""
  if "--" not in argv:
    return [[]]
  groups: List[List[str]] = []
  for a in argv[argv.index("--"):]:
    if a == "--":
      groups.append([])
    else:
      groups[-1].append(a)
  return groups


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

