"""Probing listed files into manifest rows. Each dataset's lister first *lists* candidates (path,
label, split, extras) and the files its split files name but the disk lacks; `probe_candidates`
then probes every candidate in worker processes and turns the readable ones into rows. One probing
path serves every format; its `BuildResult` reports every file left out with its reason.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import pairwise
from pathlib import Path

import numpy as np
import pebble

from mmssl.data.clip import Skipped
from mmssl.data.isolation import isolated_map
from mmssl.data.manifest import AUDIO_ERROR, SEGMENT_START, ManifestRow
from mmssl.io import MediaError, PermissionDeniedError, TooShortError, VideoReader, probe

DUPLICATE = "duplicate"  # Skipped kind: a file or folder listed already, or another file of a clip listed
# already (once in a manifest, never in two splits)


@dataclass(frozen=True)
class Candidate:
    """A file to probe and the manifest fields its dataset gives it."""

    path: str
    label: str = ""
    split: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    # (start, end) seconds of the clip where the file may be the whole video the clip was annotated in
    # (a YouTube download named by the video's id): the row is that segment when the file is longer
    segment: tuple[float, float] | None = None


@dataclass
class Listing:
    """What a format's lister found: candidates to probe, listed files that were not on disk
    (as Skipped, kind "missing") and how many listed files the split marks as unused."""

    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    excluded: int = 0
    not_videos: Counter = field(default_factory=Counter)  # files not probed, by extension

    def add(self, path: Path, label: str, split: str, source: str, segment: tuple[float, float] | None = None,
            **extra: str) -> None:
        """Add `path` as a candidate (`segment`: see `Candidate`), or as missing (named in `source`) when it is
        not a file, or as permission_denied when a folder on its path may not be searched."""
        try:
            found = path.is_file()
        except PermissionError as e:
            self.skipped.append(Skipped(str(path), PermissionDeniedError.kind, f"listed in {source}; {e.strerror}"))
            return
        if found:
            self.candidates.append(Candidate(str(path), label, split, extra, segment))
        else:
            self.skipped.append(Skipped(str(path), "missing", f"listed in {source}, not on disk"))


@dataclass
class BuildResult:
    """Rows of the usable files, every file left out with its reason, and the unused count."""

    rows: list[ManifestRow]
    skipped: list[Skipped]
    excluded: int = 0
    not_videos: Counter = field(default_factory=Counter)
    verified: bool = False  # every frame of each usable file was decoded (`probe_candidates(verify=True)`)

    @property
    def usable(self) -> int:
        return len(self.rows)

    @property
    def no_audio(self) -> int:
        return sum(not r.has_audio for r in self.rows)

    def skipped_by_kind(self) -> dict[str, int]:
        """Count of left-out files per reason, most frequent first."""
        return dict(Counter(s.kind for s in self.skipped).most_common())

    def summary(self) -> str:
        """Human-readable report: counts, then each left-out file with its reason."""
        unlabeled = sum(not r.label for r in self.rows)
        bad_audio = [r for r in self.rows if r.extra.get(AUDIO_ERROR)]
        lines = [f"usable: {self.usable} (no audio: {self.no_audio}"
                 + (f", of which an audio track that does not decode: {len(bad_audio)}" if bad_audio else "")
                 + (f", unlabeled: {unlabeled}" if unlabeled else "") + ")",
                 f"unreadable: {len(self.skipped)}"]
        if self.verified:
            lines.insert(1, f"verified: every frame of the {self.usable} usable files decoded")
        lines += [f"  {kind}: {n}" for kind, n in self.skipped_by_kind().items()]
        if self.excluded:
            lines.append(f"excluded by the split (unused): {self.excluded}")
        if self.not_videos:
            lines.append("not probed, not a video file name: "
                         + ", ".join(f"{ext}: {n}" for ext, n in sorted(self.not_videos.items())))
        if self.skipped:
            lines.append("unreadable files:")
            lines += [f"  [{s.kind}] {s.path}: {s.detail}" for s in self.skipped]
        if bad_audio:
            lines.append("kept without audio, the audio track does not decode:")
            lines += [f"  {r.path}: {r.extra[AUDIO_ERROR]}" for r in bad_audio]
        return "\n".join(lines)


WHOLE_VIDEO_SLACK_S = 1.0  # a file that may be a clip's whole video is, when longer than the clip by more
# than this (a downloaded clip runs past its end by up to a GOP)
PROBE_TIMEOUT_S = 300.0  # a probe demuxes the whole file: seconds for a film, far less for a clip
VERIFY_SIZE = (8, 8)  # --verify scales each decoded frame to this: only the decode is checked, memory stays small


def probe_candidates(listing: Listing, workers: int | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     timeout_s: float = PROBE_TIMEOUT_S, verify: bool = False) -> BuildResult:
    """Probe every candidate in `workers` processes (default: all cores; 1 probes in this
    process) and keep the order of the listing. A bad file becomes a Skipped entry, never an
    exception; in worker processes so does a probe that runs past `timeout_s` ("timeout") or
    kills its process ("crashed", e.g. a segfault in a decoder library), and the build goes on.
    With `verify` the probe also decodes every video frame (`_decode_every_frame`, within the same
    timeout), so a file damaged past its first frame is left out too. A file listed a second time
    (the same file after links are resolved) is left out as DUPLICATE and probed once.
    `progress(done, total)` is called after each file."""
    candidates, duplicates = _first_listings(listing.candidates)
    total = len(candidates)
    workers = min(workers or os.cpu_count() or 1, total)
    rows: list[ManifestRow] = []
    skipped = listing.skipped + duplicates
    probe_one = partial(_probe_one, verify=verify)
    with ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(pebble.ProcessPool(max_workers=workers))
            results = isolated_map(pool, probe_one, candidates, _probe_failed, 4 * workers, timeout_s, "probe")
        else:
            results = map(probe_one, candidates)
        for done, result in enumerate(results, 1):
            (rows if isinstance(result, ManifestRow) else skipped).append(result)
            if progress is not None:
                progress(done, total)
    return BuildResult(rows, skipped, listing.excluded, listing.not_videos, verify)


def _first_listings(candidates: list[Candidate]) -> tuple[list[Candidate], list[Skipped]]:
    """The first candidate of each file, and every later one as DUPLICATE naming the first's split
    and label (two rows of one file would put it in two splits, or twice in one)."""
    first_of: dict[str, Candidate] = {}
    duplicates: list[Skipped] = []
    for c in candidates:
        first = first_of.setdefault(os.path.realpath(c.path), c)
        if first is not c:
            duplicates.append(Skipped(c.path, DUPLICATE, f"listed again (split {c.split!r}, label {c.label!r}); kept "
                                      f"once, as {first.path} in split {first.split!r} with label {first.label!r}"))
    return list(first_of.values()), duplicates


def _probe_failed(candidate: Candidate, kind: str, detail: str) -> Skipped:
    return Skipped(candidate.path, kind, detail)


def _decode_every_frame(path: str | Path) -> None:
    """Decode every frame of `path`'s video with the reader training uses, one keyframe interval per
    read (a read seeks to its first frame's keyframe, so each frame is decoded once); raises the
    `MediaError` of the first frame that fails."""
    with VideoReader(path, size=VERIFY_SIZE) as reader:
        starts = np.searchsorted(reader.index.pts, reader.index.keyframe_pts)
        bounds = np.unique(np.r_[0, starts, reader.num_frames])  # searchsorted: each within 0..num_frames
        for start, stop in pairwise(bounds):
            reader.get_frames(np.arange(start, stop))


def _probe_one(candidate: Candidate, verify: bool = False) -> ManifestRow | Skipped:
    """Worker: probe one file (with `verify`, then decode all its frames); every failure is returned
    as Skipped, never raised."""
    stage = ""  # a failure past the probe says so in its detail
    try:
        info = probe(candidate.path)
        stage = "decoding every frame (--verify): "
        if verify:
            _decode_every_frame(candidate.path)
    except MediaError as e:
        return Skipped(candidate.path, e.kind, stage + e.detail)
    except Exception as e:  # noqa: BLE001 - a bad file must not abort the build
        return Skipped(candidate.path, "error", f"{stage}{type(e).__name__}: {e}")
    row = ManifestRow.from_info(candidate.path, info, candidate.label, candidate.split, **candidate.extra)
    if candidate.segment and row.duration > candidate.segment[1] - candidate.segment[0] + WHOLE_VIDEO_SLACK_S:
        return cut_to_segment(row, *candidate.segment)
    return row


def cut_to_segment(row: ManifestRow, start: float, end: float) -> ManifestRow | Skipped:
    """`row`, a whole file, as its clip from `start` to `end` seconds (`SEGMENT_START`): its frames from
    round(start * fps) to round(end * fps), fewer where the file ends first; a file that ends before the
    clip starts is Skipped as too_short."""
    first = round(start * row.fps)
    count = min(round(end * row.fps), row.num_frames) - first
    if count < 1:
        return Skipped(row.path, TooShortError.kind, f"{row.duration:.3f} s long, it ends before its clip "
                                                     f"({start:g}-{end:g} s) starts")
    return replace(row, duration=count / row.fps, num_frames=count, extra={**row.extra, SEGMENT_START: f"{start:.3f}"})
