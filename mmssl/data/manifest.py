"""Manifests: one CSV row per usable video (path, label, split, duration, fps, num_frames,
has_audio, then any extra columns a builder adds). Paths are stored relative to the manifest's
folder when they lie under it, so a dataset folder can be moved with its manifest.

This module is the format; `mmssl.data.builders` makes the rows from a dataset on disk.
"""
from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mmssl.errors import MmsslError
from mmssl.io import MediaInfo

COLUMNS = ("path", "label", "split", "duration", "fps", "num_frames", "has_audio")
# A file name that is not UTF-8 (Python holds its bytes as surrogates) is written and read back as
# its bytes, so the manifest names the file the folder has.
PATH_ERRORS = "surrogateescape"
AUDIO_ERROR = "audio_error"  # extra column: why a file's audio track does not decode (it has no audio then)
# extra column: seconds into the file where the row's clip starts, for a clip cut from a longer file (the
# whole YouTube video a clip was annotated in); the row's duration, fps and num_frames are the clip's, its
# frame 0 is the file's frame round(segment_start * fps), and decoding stays within it. Empty: the whole file.
SEGMENT_START = "segment_start"


@dataclass
class ManifestRow:
    path: str
    label: str = ""
    split: str = ""
    duration: float = 0.0
    fps: float = 0.0
    num_frames: int = 0
    has_audio: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def value(self, column: str) -> str:
        """The row's value in `column`: "label" or an extra column ("" where it has none)."""
        return self.label if column == "label" else self.extra.get(column, "")

    @classmethod
    def from_info(cls, path: str | Path, info: MediaInfo, label: str = "", split: str = "",
                  **extra: str) -> ManifestRow:
        if info.audio_error:
            extra = {**extra, AUDIO_ERROR: info.audio_error}
        return cls(str(path), label, split, info.duration, info.fps, info.num_frames,
                   info.has_audio, {k: str(v) for k, v in extra.items()})


def write_manifest(rows: Iterable[ManifestRow], path: str | Path) -> Path:
    """Write rows as CSV (atomically: temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    extra_cols = sorted({k for r in rows for k in r.extra})
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8", errors=PATH_ERRORS) as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS + tuple(extra_cols))
        for r in rows:
            writer.writerow([_relative(r.path, path.parent), r.label, r.split, f"{r.duration:.6f}",
                             f"{r.fps:.6f}", r.num_frames, int(r.has_audio)]
                            + [r.extra.get(k, "") for k in extra_cols])
    os.replace(tmp, path)
    return path


class ManifestError(MmsslError, ValueError):
    """A manifest that cannot serve: no such file, missing columns, unusable values, or no row in the
    split asked for. The message says which and what to do."""


def read_manifest(path: str | Path, split: str | None = None) -> list[ManifestRow]:
    """Read a manifest; relative paths are resolved against its folder, and one that climbs out of it
    with `..` is a `ManifestError` (absolute paths may point anywhere). `split` filters rows, and a
    split without rows is a `ManifestError` that lists the splits the manifest has."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}: build one with tools/build_manifest.py "
                            f"(datasets/ has a recipe per dataset)")
    with open(path, newline="", encoding="utf-8", errors=PATH_ERRORS) as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ManifestError(f"{path}: manifest lacks columns {sorted(missing)}")
        rows = [_parse_row(path, line, d) for line, d in enumerate(reader, start=2)]
    chosen = [r for r in rows if split is None or r.split == split]
    if split is not None and not chosen:
        splits = ", ".join(f"{name!r} ({count})" for name, count in sorted(Counter(r.split for r in rows).items()))
        raise ManifestError(f"{path} has no rows in split {split!r}; its splits: {splits or 'none (no rows)'}")
    return chosen


def _parse_row(path: Path, line: int, d: dict[str, str]) -> ManifestRow:
    """One CSV row (`line` of the file, for the error) as a ManifestRow with a relative path that stays
    in the manifest's folder, a positive frame rate and frame count."""
    try:
        row = ManifestRow(
            path=str(path.parent / d["path"]) if not os.path.isabs(d["path"]) else d["path"],
            label=d["label"], split=d["split"], duration=float(d["duration"]),
            fps=float(d["fps"]), num_frames=int(d["num_frames"]),
            has_audio=d["has_audio"] in ("1", "True", "true"),
            extra={k: v for k, v in d.items() if k not in COLUMNS},
        )
    except (TypeError, ValueError) as e:
        raise ManifestError(f"{path}, line {line}: unreadable row ({e})") from e
    if not os.path.isabs(d["path"]) and os.path.normpath(d["path"]).split(os.sep)[0] == os.pardir:
        raise ManifestError(f"{path}, line {line}: path {d['path']!r} climbs out of the manifest's folder with "
                            f"'..'; name the file relative to {path.parent} without '..', or by its absolute path")
    try:
        segment_start = float(d.get(SEGMENT_START) or 0)
    except ValueError:
        segment_start = math.nan
    if not 0 <= segment_start < math.inf:
        raise ManifestError(f"{path}, line {line}: {SEGMENT_START} must be a number of seconds >= 0 (or empty), "
                            f"got {d[SEGMENT_START]!r}")
    if not row.fps > 0 or row.num_frames < 1:
        raise ManifestError(f"{path}, line {line}: {row.path} needs fps > 0 and num_frames >= 1, got fps "
                            f"{row.fps} and num_frames {row.num_frames} (tools/build_manifest.py measures both)")
    return row


def first_frame(row: ManifestRow) -> int:
    """The file's frame number of the row's frame 0: where its clip starts (`SEGMENT_START`), 0 for a whole file."""
    start = row.extra.get(SEGMENT_START)
    return round(float(start) * row.fps) if start else 0


def class_names(rows: Iterable[ManifestRow]) -> list[str]:
    """Sorted distinct non-empty labels: the class index of a label is its position here."""
    return sorted({r.label for r in rows if r.label})


def _relative(file: str, folder: Path) -> str:
    """`file` relative to `folder` when it lies under it (as named, or with links resolved), else absolute:
    never a path with `..`, which `read_manifest` refuses."""
    for path, base in ((Path(os.path.abspath(file)), Path(os.path.abspath(folder))),
                       (Path(file).resolve(), folder.resolve())):
        try:
            return str(path.relative_to(base))
        except ValueError:
            pass
    return os.path.abspath(file)
