"""The fixed parts of a run, built once: method programs, environments, data, outputs."""

import collections
import contextlib
import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from dfp_jax.data import tasks
from dfp_jax.data.replay import ReplayBuffer
from dfp_jax.train import checkpoint
from dfp_jax.train.envs import MemberEnvs
from dfp_jax.train.faults import FaultWatch, StopSignals
from dfp_jax.train.metrics import MetricsLogger
from dfp_jax.train.workdir import Layout


class OfflineData:
  """The offline dataset, read whole or one shard at a time.

  Sharded data (the 100M dataset) is read one shard at a time, moving to the
  next every `shard_interval` offline steps, as Q-chunking's loader does.
  """

  def __init__(self, env_config, offline_steps: int):
    self.env_config = env_config
    self.offline_steps = offline_steps
    self.rotate = env_config.shard_interval > 0 and tasks.count_shards(env_config) > 1
    self.shard: Optional[int] = None

  def shard_of(self, step: int) -> int:
    return min(step, max(self.offline_steps - 1, 0)) // self.env_config.shard_interval

  def needs_reload(self, step: int) -> bool:
    return self.rotate and self.shard_of(step) != self.shard

  def load(self, step: int, fingerprints: Dict[str, str]) -> Dict[str, np.ndarray]:
    """The data training at `step` reads; checks it is the data the run trained on."""
    if self.rotate:
      self.shard = self.shard_of(step)
      _, dataset, _ = tasks.load_task(self.env_config, shard=self.shard)
    else:
      _, dataset, _ = tasks.load_task(self.env_config, num_shards=self.env_config.num_shards)
    fp = checkpoint.dataset_fingerprint(dataset)
    if fingerprints.setdefault(str(self.shard), fp) != fp:
      raise checkpoint.CheckpointError(
          f"the dataset of {self.env_config.task} in {self.env_config.dataset_dir} differs from "
          "the one this run's checkpoint trained on; restore it, or pass --overwrite to start again")
    return dataset


def make_buffers(dataset, num_seeds: int, train_config) -> List[ReplayBuffer]:
  """One replay buffer per seed over the shared offline data (the released code's FIFO
  capacity, docs/fidelity.md; offline data kept whole with `replay_keep_offline` or
  `offline_batch_ratio`)."""
  keep = train_config.replay_keep_offline or train_config.get("offline_batch_ratio") is not None
  capacity = None if keep else train_config.replay_capacity
  return [ReplayBuffer(dataset, train_config.online_steps, capacity) for _ in range(num_seeds)]


def sample_batch(buffers, rngs, train_config, chunk_len: int,
                 discounts: Sequence[float]) -> Dict[str, np.ndarray]:
  """One minibatch per member, stacked: [M, B, ...] (each with its own discount); with
  `train.offline_batch_ratio` that fraction of each from the offline data (and, with
  `train.bc_offline_only`, an `offline` mask once online data is held)."""
  ratio, tc = train_config.get("offline_batch_ratio"), train_config
  if ratio is None:
    batches = [b.sample(r, tc.batch_size, chunk_len, d)
               for b, r, d in zip(buffers, rngs, discounts)]
  else:
    batches = [b.sample_mixed(r, tc.batch_size, chunk_len, d, ratio,
                              tc.get("bc_offline_only", False) and b.online_size > 0)
               for b, r, d in zip(buffers, rngs, discounts)]
  return stack(batches)


def stack(batches: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


class Outputs:
  """CSV / TensorBoard loggers of the members this process writes, and the progress bar.

  `positions` are those members' places in the process's host lists; rows are passed for
  every member the process holds and written for those.
  """

  def __init__(self, run_dirs: Sequence[str], positions: Sequence[int], train_config,
               resume_step: Optional[int], step: int, show: bool):
    tc = train_config
    self.positions = list(positions)
    self.loggers = [MetricsLogger(d, tensorboard=tc.tensorboard, resume_step=resume_step,
                                  wandb_project=tc.get("wandb_project", ""))
                    for d in run_dirs]
    self.bar = tqdm(total=tc.offline_steps + tc.online_steps, initial=step,
                    desc="offline" if step < tc.offline_steps else "online",
                    disable=not (tc.progress_bar and show), dynamic_ncols=True, mininterval=2.0)

  def write(self, stream: str, step: int, rows: Sequence[Dict[str, float]]):
    for logger, position in zip(self.loggers, self.positions):
      logger.write(stream, step, rows[position])

  def close(self):
    self.bar.close()
    for logger in self.loggers:
      logger.close()


@dataclasses.dataclass
class Run:
  """Everything about a run that does not change while it trains."""
  config: Any
  layout: Layout
  envs: MemberEnvs               # training and evaluation environments of this process's members
  offline_update: Callable       # (agents, batches [k, M, B, ...], keys) -> (agents, keys, info)
  online_update: Callable        # (agents, batch [M, B, ...], keys) -> (agents, keys, info)
  start_online: Callable         # agents -> agents (pi_old <- pi_theta)
  placement: Any                 # parallel.Placement: mesh, padding, this process's members
  discounts: List[float]         # gamma of each member this process holds (may be swept)
  data: OfflineData
  ckpt: Optional[checkpoint.Checkpointer]
  outputs: Outputs
  watch: FaultWatch
  signals: StopSignals
  is_main: bool                  # the one process that writes
  multi_host: bool
  t_start: float                 # when this process started training
  # Seconds this process spent per part of the run (summary.json's "time_s").
  timing: Dict[str, float] = dataclasses.field(default_factory=collections.Counter)

  @contextlib.contextmanager
  def timed(self, part: str):
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.timing[part] += time.perf_counter() - t0

  @property
  def tc(self):
    return self.config.train

  @property
  def ac(self):
    return self.config.agent

  def close(self):
    self.envs.close()
    self.outputs.close()
    if self.ckpt is not None:
      self.ckpt.wait()
      self.ckpt.close()
