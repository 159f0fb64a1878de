"""PretextDataset: manifest rows x a task's window choice x decoding -> sample dicts, in workers.

Randomness: sample i of epoch e draws from `np.random.default_rng([seed, e, i])`, so a run is
reproducible for a seed whatever the number of workers, and differs across epochs and samples.
A file that fails to decode becomes a `Skipped` marker: `collate` drops it and lists it in "skipped".
With `replace_failed` (pretraining) the sample is instead replaced by one of another row (any but
the one that failed), drawn from `default_rng([seed, e, i, attempt])`, and the failure still
counted: batches keep their size, which DDP's gathers, BatchNorm and gradient accumulation rely on.
`SkipCounter` stops a run on the distinct files that failed (docs/decoding.md, on MediaError kinds).
A task that trains on labels of its rows (`pseudo_labelled`) gets in each sample, under "row", the index
of the row it decoded: a replacement's own row, whose label it must be trained on.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

from mmssl import distributed
from mmssl.data.clip import DecodedClip, Skipped, Window
from mmssl.data.manifest import ManifestRow, first_frame
from mmssl.io import CrashedDecodeError, MediaError, VideoReader, load_audio, open_container

log = logging.getLogger(__name__)


class SampleMaker(Protocol):
    """The CPU half of a pretext task."""

    needs_audio: bool  # (and, optionally, `pseudo_labelled`: bool)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window: ...

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]: ...

    def min_frames(self, fps: float) -> int: ...


MAX_REPLACEMENTS = 10  # failures in a row at a share <= max_skip_share (5%): about 1e-13


class PretextDataset(Dataset):
    """Samples of one task from the rows of a manifest; each sample decodes only its window.
    Rows the task cannot use (no audio track for an audio task, too few frames for its window)
    are left out up front and counted in `excluded`. A file that fails to decode gives a `Skipped`
    marker, or with `replace_failed` a sample of another row (module docstring)."""

    def __init__(self, rows: Sequence[ManifestRow], task: SampleMaker, frame_size: int | None = None,
                 backend: str = "pyav", seed: int = 0, sample_rate: int = 16000, replace_failed: bool = False) -> None:
        self.task = task
        self.identify = getattr(task, "pseudo_labelled", False)  # samples carry their row's index
        self.replace_failed = replace_failed
        self.frame_size = frame_size
        self.backend = backend
        self.seed = seed
        self.sample_rate = sample_rate
        self.epoch = 0
        with_audio = [r for r in rows if r.has_audio or not task.needs_audio]
        self.rows = [r for r in with_audio if r.num_frames >= task.min_frames(r.fps)]
        counts = {"no_audio": len(rows) - len(with_audio), "too_short": len(with_audio) - len(self.rows)}
        self.excluded = Counter({kind: count for kind, count in counts.items() if count})
        self.crashed: dict[str, str] = {}  # file -> how decoding it killed a process; never decoded again

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])

    def decode(self, index: int, rng: np.random.Generator, data: bytes | None = None) -> DecodedClip:
        """The task's window of row `index`, decoded (`data`: the file's bytes, when held in memory;
        raises MediaError for bad files)."""
        row = self.rows[index]
        if row.path in self.crashed:
            raise CrashedDecodeError(row.path, self.crashed[row.path])
        return decode_window(row, self.task.window(row, rng), self.frame_size, self.backend, self.sample_rate, data)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, object] | Skipped | Unreplaced:
        """Sample `key`: a row index (of the epoch set with `set_epoch`) or an (epoch, index) pair,
        as `EpochSampler` yields, so persistent workers need no epoch update. A replacement sample
        lists the failures before it under "skipped"; after MAX_REPLACEMENTS failed replacements the
        sample gives up (`Unreplaced`)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        replace = (partial(self.replacement, epoch, index) if self.replace_failed else None)
        return sample_or_replacement(self.sample, lambda row: self.rows[row].path, index, self.rng(index, epoch),
                                     replace, f"sample {index} of epoch {epoch}")

    def sample(self, row: int, rng: np.random.Generator, data: bytes | None = None) -> dict[str, torch.Tensor]:
        """The task's sample of row `row` drawn with `rng` (`data`: the file's bytes, when held in memory)."""
        sample = self.task.make_sample(self.decode(row, rng, data), rng)
        if self.identify:
            sample["row"] = torch.tensor(row)
        return sample

    def replacement(self, epoch: int, index: int, failures: int, row: int) -> tuple[np.random.Generator, int]:
        return replacement(self.seed, epoch, index, failures, row, len(self.rows))


T = TypeVar("T")


