"""Multi-node GPU training under SLURM: writes an sbatch script and submits it.

  python launch/slurm.py --nodes=4 --gpus_per_node=8 [--partition=P] [--time=48:00:00] \\
      [--dry-run] -- --config=experiments/configs/dfp.py:cube-quadruple-100m-task2 --workdir=runs/c4

One task per node; jax.distributed.initialize() reads SLURM's variables, and
every process sees its node's GPUs. --dry-run prints the script and the
sbatch command without writing or submitting anything. Several `-- ARGS`
groups become one `srun` line each, run one after another in the job.
"""

import argparse
import os
import sys

from _common import quote, run, train_commands

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(nodes, gpus_per_node, partition, time, job_name, args):
  lines = [
      "#!/bin/bash",
      f"#SBATCH --job-name={job_name}",
      f"#SBATCH --nodes={nodes}",
      "#SBATCH --ntasks-per-node=1",
      f"#SBATCH --gpus-per-node={gpus_per_node}",
      f"#SBATCH --time={time}",
      f"#SBATCH --output={job_name}-%j.out",
  ]
  if partition:
    lines.append(f"#SBATCH --partition={partition}")
  lines += [
      "set -euo pipefail",
      f"cd {quote([REPO])}",
  ] + ["srun " + quote(["python", "-m", "experiments.train", "--distributed", *a]) for a in args]
  return "\n".join(lines) + "\n"


def main(argv):
  own = argv[:argv.index("--")] if "--" in argv else argv
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--nodes", type=int, default=1)
  p.add_argument("--gpus_per_node", type=int, default=8)
  p.add_argument("--partition", default=None)
  p.add_argument("--time", default="48:00:00")
  p.add_argument("--job_name", default="dfp")
  p.add_argument("--script", default="dfp.sbatch", help="where to write the sbatch script")
  p.add_argument("--dry-run", action="store_true", help="print the script and command only")
  o = p.parse_args(own)
  text = script(o.nodes, o.gpus_per_node, o.partition, o.time, o.job_name, train_commands(argv))
  print(text, end="")
  if not o.dry_run:
    with open(o.script, "w") as f:
      f.write(text)
  return run([["sbatch", o.script]], o.dry_run)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
