import atexit
import os
import shutil
import sys
import tempfile

import pytest

# One persistent XLA compilation cache for the whole session, this process and every
# subprocess it starts: the many short runs of the same smoke programs compile once (a smoke
# run: 25 s cold, 12 s warm on 2 cores; results are bit-identical). Set before jax is imported.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="dfp-jax-test-xla-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ.update({"JAX_COMPILATION_CACHE_DIR": _cache,
                     "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                     "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"})

# The suite compiles with XLA's backend (LLVM) optimizations off: every test compiles many
# small programs and runs each briefly, so compiling is most of its time (a cold smoke run:
# 22.7 s at the default level, 17.5 s at 0; the fast tier 3 min 20 s against 2 min 37 s, 2
# cores). Results move at float rounding (1e-7), the same in every process of the suite, so
# run-against-run tests still compare bit for bit. Set XLA_FLAGS with
# --xla_backend_optimization_level=N to test at another level.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      [*os.environ.get("XLA_FLAGS", "").split(), "--xla_backend_optimization_level=0"])

# Tests import `experiments` from the repository root, whichever directory pytest runs in.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
  """A test that starts a subprocess or several processes is slow: outside the fast tier."""
  for item in items:
    if item.get_closest_marker("subprocess") or item.get_closest_marker("multiprocess"):
      item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_cube_single(tmp_path_factory):
  """A tiny generated cube-single play dataset (3 episodes of 60 steps) and its directory."""
  from dfp_jax.data import ogbench_generate
  out = tmp_path_factory.mktemp("ogbench")
  ogbench_generate.generate("cube-single-play-v0", 3, str(out), episode_length=60,
                            val_episodes=1, num_workers=1, progress=False)
  return str(out)


@pytest.fixture(scope="session")
def smoke_two_seeds(tiny_cube_single, tmp_path_factory):
  """An undisturbed two-seed smoke run on `tiny_cube_single` (the reference that interrupted,
  locked or remote runs of the same command are compared with): its workdir."""
  import subprocess
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  work = tmp_path_factory.mktemp("smoke_two_seeds")
  res = subprocess.run([sys.executable, "-m", "experiments.train",
                        "--config=experiments/configs/dfp.py:smoke", "--seeds=0,1",
                        f"--config.env.dataset_dir={tiny_cube_single}",
                        "--config.train.progress_bar=False", f"--workdir={work}"],
                       cwd=root, capture_output=True, text=True, timeout=900)
  assert res.returncode == 0, res.stderr[-3000:]
  return work
