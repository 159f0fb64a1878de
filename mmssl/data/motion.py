"""High-motion tuple choice (Shuffle and Learn, OPN) and the per-video motion profiles it weighs by.

Shuffle and Learn samples its tuples from high-motion windows, with coarse optical-flow magnitude
as the per-frame weight. Our proxy (docs/methods.md#order) is a video's motion *profile*: the mean
absolute difference between consecutive frames (`frame_motion`) of one decode of all its frames at
`size` px (short side scaled to it, centre-cropped square), every frame pair (stride 1), as float16.

Profiles are computed once per video before training, in parallel (`store_profiles`: `mmssl
build-manifest --motion` and the dataset generators), and stored beside the manifest
(`profile_file`): one flat float16 array holding each row's num_frames - 1 values from the row's
`motion_offset` column on; DataLoader workers memory-map it. A manifest without them still trains:
each worker then decodes every video it meets once, and keeps the profiles of the `CACHE_VIDEOS`
videos it used last (`ProfileCache`).
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np
import pebble

from mmssl.config import AT_LEAST_1, NON_NEGATIVE, Bound
from mmssl.data.isolation import isolated_map
from mmssl.data.manifest import ManifestError, ManifestRow, first_frame
from mmssl.io import MediaError, VideoReader, open_container

MOTION_SIZE = 32  # px: the profile decode's square, `MotionConfig.size`'s default
MOTION_COLUMN = "motion_offset"  # manifest column: where the row's profile starts in `profile_file`
CACHE_VIDEOS = 10_000  # profiles a worker keeps without stored ones: ~7.5 MB for 10 s videos at 30 fps
DECODE_CHUNK = 256  # frames decoded at once for a profile, so a long video's decode stays small
PROFILE_TIMEOUT_S = 300.0  # one video's profile decode, before it is stopped and the video stored without


def frame_motion(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference between consecutive frames, in [0, 1] colour units: uint8 or
    float frames [T, H, W, C] (uint8 read as /255) -> float64 [T - 1]; entry t is the motion
    between frames t and t + 1."""
    x = np.asarray(frames, dtype=np.float32)
    if np.asarray(frames).dtype == np.uint8:
        x /= 255
    if len(x) < 2:
        return np.zeros(0)
    return np.abs(np.diff(x, axis=0)).reshape(len(x) - 1, -1).mean(1).astype(np.float64)


def cumulative_motion(motion: np.ndarray) -> np.ndarray:
    """Motion accumulated from frame 0 to every frame: [T - 1] per-step motion -> [T], starting
    at 0. The motion between frames p < q is `cum[q] - cum[p]`."""
    return np.concatenate([[0.0], np.cumsum(np.asarray(motion, dtype=np.float64))])


def tuple_motion(cum: np.ndarray, frames: np.ndarray) -> float:
    """How much a frame tuple moves: the motion across the smaller of the gaps between its frames
    in time order. A tuple whose frames lie in a static stretch scores ~0: its order is invisible."""
    ordered = np.sort(np.asarray(frames))
    return float(np.diff(cum[ordered]).min())


def pick_by_motion(candidates: list[np.ndarray], cum: np.ndarray, rng: np.random.Generator,
                   power: float = 1.0) -> int:
    """Index of one candidate tuple, drawn with probability proportional to tuple_motion ** power
    (uniform when every candidate is static)."""
    scores = np.array([tuple_motion(cum, c) for c in candidates]) ** power
    total = scores.sum()
    if not np.isfinite(total) or total <= 0:
        return int(rng.integers(len(candidates)))
    return int(rng.choice(len(candidates), p=scores / total))


# ----------------------------------------------------------------------------- profiles

def video_motion(path: str | Path, size: int = MOTION_SIZE, frames: range | None = None,
                 data: bytes | None = None) -> np.ndarray:
    """The profile of the video at `path` (`data`: its bytes, decoded from memory): float16 [T - 1],
    `frame_motion` of its T `frames` (default all, those past its end left out) decoded at `size` px,
    `DECODE_CHUNK` frames at a time (raises MediaError for a bad file)."""
    steps, last = [], None
    with open_container(path, data) as container, VideoReader(path, size=(size, size), keep_aspect=True,
                                                              container=container) as reader:
        frames = frames or range(reader.num_frames)
        stop = min(frames.stop, reader.num_frames)
        for start in range(frames.start, stop, DECODE_CHUNK):
            chunk = reader.get_frames(np.arange(start, min(start + DECODE_CHUNK, stop))).numpy()
            steps.append(frame_motion(chunk if last is None else np.concatenate([last[None], chunk])))
            last = chunk[-1]
    return np.concatenate(steps).astype(np.float16)


