"""Several training processes on this machine, joined by jax.distributed (tests the multi-host path).

  python launch/local.py --num_processes=2 --devices_per_process=2 [--dry-run] -- \\
      --config=experiments/configs/dfp.py:smoke --workdir=runs/mp

Each process gets `devices_per_process` CPU devices (added to any XLA_FLAGS already set) and
the coordinator/process flags; process 0 writes the outputs.
"""

import argparse
import os
import socket
import subprocess
import sys

from _common import quote, train_commands
from dfp_jax.parallel import host_device_flags


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def commands(num_processes, devices_per_process, port, args):
  env = "XLA_FLAGS=" + host_device_flags(devices_per_process, os.environ.get("XLA_FLAGS", ""))
  return [[env, sys.executable, "-m", "experiments.train",
           f"--coordinator_address=localhost:{port}", f"--num_processes={num_processes}",
           f"--process_id={i}", *args] for i in range(num_processes)]


def main(argv):
  own = argv[:argv.index("--")] if "--" in argv else argv
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--num_processes", type=int, default=2)
  p.add_argument("--devices_per_process", type=int, default=1)
  p.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
  p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  opts = p.parse_args(own)
  for args in train_commands(argv):  # several `-- ARGS` groups: one job after another
    cmds = commands(opts.num_processes, opts.devices_per_process, opts.port or free_port(), args)
    for cmd in cmds:
      print(quote(cmd), flush=True)
    if opts.dry_run:
      continue
    procs = [subprocess.Popen(cmd[1:], env=dict(os.environ, XLA_FLAGS=cmd[0].split("=", 1)[1]))
             for cmd in cmds]
    code = max((p.wait() for p in procs), key=abs)
    if code:
      return code
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
