"""Kinetics-style downloads: annotation CSVs, clips found anywhere under a folder by name."""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from mmssl.data.builders.probing import BuildResult, Listing, probe_candidates
from mmssl.data.builders.youtube import ClipFiles, seconds

KINETICS_COLUMNS = ("youtube_id", "time_start", "time_end")


def list_kinetics(root: str | Path, annotations: str | Path | Sequence[str | Path],
                  default_split: str = "") -> Listing:
    """Kinetics-style CSVs (`label,youtube_id,time_start,time_end,split`; label and split may be
    absent, as in the test set). Each row's video is found anywhere under `root` as
    `<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>` or `<youtube_id>.<ext>` (the clip, or the whole
    video when longer than the clip: then cut to it); rows with no file are reported missing. youtube_id,
    time_start and time_end become extra columns. Where a row's name matches several files (one clip in
    two formats or two folders), the first in path order is listed (and probed: left out if unreadable)
    and the others are left out as DUPLICATE."""
    root = Path(root).absolute()
    if isinstance(annotations, (str, Path)):
        annotations = [annotations]
    listing = Listing()
    clips = ClipFiles(root, listing)
    for csv_path in map(Path, annotations):
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            lacking = set(KINETICS_COLUMNS) - set(reader.fieldnames or ())
            if lacking:
                raise ValueError(f"{csv_path}: annotations lack columns {sorted(lacking)}")
            for d in reader:
                yid, where = d["youtube_id"], f"{csv_path}:{reader.line_num}"
                start, end = (int(seconds(d[column], where, column)) for column in ("time_start", "time_end"))
                clips.add([f"{yid}_{start:06d}_{end:06d}"], [yid], d.get("label") or "",
                          d.get("split") or default_split, csv_path.name, start, end, yid)
    return listing


def build_kinetics(root: str | Path, annotations: str | Path | Sequence[str | Path],
                   default_split: str = "", workers: int | None = None) -> BuildResult:
    """Manifest rows for a Kinetics-style download (see `list_kinetics`)."""
    return probe_candidates(list_kinetics(root, annotations, default_split), workers)
