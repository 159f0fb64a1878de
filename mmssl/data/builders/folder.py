"""Your own videos: a folder per class (`<class>/<video>` or `<split>/<class>/<video>`)."""
from __future__ import annotations

from pathlib import Path

from mmssl.data.builders.probing import BuildResult, Candidate, Listing, probe_candidates
from mmssl.data.builders.walk import scan_folder
from mmssl.data.clip import Skipped

FOLDER_LAYOUTS = ("class", "split/class")


def list_folder(root: str | Path, layout: str = "class", default_split: str = "train") -> Listing:
    """Videos under `root` laid out as `<class>/<video>` (layout "class") or
    `<split>/<class>/<video>` (layout "split/class"); deeper folders keep the label of their
    top class folder. Videos above the class level are unlabeled; videos with no split folder
    get `default_split`. Links to nothing are listed as missing, other files counted by extension."""
    if layout not in FOLDER_LAYOUTS:
        raise ValueError(f"layout must be one of {FOLDER_LAYOUTS}, got {layout!r}")
    root = Path(root).absolute()
    scan = scan_folder(root)
    broken = [Skipped(str(p), "missing", "a link to nothing") for p in scan.broken_links]
    listing = Listing(skipped=broken + scan.unlisted, not_videos=scan.other_files)
    for path in scan.videos:
        folders = path.relative_to(root).parts[:-1]
        split = default_split
        if layout == "split/class" and folders:
            split, folders = folders[0], folders[1:]
        label = folders[0] if folders else ""
        listing.candidates.append(Candidate(str(path), label, split))
    return listing


def build_folder(root: str | Path, layout: str = "class", default_split: str = "train",
                 workers: int | None = None) -> BuildResult:
    """Manifest rows for a folder-per-class tree (see `list_folder`)."""
    return probe_candidates(list_folder(root, layout, default_split), workers)
