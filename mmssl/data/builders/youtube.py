"""Clips of YouTube videos given by annotation CSVs (Kinetics, VGG-Sound, AudioSet): each row names a video
by its id and a clip by its times, and downloaders name the files after them, in folders of their own. The
files are found anywhere under ROOT by name."""
from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

from mmssl.data.builders.probing import DUPLICATE, Listing
from mmssl.data.builders.walk import scan_folder
from mmssl.data.clip import Skipped


class ClipFiles:
    """The video files under `root` by name (stem), listed into `listing`: its unlisted folders and, as not
    probed, its files that are no video (audio-only downloads among them)."""

    def __init__(self, root: Path, listing: Listing) -> None:
        scan = scan_folder(root)
        self.root, self.listing = root, listing
        self.by_stem: dict[str, list[Path]] = {}
        for path in scan.videos:
            self.by_stem.setdefault(path.stem, []).append(path)
        listing.skipped.extend(scan.unlisted)
        listing.not_videos.update(scan.other_files)
        self.used: set[str] = set()

    def add(self, trimmed: Sequence[str], whole: Sequence[str], label: str, split: str, source: str,
            start: float, end: float, youtube_id: str, **extra: str) -> None:
        """List the clip from `start` to `end` seconds of video `youtube_id` in `listing`: the first file
        named one of `trimmed` (names of the clip cut out) or else of `whole` (names of the video's id
        alone: the clip, or the whole video, which is cut to the clip: `Candidate.segment`), or missing as
        ROOT/<trimmed[0]>. The video's id and the clip's times go in the extra columns, with `extra`."""
        found = next(((self._first(stem), stem) for stem in (*trimmed, *whole) if stem in self.by_stem), None)
        path, stem = found or (self.root / trimmed[0], trimmed[0])
        self.listing.add(path, label, split, source, segment=(start, end) if stem in whole else None,
                         youtube_id=youtube_id, time_start=seconds_text(start), time_end=seconds_text(end), **extra)

    def _first(self, stem: str) -> Path:
        """The first file named `stem`; the others go to `listing.skipped` the first time it is used (one
        clip downloaded twice, in two formats or folders)."""
        first, *others = self.by_stem[stem]
        if others and stem not in self.used:
            self.listing.skipped.extend(Skipped(str(other), DUPLICATE, f"another file of clip {stem}; {first} is used")
                                        for other in others)
        self.used.add(stem)
        return first


def seconds(text: str, where: str, column: str) -> float:
    """A CSV's time in seconds: a finite number >= 0, else a ValueError naming the place and column."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 <= value < math.inf:
        raise ValueError(f"{where}: {column} must be a number of seconds, got {text!r}")
    return value


def seconds_text(value: float) -> str:
    """A time in seconds as a manifest writes it: to the millisecond, without trailing zeros ("30", "4.5")."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def csv_rows(path: Path) -> Iterator[tuple[str, list[str]]]:
    """("<path>:<line>", fields) of each row of a CSV of clips, fields stripped; blank rows and comment
    rows (starting with '#', as AudioSet's header) left out."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, skipinitialspace=True)
        for fields in reader:
            if fields and fields[0].strip() and not fields[0].startswith("#"):
                yield f"{path}:{reader.line_num}", [field.strip() for field in fields]
