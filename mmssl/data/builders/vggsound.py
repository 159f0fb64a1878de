"""VGG-Sound: vggsound.csv, 10-second clips of YouTube videos found anywhere under a folder by name."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mmssl.data.builders.probing import BuildResult, Listing, probe_candidates
from mmssl.data.builders.youtube import ClipFiles, csv_rows, seconds

VGGSOUND_CLIP_S = 10  # every clip: the 10 s from its start time


def list_vggsound(root: str | Path, annotations: str | Path | Sequence[str | Path]) -> Listing:
    """VGG-Sound's CSV (`vggsound.csv`: rows `youtube_id,start_seconds,label,split`, no header, split
    train or test; a first row that is a header is left out). Each row's 10 s clip is found anywhere
    under `root` as `<youtube_id>_<start:06d>.<ext>` (the names of the release's own videos), as
    `<youtube_id>_<start:06d>_<end:06d>.<ext>` (Kinetics-style downloaders) or as `<youtube_id>.<ext>`
    (the clip, or the whole video when longer than the clip: then cut to it); rows with no file are
    reported missing. youtube_id, time_start and time_end become extra columns."""
    root = Path(root).absolute()
    listing = Listing()
    clips = ClipFiles(root, listing)
    for csv_path in map(Path, [annotations] if isinstance(annotations, (str, Path)) else annotations):
        for number, (where, fields) in enumerate(csv_rows(csv_path)):
            if len(fields) != 4:
                raise ValueError(f"{where}: expected youtube_id,start_seconds,label,split, got {fields}")
            yid, start_text, label, split = fields
            if number == 0 and not start_text.isdecimal():  # a header
                continue
            start = int(seconds(start_text, where, "start_seconds"))
            end = start + VGGSOUND_CLIP_S
            clips.add([f"{yid}_{start:06d}", f"{yid}_{start:06d}_{end:06d}"], [yid], label, split, csv_path.name,
                      start, end, yid)
    return listing


def build_vggsound(root: str | Path, annotations: str | Path | Sequence[str | Path],
                   workers: int | None = None) -> BuildResult:
    """Manifest rows for a VGG-Sound download (see `list_vggsound`)."""
    return probe_candidates(list_vggsound(root, annotations), workers)
