"""Run training on every worker of a Cloud TPU pod slice.

  python launch/tpu_pod.py --tpu=my-v4-32 --zone=us-central2-b [--project=P] [--dry-run] -- \\
      --config=experiments/configs/dfp.py:cube-triple-task4 --seeds=0,1,2,3,4 --workdir=gs://b/runs

Copies this checkout to every worker, installs it with TPU jax, then starts
`python -m experiments.train --distributed` on all workers at once;
jax.distributed.initialize() finds the pod's workers by itself. Several
`-- ARGS` groups run one after another in the same job, e.g. the paper's
lambda ablation and our temperature ablation, 5 seeds each, each a population
over the whole pod:

  python launch/tpu_pod.py --tpu=my-v4-32 --zone=us-central2-b -- \
      --tasks=cube-quadruple-100m-task2 --ablation=topk_weight --seeds=0,1,2,3,4 \
      --workdir=gs://b/ablations/lambda -- \
      --tasks=cube-quadruple-100m-task2 --ablation=temperatures --seeds=0,1,2,3,4 \
      --workdir=gs://b/ablations/temperatures
"""

import argparse
import os
import sys

from _common import quote, run, train_commands

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commands(tpu, zone, project, remote_dir, args):
  base = ["gcloud", "compute", "tpus", "tpu-vm"]
  where = [f"--zone={zone}", "--worker=all"] + ([f"--project={project}"] if project else [])
  install = f"cd {remote_dir} && pip install -e . 'jax[tpu]'"
  train = f"cd {remote_dir} && " + " && ".join(
      quote(["python", "-m", "experiments.train", "--distributed", *a]) for a in args)
  return [
      base + ["scp", "--recurse", REPO, f"{tpu}:{remote_dir}"] + where,
      base + ["ssh", tpu] + where + [f"--command={install}"],
      base + ["ssh", tpu] + where + [f"--command={train}"],
  ]


def main(argv):
  own = argv[:argv.index("--")] if "--" in argv else argv
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--tpu", required=True, help="TPU VM name")
  p.add_argument("--zone", required=True)
  p.add_argument("--project", default=None)
  p.add_argument("--remote_dir", default="~/dfp-jax")
  p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  o = p.parse_args(own)
  return run(commands(o.tpu, o.zone, o.project, o.remote_dir, train_commands(argv)), o.dry_run)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
