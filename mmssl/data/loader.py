"""The pretraining DataLoader, and batches that go on when one of its worker processes dies.

A worker dies when a decoder library crashes on a file (a segfault in FFmpeg) or the kernel kills
it for memory; PyTorch then raises "DataLoader worker (pid ...) is killed by signal" and a long run
would end there. `RecoveringLoader` instead decodes the samples that were in flight again, each in
its own child process (`isolated_map`); the files whose decode kills its process join the
dataset's `crashed` files, which are never decoded again (failed decodes of kind "crashed",
replaced and counted like any other), and fresh workers go on at the same sample. The run sees the
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

import pebble
import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils import signal_handling

from mmssl.data.dataset import EpochSampler, PretextDataset, collate
from mmssl.data.isolation import isolated_map

log = logging.getLogger(__name__)

PREFETCH_BATCHES = 4  # per worker
MAX_UNEXPLAINED_RESTARTS = 3
ISOLATED_DECODE_TIMEOUT_S = 120.0
WORKER_DIED = "DataLoader worker (pid"  # how PyTorch's messages of a dead worker begin


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


class RecoveringLoader:
    """`build_loader`'s batches, epoch by epoch, surviving the death of a worker (module docstring)."""

    def __init__(self, dataset: PretextDataset, sampler: EpochSampler, *, batch_size: int, num_workers: int,
                 seed: int, device: torch.device, persistent: bool = True) -> None:
        report_worker_deaths_when_waiting()
        self.dataset, self.sampler = dataset, sampler
        self.batch_size, self.num_workers, self.seed, self.device = batch_size, num_workers, seed, device
        self.persistent = persistent
        self.loader = self.build()
        self.unexplained_restarts = 0

    def samples_per_epoch(self) -> int:
        """Every rank's samples in an epoch (whole batches)."""
        return len(self.sampler)

    def build(self) -> DataLoader:
        """A fresh `build_loader` (new worker processes, holding the dataset as it is now)."""
        return build_loader(self.dataset, self.sampler, batch_size=self.batch_size, num_workers=self.num_workers,
                            seed=self.seed, device=self.device, persistent=self.persistent)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[dict]:
        """The batches of `epoch` from sample `start` of this rank's share (`EpochSampler.set_epoch`)."""
        position = start
        while True:
            self.sampler.set_epoch(epoch, start=position)
            try:
                for batch in self.loader:
                    position += self.batch_size
                    yield batch
                return
            except RuntimeError as e:
                if not str(e).startswith(WORKER_DIED):
                    raise
                self.restart(epoch, position, e)

    def restart(self, epoch: int, position: int, error: RuntimeError) -> None:
        """Find the files among the in-flight samples (from `position` on) whose decode kills its
        process, mark them crashed, and start fresh workers (which hold the updated dataset)."""
        in_flight = self.num_workers * PREFETCH_BATCHES * self.batch_size
        self.sampler.set_epoch(epoch, start=position)
        culprits = crashing_files(self.dataset, list(islice(self.sampler, in_flight)), self.num_workers)
        if not culprits:
            self.unexplained_restarts += 1
            if self.unexplained_restarts > MAX_UNEXPLAINED_RESTARTS:
                raise WorkerDeathError(f"DataLoader workers died {self.unexplained_restarts} times with no file "
                                       f"to blame (each of the samples in flight decodes alone): {error}") from error
        log.warning("%s at sample %d of epoch %d; %s; restarting the workers", error, position, epoch,
                    f"not decoded again: {culprits}" if culprits else "no sample in flight kills a process alone")
        self.dataset.crashed.update(culprits)
        self.loader = self.build()


_dataset: PretextDataset | None = None  # in the child processes of `crashing_files`


def _hold(dataset: PretextDataset) -> None:
    global _dataset
    _dataset = dataset


def _decode(key: tuple[int, int]) -> None:
    """Child: decode the window that sample (epoch, index) draws first from its own row; a failure
    the dataset handles (or any exception) is not what is searched for."""
    epoch, index = key
    with contextlib.suppress(Exception):  # only a dead process counts
        _dataset.decode(index, _dataset.rng(index, epoch))


def crashing_files(dataset: PretextDataset, keys: list[tuple[int, int]], workers: int,
                   timeout_s: float = ISOLATED_DECODE_TIMEOUT_S) -> dict[str, str]:
    """The files among the samples `keys` ((epoch, index) pairs) whose decode, alone in a child
    process, kills that process or runs past `timeout_s`: file -> what happened."""
    unique = list(dict.fromkeys(key for key in keys if dataset.rows[key[1]].path not in dataset.crashed))
    with pebble.ProcessPool(max_workers=max(workers, 1), initializer=_hold, initargs=(dataset,)) as pool:
        outcomes = isolated_map(pool, _decode, unique, lambda key, kind, detail: (key, detail),
                                4 * max(workers, 1), timeout_s, "decode")
        failures = [outcome for outcome in outcomes if outcome is not None]
    return {dataset.rows[index].path: detail for (_, index), detail in failures}
