"""Prepare an offline accelerator machine for the accelerator suite, from a machine with a
package index.

  python launch/prepare_accelerator.py [--dest=.whl] [--python=3.12] [--dry-run]

Accelerator machines lent for minutes may have no network but already carry jax (with CUDA),
flax, optax, orbax, chex, absl and numpy. This finds what the suite
(`python -m experiments.benchmark --suite=accelerator`) imports beyond those and everything
they need, downloads those wheels (the versions installed here; CPython `--python`,
manylinux x86-64) into `--dest` (git-ignored), and prints the one line that installs them
there from that folder and runs the suite. The repository itself travels as source.
"""

import argparse
import importlib.metadata as md
import os
import re
import subprocess
import sys
from typing import Dict, Iterable, List, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREINSTALLED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "absl-py", "numpy")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
LIMIT_MB = 60


def canonical(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def requirements(dist: str) -> List[str]:
  """Names `dist` requires (extras and environment-marked optional ones left out)."""
  from packaging.requirements import Requirement
  out = []
  for text in md.requires(dist) or []:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
      continue  # an extra's, or another platform's
    out.append(canonical(req.name))
  return out


def closure(names: Iterable[str]) -> Set[str]:
  """`names` and everything they require, as installed here."""
  seen: Set[str] = set()
  todo = [canonical(n) for n in names]
  while todo:
    name = todo.pop()
    if name in seen:
      continue
    seen.add(name)
    try:
      todo.extend(requirements(name))
    except md.PackageNotFoundError:
      pass
  return seen


def suite_distributions(with_envs: bool = False) -> Set[str]:
  """Distributions whose modules the accelerator suite imports (in a fresh interpreter);
  `with_envs`: also the OGBench environments of its real-environment tables."""
  code = ("import sys, importlib.metadata as md\n"
          "import experiments.benchmark, experiments.accelerator_suite\n"
          + ("import ogbench, gymnasium, dfp_jax.data.ogbench_generate\n"
             if with_envs else "") +
          "from dfp_jax import agents\n"
          "[agents.get(m) for m in agents.METHODS]\n"
          "dists = md.packages_distributions()\n"
          "print('\\n'.join(sorted({d for m in list(sys.modules) "
          "for d in dists.get(m.split('.')[0], [])})))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True).stdout
  return {canonical(n) for n in out.split()}


def plan(preinstalled: Iterable[str] = PREINSTALLED, with_envs: bool = False) -> Dict[str, str]:
  """{distribution: version installed here} to carry: what the suite needs (with its own
  requirements) minus what the machine has (with theirs), minus this project itself."""
  have = closure(preinstalled) | {"setuptools", "pip", "wheel"}
  imported = suite_distributions(with_envs) - {"dfp-jax"}  # the project's own install_requires are
  need = closure(imported) - have                 # more than the suite imports
  pins = {}
  for n in sorted(need):
    try:
      pins[n] = md.version(n)
    except md.PackageNotFoundError:  # required only where it is missing here: not imported
      pass
  return pins


def download(pins: Dict[str, str], dest: str, python: str):
  os.makedirs(dest, exist_ok=True)
  platforms = [a for p in PLATFORMS for a in ("--platform", p)]
  for name, version in pins.items():
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
                    *platforms, "-d", dest, f"{name}=={version}"], check=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dest", default=os.path.join(ROOT, ".whl"))
  parser.add_argument("--python", default="3.12")
  parser.add_argument("--dry-run", action="store_true", help="print the plan, download nothing")
  parser.add_argument("--with_envs", action="store_true", help="also carry ogbench and MuJoCo "
                      "for the suite's real-environment tables (larger)")
  args = parser.parse_args()
  pins = plan(with_envs=args.with_envs)
  print("to carry: " + (", ".join(f"{n}=={v}" for n, v in pins.items()) or "nothing"))
  if args.dry_run:
    return
  download(pins, args.dest, args.python)
  size = sum(os.path.getsize(os.path.join(args.dest, f)) for f in os.listdir(args.dest))
  print(f"{args.dest}: {len(os.listdir(args.dest))} wheels, {size / 2**20:.1f} MB"
        + (f" (over the {LIMIT_MB} MB budget)" if size > LIMIT_MB * 2**20 else ""))
  rel = os.path.relpath(args.dest, ROOT)
  print("on the accelerator machine, in the repository root:\n"
        f"python3 -m pip install -q --no-index --no-deps --target /tmp/site {rel}/*.whl && "
        "PYTHONPATH=/tmp/site:. python3 -m experiments.benchmark --suite=accelerator "
        "--out=accelerator")


if __name__ == "__main__":
  main()
