"""AudioSet: segment CSVs of 10-second clips of YouTube videos, found anywhere under a folder by name."""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from mmssl.data.builders.probing import BuildResult, Listing, probe_candidates
from mmssl.data.builders.youtube import ClipFiles, csv_rows, seconds, seconds_text

CLASS_LABELS = "class_labels_indices.csv"  # index,mid,display_name: the class ids' names
LABELS = "labels"  # extra column: the clip's class names, joined by LABEL_SEPARATOR (AudioSet is multi-label)
LABEL_SEPARATOR = "|"  # in no class name (some hold commas)


def list_audioset(root: str | Path, annotations: str | Path | Sequence[str | Path],
                  class_labels: str | Path | None = None) -> Listing:
    """AudioSet segment CSVs (`balanced_train_segments.csv`, `unbalanced_train_segments.csv`,
    `eval_segments.csv`: comment lines starting with '#', then rows `YTID, start_seconds, end_seconds,
    "positive_labels"`, the labels a comma-separated list of class ids). The split is the CSV's name
    without `_segments` (balanced_train, unbalanced_train, eval). AudioSet is multi-label: `label` stays
    empty and the extra column `labels` lists the clip's class names (from `class_labels`, default
    class_labels_indices.csv beside the first CSV) joined by "|". Each row's clip is found anywhere under
    `root` as `<YTID>_<start>_<end>.<ext>`, the times as in the CSV (30.000), in whole seconds (30), in
    whole seconds as 6 digits (000030) or in milliseconds (30000), or as `<YTID>.<ext>` or
    `Y<YTID>.<ext>` (the clip, or the whole video when longer than the clip: then cut to it); rows with
    no file are reported missing. youtube_id, time_start and time_end become extra columns."""
    root = Path(root).absolute()
    annotations = [Path(annotations)] if isinstance(annotations, (str, Path)) else list(map(Path, annotations))
    class_labels = Path(class_labels) if class_labels else annotations[0].with_name(CLASS_LABELS)
    if not class_labels.is_file():
        raise FileNotFoundError(f"{class_labels}: no AudioSet class list (index,mid,display_name); it is "
                                f"downloaded with the segment CSVs")
    with open(class_labels, newline="", encoding="utf-8") as f:
        name_of = {d["mid"]: d["display_name"] for d in csv.DictReader(f)}
    listing = Listing()
    clips = ClipFiles(root, listing)
    for csv_path in annotations:
        split = csv_path.stem.removesuffix("_segments")
        for where, fields in csv_rows(csv_path):
            if len(fields) != 4:
                raise ValueError(f"{where}: expected YTID, start_seconds, end_seconds, \"positive_labels\", got {fields}")
            yid, start_text, end_text, mids = fields
            start, end = seconds(start_text, where, "start_seconds"), seconds(end_text, where, "end_seconds")
            unknown = [mid for mid in mids.split(",") if mid not in name_of]
            if unknown:
                raise ValueError(f"{where}: class ids {unknown} are not in {class_labels}")
            times = [(start_text, end_text), (seconds_text(start), seconds_text(end)),
                     (f"{start * 1000:.0f}", f"{end * 1000:.0f}")]
            if start.is_integer() and end.is_integer():
                times.append((f"{start:06.0f}", f"{end:06.0f}"))
            clips.add(list(dict.fromkeys(f"{yid}_{s}_{e}" for s, e in times)), [yid, f"Y{yid}"], "", split,
                      csv_path.name, start, end, yid, **{LABELS: LABEL_SEPARATOR.join(name_of[m] for m in mids.split(","))})
    return listing


def build_audioset(root: str | Path, annotations: str | Path | Sequence[str | Path],
                   class_labels: str | Path | None = None, workers: int | None = None) -> BuildResult:
    """Manifest rows for an AudioSet download (see `list_audioset`)."""
    return probe_candidates(list_audioset(root, annotations, class_labels), workers)