def row_motion(row: ManifestRow, size: int = MOTION_SIZE, data: bytes | None = None) -> np.ndarray:
    """The profile of the row's video (`data`: its bytes): of its clip, for a clip cut from a longer
    file (`first_frame`)."""
    first = first_frame(row)
    return video_motion(row.path, size, range(first, first + row.num_frames) if first else None, data)


def fit_steps(steps: np.ndarray, num_frames: int) -> np.ndarray:
    """A profile at the manifest's frame count: num_frames - 1 steps, cut, or padded with static
    ones when the decode gave fewer frames than the manifest counts."""
    wanted = max(num_frames - 1, 0)
    if len(steps) >= wanted:
        return steps[:wanted]
    return np.concatenate([steps, np.zeros(wanted - len(steps), steps.dtype)])


def profile_file(manifest: str | Path, size: int = MOTION_SIZE) -> Path:
    """Where `manifest`'s stored profiles at `size` px are: `<stem>.motion<size>.npy` beside it."""
    manifest = Path(manifest)
    return manifest.with_name(f"{manifest.stem}.motion{size}.npy")


def _row_motion(row: ManifestRow, size: int) -> np.ndarray | str:
    """Worker: the row's profile, or why it could not be computed."""
    try:
        return row_motion(row, size)
    except MediaError as e:
        return _motion_failed(row, e.kind, e.detail)
    except Exception as e:  # noqa: BLE001 - a bad file must not abort the build
        return _motion_failed(row, "error", f"{type(e).__name__}: {e}")


def _motion_failed(row: ManifestRow, kind: str, detail: str) -> str:
    return f"[{kind}] {row.path}: {detail}"


@dataclass
class StoredResult:
    """What `store_profiles` did: the rows with their `motion_offset`, the videos whose profile failed
    (kept without one: a worker computes it, or skips the video, as without stored profiles)."""

    rows: list[ManifestRow]
    failed: list[str]
    path: Path
    seconds: float


def store_profiles(rows: Iterable[ManifestRow], manifest: str | Path, size: int = MOTION_SIZE,
                   workers: int | None = None, timeout_s: float = PROFILE_TIMEOUT_S) -> StoredResult:
    """Compute every row's profile at `size` px in `workers` processes (default: all cores; 1: in
    this process; each decode stopped after `timeout_s`) and write them (`write_profiles`)."""
    rows, started = list(rows), time.perf_counter()
    compute = partial(_row_motion, size=size)
    workers = max(1, min(workers or os.cpu_count() or 1, len(rows)))
    with ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(pebble.ProcessPool(max_workers=workers))
            results = list(isolated_map(pool, compute, rows, _motion_failed, 4 * workers, timeout_s, "profile"))
        else:
            results = list(map(compute, rows))
    stored = write_profiles(rows, [None if isinstance(r, str) else r for r in results], manifest, size)
    return StoredResult(stored, [r for r in results if isinstance(r, str)], profile_file(manifest, size),
                        time.perf_counter() - started)


def write_profiles(rows: list[ManifestRow], profiles: list[np.ndarray | None], manifest: str | Path,
                   size: int = MOTION_SIZE) -> list[ManifestRow]:
    """Write the rows' profiles (None: the row has none), as float16 fitted to their rows
    (`fit_steps`), to `profile_file(manifest, size)`, and remove `manifest`'s profiles at other sizes,
    whose offsets may no longer fit. The rows with their `motion_offset`, for the caller to write as
    the manifest."""
    offset, stored, kept = 0, [], [np.zeros(0, np.float16)]
    for row, steps in zip(rows, profiles, strict=True):
        extra = {k: v for k, v in row.extra.items() if k != MOTION_COLUMN}
        if steps is not None:
            kept.append(fit_steps(np.asarray(steps, np.float16), row.num_frames))
            extra[MOTION_COLUMN] = str(offset)
            offset += len(kept[-1])
        stored.append(replace(row, extra=extra))
    path = profile_file(manifest, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    for other in path.parent.glob(f"{Path(manifest).stem}.motion[0-9]*.npy"):
        other.unlink()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.concatenate(kept))
    os.replace(tmp, path)
    return stored


