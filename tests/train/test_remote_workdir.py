"""Remote workdirs (`gs://`) end to end, against a local Cloud Storage emulator.

`gcp-storage-emulator` (from the package index) serves the JSON API in memory on localhost;
gcsfs (the path layer's files), tensorstore (orbax's checkpoint arrays) and
google-cloud-storage (tensorboardX's events) are pointed at it by environment variables. Only
the endpoint differs from a real bucket; authentication is not exercised, and the emulator
ignores write preconditions (ifGenerationMatch), so concurrent writers are not either.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

# gcsfs reads this at import: its experimental bucket-type probe (a gRPC call) would wait a
# minute for an emulator that does not answer it.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
pytest.importorskip("gcsfs")
pytest.importorskip("gcp_storage_emulator")

from dfp_jax import fileio  # noqa: E402
from dfp_jax.train.lock import LeaseLock, LockedError, workdir_lock  # noqa: E402
from dfp_jax.train.metrics import read_csv  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASK = "cube-single-play-singletask-task2-v0"
BUCKET = "dfp-test"


@pytest.fixture(scope="module")
def gcs():
  """The emulator's URL (served by its own process: in this one it would share the GIL with
  the test's polling), with this process and its children pointed at it."""
  import fsspec
  s = socket.socket()
  s.bind(("127.0.0.1", 0))
  port = s.getsockname()[1]
  s.close()
  server = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "gcs_emulator.py"),
                             str(port), BUCKET], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
  assert server.stdout.readline().strip() == "ready", "the emulator did not start"
  url = f"http://127.0.0.1:{port}"
  env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
         "FSSPEC_GCS_TOKEN": "anon", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"  # fsspec read its env at import
  yield url
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  server.kill()
  server.wait()


def test_the_path_layer_on_an_object_store(gcs):
  root = f"gs://{BUCKET}/layer"
  path = os.path.join(root, "a", "rows.csv")
  fileio.makedirs(os.path.dirname(path))
  fileio.write_text(path, "step,x\r\n")
  fileio.append_text(path, "1,2\r\n")  # no append on an object store: rewritten
  fileio.append_text(path, "2,3\r\n")
  assert read_csv(path)["x"].tolist() == [2.0, 3.0]
  fileio.replace(path, os.path.join(root, "a", "moved.csv"))
  assert not fileio.exists(path) and fileio.listdir(os.path.join(root, "a")) == ["moved.csv"]
  assert fileio.isdir(os.path.join(root, "a"))
  fileio.rmtree(root)
  assert not fileio.exists(os.path.join(root, "a", "moved.csv"))
  assert fileio.normpath("gs://b//x/./y/") == "gs://b/x/y"
  assert fileio.absolute("gs://b/x") == "gs://b/x"


def test_a_lease_refuses_a_live_holder_and_takes_over_a_dead_or_silent_one(gcs):
  path = f"gs://{BUCKET}/lease/checkpoints.lock"
  assert isinstance(workdir_lock(path), LeaseLock)
  with LeaseLock(path, settle_s=0.1):
    held = json.loads(fileio.read_text(path))
    assert held["pid"] == os.getpid() and held["token"]
    with pytest.raises(LockedError, match=f"in use by another run \\(pid {os.getpid()} on .*"
                                          "renewed 0 s ago"):
      LeaseLock(path, settle_s=0.1).acquire()
  assert not fileio.exists(path)  # released: the lease is gone
  # A holder on this host whose process is gone: taken over at once.
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  fileio.write_text(path, json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                      "since": "then", "token": "x", "beat": time.time()}))
  LeaseLock(path, settle_s=0.1).acquire().release()
  # A holder elsewhere that stopped renewing: refused while fresh, taken over once stale.
  fileio.write_text(path, json.dumps({"host": "elsewhere", "pid": 1, "since": "then",
                                      "token": "y", "beat": time.time() - 5}))
  with pytest.raises(LockedError, match="elsewhere"):
    LeaseLock(path, stale_s=60, settle_s=0.1).acquire()
  lock = LeaseLock(path, stale_s=2, heartbeat_s=0.2, settle_s=0.1).acquire()
  beat = json.loads(fileio.read_text(path))["beat"]
  time.sleep(0.8)
  assert json.loads(fileio.read_text(path))["beat"] > beat  # the holder renews its lease
  lock.release()


