"""PretextDataset: manifest rows x a task's window choice x decoding -> sample dicts, in workers.

Randomness: sample i of epoch e draws from `np.random.default_rng([seed, e, i])`, so a run is
reproducible for a seed whatever the number of workers, and differs across epochs and samples.
A file that fails to decode becomes a `Skipped` marker: `collate` drops it and lists it in "skipped".
With `replace_failed` (pretraining) the sample is instead replaced by one of another row (any but
the one that failed), drawn from `default_rng([seed, e, i, attempt])`, and the failure still
counted: batches keep their size, which DDP's gathers, BatchNorm and gradient accumulation rely on.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

from mmssl.data.clip import DecodedClip, Skipped, Window
from mmssl.data.manifest import ManifestRow
from mmssl.io import CrashedDecodeError, MediaError, VideoReader, load_audio, open_container

log = logging.getLogger(__name__)


class SampleMaker(Protocol):
    """The CPU half of a pretext task."""

    needs_audio: bool

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

    def decode(self, index: int, rng: np.random.Generator) -> DecodedClip:
        """The task's window of row `index`, decoded (raises MediaError for bad files)."""
        row = self.rows[index]
        if row.path in self.crashed:
            raise CrashedDecodeError(row.path, self.crashed[row.path])
        return decode_window(row, self.task.window(row, rng), self.frame_size, self.backend, self.sample_rate)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, object] | Skipped:
        """Sample `key`: a row index (of the epoch set with `set_epoch`) or an (epoch, index) pair,
        as `EpochSampler` yields, so persistent workers need no epoch update. A replacement sample
        lists the failures before it under "skipped"."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        rng, row, failed = self.rng(index, epoch), index, []
        while True:
            try:
                sample = self.task.make_sample(self.decode(row, rng), rng)
                return {**sample, "skipped": failed} if failed else sample
            except MediaError as e:
                skipped, message = Skipped(self.rows[row].path, e.kind, e.detail), str(e)
            if not self.replace_failed:
                log.warning("skipping %s", message)
                return skipped
            failed.append(skipped)
            if len(failed) > MAX_REPLACEMENTS:
                raise SkipLimitExceeded(f"{len(failed)} decodes in a row failed ({dict(kinds(failed))}) for "
                                        f"sample {index} of epoch {epoch}; the last: {message}")
            rng = np.random.default_rng([self.seed, epoch, index, len(failed)])
            row = (row + 1 + int(rng.integers(max(len(self.rows) - 1, 1)))) % len(self.rows)  # another row
            log.warning("skipping %s; sample %d of epoch %d takes row %d instead", message, index, epoch, row)


def decode_window(row: ManifestRow, window: Window, frame_size: int | None = None, backend: str = "pyav",
                  sample_rate: int = 16000) -> DecodedClip:
    """Exactly the frames (scaled in the decoder with the aspect ratio kept, short side to
    frame_size, and centre-cropped to frame_size x frame_size) and the audio span of `window`
    (raises MediaError for bad files). A window without frames decodes no video. Tasks place audio
    at frame number / row.fps; with frames, the span moves by their `clock_drift`, so that it stays
    with them on a variable frame rate."""
    size = (frame_size, frame_size) if frame_size else None
    video = torch.empty(0, *(size or (0, 0)), 3, dtype=torch.uint8)
    audio, drift = None, 0.0
    with open_container(row.path) as container:  # one open for both streams
        if len(window.frames):
            with VideoReader(row.path, size=size, backend=backend, keep_aspect=True, container=container) as reader:
                video = reader.get_frames(window.frames)
                if window.audio_start_s is not None:
                    drift = clock_drift(reader.timestamps(window.frames).numpy(), window.frames, row.fps, sample_rate)
        if window.audio_start_s is not None:
            audio = load_audio(row.path, window.audio_start_s + drift, window.audio_duration_s, sample_rate, container)
    return DecodedClip(video, audio, window, row)


def clock_drift(times: np.ndarray, frames: np.ndarray, fps: float, sample_rate: int) -> float:
    """How far (s, to the audio sample) the frames' own times lie from frame number / `fps`, on
    average: a task places a clip's audio on that nominal clock, which a variable frame rate leaves;
    0 at a constant rate."""
    return round(float(np.mean(times - np.asarray(frames) / fps)) * sample_rate) / sample_rate


def collate(items: list[dict[str, object] | Skipped]) -> dict[str, object]:
    """Stack the samples; the batch's "skipped" entry lists the failed decodes as `Skipped`
    (file, reason): dropped samples, and those a replacement sample stands for."""
    samples = [item for item in items if not isinstance(item, Skipped)]
    skipped = [item for item in items if isinstance(item, Skipped)]
    skipped += [failure for sample in samples for failure in sample.pop("skipped", [])]
    batch: dict[str, object] = default_collate(samples) if samples else {}
    batch["skipped"] = skipped
    return batch


def kinds(skipped: Iterable[Skipped]) -> Counter:
    """Failed decodes counted by reason."""
    return Counter(failure.kind for failure in skipped)


class SkipLimitExceeded(RuntimeError):
    pass


class SkipCounter:
    """Counts skipped samples by reason; fails the run when their share passes `max_share`."""

    def __init__(self, max_share: float, excluded: Counter | None = None) -> None:
        self.max_share = max_share
        self.excluded = excluded or Counter()
        self.reset()

    def reset(self) -> None:
        self.seen = 0
        self.skipped: Counter = Counter()

    def update(self, batch_size: int, skipped: list[Skipped]) -> None:
        self.seen += batch_size + len(skipped)
        self.skipped.update(kinds(skipped))
        total = sum(self.skipped.values())
        if self.seen >= 20 and total > self.max_share * self.seen:
            raise SkipLimitExceeded(f"{total} of {self.seen} samples failed to decode ({self.summary()}), "
                                    f"more than data.max_skip_share={self.max_share}")

    def summary(self) -> str:
        parts = [f"{k}: {v}" for k, v in sorted(self.skipped.items())]
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

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        per_rank = -(-self.length // self.world_size)
        return -(-per_rank // self.batch_size) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.length) if self.shuffle
                 else np.arange(self.length))
        padded = np.resize(order, len(self) * self.world_size)  # repeat the start to even out ranks and batches
        for index in padded[self.rank::self.world_size][self.start:].tolist():
            yield self.epoch, index
