"""The pretraining DataLoader, and batches that go on when one of its worker processes dies.

A worker dies when a decoder library crashes on a file (a segfault in FFmpeg) or the kernel kills
it for memory; PyTorch then raises "DataLoader worker (pid ...) is killed by signal" (or, for a
batch still in transit from it, an EOFError or ConnectionError) and a long run would end there.
`RecoveringLoader` instead decodes the samples that were in flight again, each in its own child
process (`isolated_map`); the files whose decode kills its process join the dataset's `crashed`
files, which are never decoded again (failed decodes of kind "crashed", replaced and counted like
any other), and fresh workers go on at the same sample. The run sees the
batches it would have seen but for those files, and every rank keeps its step count (DDP stays in
lockstep). A death that no file explains restarts the workers too, `MAX_UNEXPLAINED_RESTARTS`
times in a run at most.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from itertools import islice
from typing import Protocol

import numpy as np
import pebble
import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils import signal_handling

from mmssl.data.clip import DecodedClip
from mmssl.data.dataset import EpochSampler, PretextDataset, collate
from mmssl.data.isolation import isolated_map
from mmssl.data.manifest import ManifestRow

log = logging.getLogger(__name__)

PREFETCH_BATCHES = 4  # per worker
MAX_UNEXPLAINED_RESTARTS = 3
ISOLATED_DECODE_TIMEOUT_S = 120.0
WORKER_DIED = "DataLoader worker (pid"  # how PyTorch's messages of a dead worker begin
# A worker that dies just after putting a batch on the queue takes with it the process that hands its
# tensors' file descriptors over: the main process then fails to fetch them with one of these.
IN_TRANSIT = (EOFError, ConnectionError)


def build_loader(dataset: PretextDataset, sampler: EpochSampler, *, batch_size: int, num_workers: int, seed: int,
                 device: torch.device, persistent: bool = True) -> DataLoader:
    """The pretraining DataLoader: `num_workers` workers, persistent unless told (they keep the task's
    per-video caches), `PREFETCH_BATCHES` batches prefetched per worker, pinned memory when feeding a
    GPU; `seed` seeds the workers' base seed."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
        num_workers=num_workers, pin_memory=device.type == "cuda",
        prefetch_factor=PREFETCH_BATCHES if num_workers else None, persistent_workers=persistent and num_workers > 0,
        generator=torch.Generator().manual_seed(seed),  # keeps the global RNG untouched
    )


class WorkerDeathError(RuntimeError):
    """DataLoader workers died more than `MAX_UNEXPLAINED_RESTARTS` times with no file to blame."""


def report_worker_deaths_when_waiting() -> None:
    """Let a dead worker's error come only from the DataLoader's wait for data. PyTorch's SIGCHLD
    handler raises it wherever the main process is (mid-forward, mid-optimizer-step, where no
    recovery is safe); without the handler the DataLoader finds the dead worker when it next waits
    for that worker's batch (it checks its workers every 5 s of waiting), inside
    `RecoveringLoader.epoch`. PyTorch installs the handler once per process, on the first iterator
    with workers, unless its flag says it is set: so the flag is set, and a handler already
    installed is removed (SIGCHLD's default action is to ignore it)."""
    if threading.current_thread() is not threading.main_thread():
        return  # PyTorch sets no handler from other threads either
    if getattr(signal.getsignal(signal.SIGCHLD), "__module__", None) == signal_handling.__name__:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal_handling._SIGCHLD_handler_set = True


class SurvivingLoader:
    """Batches epoch by epoch from `loader`, surviving the death of a worker: `restart` finds the file
    that killed it (`blame`) and starts fresh workers, which go on at the same sample (`go_to`)."""

    loader: DataLoader
    batch_size: int
    unexplained_restarts = 0

    def go_to(self, epoch: int, position: int) -> None:
        """Make the loader's next iteration give `epoch` from sample `position` of this rank's share."""
        raise NotImplementedError

    def restart(self, epoch: int, position: int, error: Exception) -> None:
        """After a worker died at sample `position` of `epoch`: blame the file, build `loader` anew."""
        raise NotImplementedError

    def epoch(self, epoch: int, start: int = 0) -> Iterator[dict]:
        """The batches of `epoch` from sample `start` of this rank's share (a multiple of the batch size)."""
        position = start
        while True:
            self.go_to(epoch, position)
            try:
                for batch in self.loader:
                    position += self.batch_size
                    yield batch
                return
            except (RuntimeError, *IN_TRANSIT) as e:
                if isinstance(e, RuntimeError) and not str(e).startswith(WORKER_DIED):
                    raise
                self.restart(epoch, position, e)

    def blame(self, dataset: Decoding, keys: list[tuple], workers: int, error: Exception, where: str) -> None:
        """Mark the files among the in-flight samples `keys` (as `crashing_files` takes them) whose decode
        kills its process crashed in `dataset`, and say so; a death no file explains is counted
        (WorkerDeathError past MAX_UNEXPLAINED_RESTARTS in a run)."""
        culprits = crashing_files(dataset, keys, workers)
        if not culprits:
            self.unexplained_restarts += 1
            if self.unexplained_restarts > MAX_UNEXPLAINED_RESTARTS:
                raise WorkerDeathError(f"DataLoader workers died {self.unexplained_restarts} times with no file "
                                       f"to blame (each of the samples in flight decodes alone): {error}") from error
        log.warning("%s at %s; %s; restarting the workers", error, where,
                    f"not decoded again: {culprits}" if culprits else "no sample in flight kills a process alone")
        dataset.crashed.update(culprits)