def _train(args, env, **kwargs):
  return subprocess.Popen([sys.executable, "-m", "experiments.train", *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _columns(path):
  return {k: v for k, v in read_csv(path).items()
          if k not in ("steps_per_s", "eval_time_s", "wall_time_s")}


@pytest.mark.slow
def test_a_gs_workdir_trains_resumes_after_a_kill_and_refuses_a_second_run(
    gcs, tiny_cube_single, smoke_two_seeds):
  env = dict(os.environ)
  args = ["--config=experiments/configs/dfp.py:smoke", "--seeds=0,1",
          f"--config.env.dataset_dir={tiny_cube_single}", "--config.train.progress_bar=False"]

  work = f"gs://{BUCKET}/e2e"
  ckpts = f"{work}/{TASK}/checkpoints"
  first = _train(args + [f"--workdir={work}"], env)
  deadline = time.time() + 600
  while not (fileio.isdir(ckpts) and any(n.isdigit() and int(n) >= 20
                                         for n in fileio.listdir(ckpts))):
    assert first.poll() is None, first.communicate()[1][-3000:]
    assert time.time() < deadline
    time.sleep(0.5)
  first.send_signal(signal.SIGSTOP)  # holds its lease while the second run tries the workdir
  second = subprocess.run([sys.executable, "-m", "experiments.train", *args,
                           f"--workdir={work}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
  assert second.returncode != 0 and "Traceback" not in second.stderr, second.stderr[-3000:]
  last = second.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and f"pid {first.pid} on " in last, last
  first.send_signal(signal.SIGKILL)
  first.wait()

  again = subprocess.run([sys.executable, "-m", "experiments.train", *args,
                          f"--workdir={work}"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "resuming" in again.stdout + again.stderr
  for seed in (0, 1):
    run = f"{work}/{TASK}/seed_{seed}"
    for stream in ("train.csv", "eval.csv"):
      a, b = _columns(str(smoke_two_seeds / TASK / f"seed_{seed}" / stream)), _columns(
          f"{run}/{stream}")
      assert a.keys() == b.keys()
      for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"seed {seed} {stream} {k}")
    names = set(fileio.listdir(run))
    assert {"config.json", "summary.json", "learning_curve.png", "tb"} <= names, names
    assert any(n.startswith("events.out.tfevents") for n in fileio.listdir(f"{run}/tb"))
    summary = json.loads(fileio.read_text(f"{run}/summary.json"))
    local = json.loads(open(smoke_two_seeds / TASK / f"seed_{seed}" / "summary.json").read())
    assert summary["final_success"] == local["final_success"]
  assert not fileio.exists(f"{work}/{TASK}/checkpoints.lock")  # released at the end

  evaluated = subprocess.run([sys.executable, "-m", "experiments.evaluate",
                              f"--workdir={work}/{TASK}", "--episodes=1",
                              f"--dataset_dir={tiny_cube_single}"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  results = json.loads(fileio.read_text(f"{work}/{TASK}/evaluate/step_50/results.json"))
  assert [m["member"] for m in results["members"]] == ["seed_0", "seed_1"]


def test_an_unsupported_scheme_or_a_missing_bucket_is_refused_before_the_run(gcs):
  with pytest.raises(ValueError, match="s3:// is not supported; use a local path or gs://"):
    fileio.check_reachable("s3://bucket/run")
  with pytest.raises(ValueError, match="bucket gs://no-such-bucket does not exist"):
    fileio.check_reachable("gs://no-such-bucket/run")
  fileio.check_reachable(f"gs://{BUCKET}/a/new/run")  # a new run's path need not exist
  fileio.check_reachable("/a/local/path")  # local paths fail, if at all, when written