def sample_or_replacement(make: Callable[[T, np.random.Generator], dict[str, torch.Tensor]], path: Callable[[T], str],
                          item: T, rng: np.random.Generator,
                          replace: Callable[[int, T], tuple[np.random.Generator, T]] | None,
                          where: str) -> dict[str, object] | Skipped | Unreplaced:
    """`make(item, rng)`; when its decode fails, a `Skipped` marker, or with `replace` (failures so far,
    the item that failed -> the generator and the item that stand in) the sample of a replacement that
    lists the failures before it under "skipped"; after MAX_REPLACEMENTS failed replacements the sample
    gives up (`Unreplaced`). `path`: an item's file; `where`: the sample, for the log."""
    failed: list[Skipped] = []
    while True:
        try:
            sample = make(item, rng)
            return {**sample, "skipped": failed} if failed else sample
        except MediaError as e:
            skipped, message = Skipped(path(item), e.kind, e.detail), str(e)
        if replace is None:
            log.warning("skipping %s", message)
            return skipped
        failed.append(skipped)
        if len(failed) > MAX_REPLACEMENTS:
            log.warning("skipping %s; %s gives up after %d failed decodes in a row", message, where, len(failed))
            return Unreplaced(tuple(failed))
        rng, item = replace(len(failed), item)
        log.warning("skipping %s; %s takes %s instead", message, where, path(item))


def replacement(seed: int, epoch: int, index: int, failures: int, row: int, length: int,
                ) -> tuple[np.random.Generator, int]:
    """The generator and the row (any of `length` but `row`, whose decode was the `failures`-th to
    fail) of the sample that replaces sample `index` of `epoch`."""
    rng = np.random.default_rng([seed, epoch, index, failures])
    return rng, (row + 1 + int(rng.integers(max(length - 1, 1)))) % length


def decode_window(row: ManifestRow, window: Window, frame_size: int | None = None, backend: str = "pyav",
                  sample_rate: int = 16000, data: bytes | None = None) -> DecodedClip:
    """Exactly the frames (scaled in the decoder with the aspect ratio kept, short side to
    frame_size, and centre-cropped to frame_size x frame_size) and the audio span of `window`
    (raises MediaError for bad files). A window without frames decodes no video. Tasks place audio
    at frame number / row.fps; with frames, the span moves by their `clock_drift`, so that it stays
    with them on a variable frame rate. Frame numbers and times are the row's: a row that is a clip cut
    from a longer file (`first_frame`) decodes within its clip. `data`: the file's bytes (a shard's
    member), decoded from memory."""
    size = (frame_size, frame_size) if frame_size else None
    video = torch.empty(0, *(size or (0, 0)), 3, dtype=torch.uint8)
    audio, drift = None, 0.0
    first = first_frame(row)
    frames = np.asarray(window.frames) + first
    with open_container(row.path, data) as container:  # one open for both streams
        if len(frames):
            with VideoReader(row.path, size=size, backend=backend, keep_aspect=True, container=container) as reader:
                video = reader.get_frames(frames)
                if window.audio_start_s is not None:
                    drift = clock_drift(reader.timestamps(frames).numpy(), frames, row.fps, sample_rate)
        if window.audio_start_s is not None:
            audio = load_audio(row.path, first / row.fps + window.audio_start_s + drift, window.audio_duration_s,
                               sample_rate, container)
    return DecodedClip(video, audio, window, row)


def clock_drift(times: np.ndarray, frames: np.ndarray, fps: float, sample_rate: int) -> float:
    """How far (s, to the audio sample) the frames' own times lie from frame number / `fps`, on
    average: a task places a clip's audio on that nominal clock, which a variable frame rate leaves;
    0 at a constant rate."""
    return round(float(np.mean(times - np.asarray(frames) / fps)) * sample_rate) / sample_rate


@dataclass(frozen=True)
class Unreplaced:
    """A sample whose decode and MAX_REPLACEMENTS replacements all failed: no sample, the batch is short."""

    failures: tuple[Skipped, ...]


def collate(items: list[dict[str, object] | Skipped | Unreplaced]) -> dict[str, object]:
    """Stack the samples; the batch's "skipped" entry lists the failed decodes as `Skipped`
    (file, reason): dropped samples, and those a replacement sample stands for or gave up on."""
    samples = [item for item in items if isinstance(item, dict)]
    skipped = [item for item in items if isinstance(item, Skipped)]
    skipped += [failure for item in items if isinstance(item, Unreplaced) for failure in item.failures]
    skipped += [failure for sample in samples for failure in sample.pop("skipped", [])]
    batch: dict[str, object] = default_collate(samples) if samples else {}
    batch["skipped"] = skipped
    return batch


def kinds(skipped: Iterable[Skipped]) -> Counter:
    """Failed decodes counted by reason."""
    return Counter(failure.kind for failure in skipped)


class SkipLimitExceeded(RuntimeError):
    """The run's bad files passed data.max_skip_share (every rank raises it at the same batch)."""