class RecoveringLoader(SurvivingLoader):
    """`build_loader`'s batches, epoch by epoch, surviving the death of a worker (module docstring)."""

    def __init__(self, dataset: PretextDataset, sampler: EpochSampler, *, batch_size: int, num_workers: int,
                 seed: int, device: torch.device, persistent: bool = True) -> None:
        report_worker_deaths_when_waiting()
        self.dataset, self.sampler = dataset, sampler
        self.batch_size, self.num_workers, self.seed, self.device = batch_size, num_workers, seed, device
        self.persistent = persistent
        self.loader = self.build()

    def samples_per_epoch(self) -> int:
        """Every rank's samples in an epoch (whole batches)."""
        return len(self.sampler)

    def build(self) -> DataLoader:
        """A fresh `build_loader` (new worker processes, holding the dataset as it is now)."""
        return build_loader(self.dataset, self.sampler, batch_size=self.batch_size, num_workers=self.num_workers,
                            seed=self.seed, device=self.device, persistent=self.persistent)

    def go_to(self, epoch: int, position: int) -> None:
        self.sampler.set_epoch(epoch, start=position)

    def restart(self, epoch: int, position: int, error: Exception) -> None:
        """Find the files among the in-flight samples (from `position` on) whose decode kills its
        process, mark them crashed, and start fresh workers (which hold the updated dataset)."""
        in_flight = self.num_workers * PREFETCH_BATCHES * self.batch_size
        self.sampler.set_epoch(epoch, start=position)
        self.blame(self.dataset, list(islice(self.sampler, in_flight)), self.num_workers, error,
                   f"sample {position} of epoch {epoch}")
        self.loader = self.build()


class Decoding(Protocol):
    """What `crashing_files` decodes samples of: a `PretextDataset`, or a `ShardDataset` (keys holding members)."""

    rows: list[ManifestRow]
    crashed: dict[str, str]

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator: ...

    def decode(self, index: int, rng: np.random.Generator, *data: object) -> DecodedClip: ...


_dataset: Decoding | None = None  # in the child processes of `crashing_files`


def _hold(dataset: Decoding) -> None:
    global _dataset
    _dataset = dataset


def _decode(key: tuple) -> None:
    """Child: decode the window that sample (epoch, index) draws first from its own row (from what else
    the key holds: a shard's member); a failure the dataset handles (or any exception) is not what is
    searched for."""
    epoch, index, *data = key
    with contextlib.suppress(Exception):  # only a dead process counts
        _dataset.decode(index, _dataset.rng(index, epoch), *data)


def crashing_files(dataset: Decoding, keys: list[tuple], workers: int,
                   timeout_s: float = ISOLATED_DECODE_TIMEOUT_S) -> dict[str, str]:
    """The files among the samples `keys` ((epoch, index) pairs; a `ShardDataset`'s add the member) whose
    decode, alone in a child process, kills that process or runs past `timeout_s`: file -> what happened."""
    unique = list(dict.fromkeys(key for key in keys if dataset.rows[key[1]].path not in dataset.crashed))
    with pebble.ProcessPool(max_workers=max(workers, 1), initializer=_hold, initargs=(dataset,)) as pool:
        outcomes = isolated_map(pool, _decode, unique, lambda key, kind, detail: (key, detail),
                                4 * max(workers, 1), timeout_s, "decode")
        failures = [outcome for outcome in outcomes if outcome is not None]
    return {dataset.rows[key[1]].path: detail for key, detail in failures}