class StoredProfiles:
    """A manifest's stored profiles at one size (`store_profiles`), memory-mapped in each process on
    first use: reading one costs no memory of the process's own, whatever the number of videos."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._steps: np.ndarray | None = None

    def get(self, row: ManifestRow) -> np.ndarray | None:
        """The row's stored float16 [num_frames - 1] profile; None when the manifest has none for it."""
        offset = row.extra.get(MOTION_COLUMN)
        if not offset:
            return None
        if self._steps is None:
            self._steps = np.load(self.path, mmap_mode="r")
        start = int(offset)
        steps = self._steps[start:start + row.num_frames - 1]
        if len(steps) < row.num_frames - 1:
            raise ManifestError(f"{self.path} ends before {row.path}'s profile: it was stored for another "
                                "manifest; build the manifest again with --motion")
        return steps

    def __getstate__(self) -> dict:
        return {"path": self.path, "_steps": None}  # a worker maps the file itself


class ProfileCache:
    """The profiles a worker computed, least recently used dropped beyond `capacity` videos (an LRU)."""

    def __init__(self, capacity: int = CACHE_VIDEOS) -> None:
        self.capacity = capacity
        self._profiles: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._profiles)

    def get(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The profile under `key`, from `compute()` when not cached (then cached)."""
        steps = self._profiles.get(key)
        if steps is None:
            steps = self._profiles[key] = compute()
            if len(self._profiles) > self.capacity:
                self._profiles.popitem(last=False)
        else:
            self._profiles.move_to_end(key)
        return steps


# ----------------------------------------------------------------------------- motion weighting

@dataclass
class MotionConfig:
    """High-motion tuple choice (S&L, OPN): keep one of `candidates` uniformly drawn tuples with
    probability proportional to its motion ** `power` (the video's profile at `size` px: stored
    beside the manifest, or computed by each worker). candidates 1: uniform sampling, no profile."""

    candidates: int = 16
    power: float = 2.0
    size: int = MOTION_SIZE

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "candidates": AT_LEAST_1, "power": NON_NEGATIVE, "size": AT_LEAST_1}


class MotionWeighting:
    """High-motion tuple choice (Shuffle and Learn's and OPN's flow-weighted sampling, with
    `frame_motion` as the proxy): draw `candidates` tuples with `draw()` and keep one with
    probability proportional to its `tuple_motion` ** `power`. Profiles come from `stored` (set by
    `use_stored_profiles`), else from one decode per video, kept in `cache`.
    `candidates` 1: uniform sampling, no profile."""

    def __init__(self, candidates: int = 16, power: float = 2.0, size: int = MOTION_SIZE) -> None:
        self.candidates = max(1, candidates)
        self.power = power
        self.size = size
        self.stored: StoredProfiles | None = None
        self.cache = ProfileCache()

    def choose(self, row: ManifestRow, draw: Callable[[], np.ndarray], rng: np.random.Generator) -> np.ndarray:
        candidates = [draw() for _ in range(self.candidates)]
        if len(candidates) == 1:
            return candidates[0]
        return candidates[pick_by_motion(candidates, self.profile(row), rng, self.power)]

    def profile(self, row: ManifestRow) -> np.ndarray:
        """Cumulative motion [num_frames] of the video (`cumulative_motion` of its profile)."""
        steps = self.stored.get(row) if self.stored is not None else None
        if steps is None:
            key = f"{row.path}#{first_frame(row)}" if first_frame(row) else row.path  # two clips of one file: two keys
            steps = self.cache.get(key, lambda: row_motion(row, self.size))
        return cumulative_motion(fit_steps(steps, row.num_frames))


def use_stored_profiles(weightings: Iterable[MotionWeighting], manifest: str | Path,
                        rows: Iterable[ManifestRow]) -> str | None:
    """Point each weighting that weighs (candidates > 1) at `manifest`'s stored profiles at its size.
    When some have none: what the run does instead and how to store them, to say once at start."""
    has_offsets = any(MOTION_COLUMN in row.extra for row in rows)
    missing = set()
    for weighting in weightings:
        path = profile_file(manifest, weighting.size)
        weighting.stored = StoredProfiles(path) if has_offsets and path.is_file() else None
        if weighting.candidates > 1 and weighting.stored is None:
            missing.add(weighting.size)
    if not missing:
        return None
    return (f"{manifest} has no stored motion profiles at {', '.join(map(str, sorted(missing)))} px: every "
            f"DataLoader worker decodes each video it meets in full for the high-motion tuple choice (keeping "
            f"{CACHE_VIDEOS:,} videos' profiles); building the manifest with --motion (--motion-size) stores "
            "them once and makes the first epochs faster")