class SkipCounter:
    """A run's failed decodes. A file that failed once is bad: `bad` maps each to its first reason,
    the union over ranks (every rank calls `update` at every batch: a collective under DDP);
    `attempts` and `epoch_attempts` count every failed decode by reason on this rank. More bad files
    than `max_share` of the dataset's `size` files stop the run: a dataset with fewer never stops, one
    with more stops by the end of the first whole epoch, as an epoch reads every file."""

    def __init__(self, max_share: float, size: int, excluded: Counter | None = None) -> None:
        self.max_share, self.size = max_share, size
        self.limit = int(max_share * size + 1e-9)  # the most bad files a run goes on with (29 at 0.29 x 100)
        self.excluded = excluded or Counter()
        self.bad: dict[str, str] = {}
        self.attempts: Counter = Counter()
        self.start_epoch()

    def start_epoch(self) -> None:
        self.epoch_attempts: Counter = Counter()

    def update(self, skipped: list[Skipped], unreplaced: int = 0) -> None:
        """Count a batch's failed decodes, `unreplaced` of its samples having given up (`Unreplaced`).
        SkipLimitExceeded, on every rank, when the bad files pass the limit or a sample gave up."""
        self.attempts.update(kinds(skipped))
        self.epoch_attempts.update(kinds(skipped))
        new: dict[str, str] = {}
        for failure in skipped:
            if failure.path not in self.bad:
                new.setdefault(failure.path, failure.kind)
        gave_up = 0
        for rank_new, rank_unreplaced in distributed.gather_objects((new, unreplaced)):
            gave_up += rank_unreplaced
            for path, kind in rank_new.items():
                self.bad.setdefault(path, kind)
        if len(self.bad) > self.limit or gave_up:
            raise SkipLimitExceeded(self.stop_message(distributed.sum_counters(self.attempts), gave_up))

    def state(self) -> dict[str, dict[str, object]]:
        """What a checkpoint keeps: the bad files, and the failed decodes summed over the ranks (every
        rank calls this: a collective under DDP)."""
        return {"bad": dict(self.bad), "attempts": dict(distributed.sum_counters(self.attempts))}

    def restore(self, state: dict[str, dict[str, object]], paths: set[str], is_main: bool) -> None:
        """Go on from a checkpoint's `state()`: its bad files that the dataset still holds (`paths`: a
        manifest rebuilt since may have left some out), its failed decodes on rank 0 (where the ranks'
        counts are summed when reported)."""
        self.bad = {path: kind for path, kind in state["bad"].items() if path in paths}
        if is_main:
            self.attempts.update(state["attempts"])

    def bad_kinds(self) -> Counter:
        """The bad files counted by reason."""
        return Counter(self.bad.values())

    def stop_message(self, attempts: Counter, gave_up: int) -> str:
        """One line: why the run stops, the counts, and what to do."""
        why = (f"{gave_up} sample(s) and their {MAX_REPLACEMENTS} replacements all failed to decode; " if gave_up
               else "")
        counts = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.bad_kinds().items()))
        examples = ", ".join(list(self.bad)[:3])
        return (f"stopping: {why}{len(self.bad)} distinct files failed to decode ({counts}; "
                f"{sum(attempts.values())} failed decodes in all) of the {self.size} in the dataset, more than "
                f"data.max_skip_share={self.max_share} of them allows ({self.limit}); e.g. {examples}. Rebuild the "
                "manifest with tools/build_manifest.py --verify, which leaves out files that do not decode, or raise "
                "data.max_skip_share")

    def summary(self, attempts: Counter) -> str:
        """`attempts` (failed decodes by reason), the run's bad files, and rows left out before the run."""
        parts = [f"{k}: {v}" for k, v in sorted(attempts.items())]
        if self.bad:
            parts.append(f"distinct bad files so far: {len(self.bad)} of {self.size} (limit {self.limit})")
        parts += [f"{k} (excluded before the run): {v}" for k, v in sorted(self.excluded.items())]
        return ", ".join(parts) or "none"


class EpochSampler(Sampler[tuple[int, int]]):
    """A seeded permutation per epoch, split across ranks (like DistributedSampler), that can start
    part-way through an epoch so a resumed run sees exactly the samples it would have seen.
    Each rank's share is padded with the permutation's first samples to whole batches of
    `batch_size`, so every batch is full (no last batch of one sample for BatchNorm, one shape for
    torch.compile). Yields (epoch, index) pairs for `PretextDataset`."""

    def __init__(self, length: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 batch_size: int = 1) -> None:
        self.length = length
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.batch_size = batch_size
        self.epoch = 0
        self.start = 0  # position within this rank's share of the epoch
        self.weights: np.ndarray | None = None

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        per_rank = -(-self.length // self.world_size)
        return -(-per_rank // self.batch_size) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is not None:
            order = rng.choice(self.length, self.length, p=self.weights)
        else:
            order = rng.permutation(self.length) if self.shuffle else np.arange(self.length)
        padded = np.resize(order, len(self) * self.world_size)  # repeat the start to even out ranks and batches
        for index in padded[self.rank::self.world_size][self.start:].tolist():
            yield self.epoch, index
