"""Kinetics-style downloads: annotation CSVs, clips found anywhere under a folder by name."""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from mmssl.data.builders.probing import DUPLICATE, BuildResult, Listing, probe_candidates
from mmssl.data.builders.walk import scan_folder
from mmssl.data.clip import Skipped

KINETICS_COLUMNS = ("youtube_id", "time_start", "time_end")


def list_kinetics(root: str | Path, annotations: str | Path | Sequence[str | Path],
                  default_split: str = "") -> Listing:
    """Kinetics-style CSVs (`label,youtube_id,time_start,time_end,split`; label and split may be
    absent, as in the test set). Each row's video is found anywhere under `root` as
    `<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>` or `<youtube_id>.<ext>`; rows with no
    file are reported missing. youtube_id, time_start and time_end become extra columns. Where a
    row's name matches several files (one clip in two formats or two folders), the first in path
    order is listed (and probed: left out if unreadable) and the others are left out as DUPLICATE."""
    root = Path(root).absolute()
    if isinstance(annotations, (str, Path)):
        annotations = [annotations]
    by_stem: dict[str, list[Path]] = {}
    scan = scan_folder(root)
    for path in scan.videos:
        by_stem.setdefault(path.stem, []).append(path)
    listing = Listing(skipped=list(scan.unlisted))

    used: set[str] = set()

    def file_of(stem: str) -> Path | None:
        """The first file named `stem`; the others go to `listing.skipped` the first time it is used."""
        first, *others = by_stem.get(stem) or [None]
        if others and stem not in used:
            listing.skipped.extend(Skipped(str(other), DUPLICATE, f"another file of clip {stem}; {first} is used")
                                   for other in others)
        used.add(stem)
        return first
    for csv_path in map(Path, annotations):
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            lacking = set(KINETICS_COLUMNS) - set(reader.fieldnames or ())
            if lacking:
                raise ValueError(f"{csv_path}: annotations lack columns {sorted(lacking)}")
            for d in reader:
                yid = d["youtube_id"]
                try:
                    start, end = int(float(d["time_start"])), int(float(d["time_end"]))
                except (TypeError, ValueError, OverflowError) as e:
                    raise ValueError(f"{csv_path}:{reader.line_num}: time_start and time_end must be numbers of "
                                     f"seconds, got {d['time_start']!r} and {d['time_end']!r}") from e
                name = f"{yid}_{start:06d}_{end:06d}"
                path = file_of(name) or file_of(yid) or root / name
                listing.add(path, d.get("label") or "", d.get("split") or default_split,
                            csv_path.name, youtube_id=yid, time_start=str(start), time_end=str(end))
    return listing


def build_kinetics(root: str | Path, annotations: str | Path | Sequence[str | Path],
                   default_split: str = "", workers: int | None = None) -> BuildResult:
    """Manifest rows for a Kinetics-style download (see `list_kinetics`)."""
    return probe_candidates(list_kinetics(root, annotations, default_split), workers)
