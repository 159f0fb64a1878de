"""The filesystem walk behind the folder and Kinetics listers: the video files under a folder."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mmssl.data.builders.probing import DUPLICATE
from mmssl.data.clip import Skipped
from mmssl.io import MediaError, PermissionDeniedError

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".ogv", ".m4v", ".flv", ".wmv", ".3gp", ".ts", ".mts",
    ".m2ts",
})


@dataclass
class FolderScan:
    """What `scan_folder` found under a folder."""

    videos: list[Path]  # files with a video extension (any case), sorted
    broken_links: list[Path]  # video names whose link points to nothing
    other_files: Counter  # files with other extensions, by extension
    unlisted: list[Skipped]  # folders not listed (unreadable, or walked already): their videos not in `videos`


def scan_folder(root: Path) -> FolderScan:
    """The files under `root`, hidden files and folders (e.g. macOS `._name.mp4` resource forks)
    left out."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    errors: list[OSError] = []
    scan = FolderScan([], [], Counter(), [])

    def repeated(folder: str, first: str) -> None:
        scan.unlisted.append(Skipped(folder, DUPLICATE, f"same folder as {first}"))

    for path in sorted(_files_under(root, errors.append, repeated)):
        is_video = path.suffix.lower() in VIDEO_EXTENSIONS
        if is_video and path.is_file():
            scan.videos.append(path)
        elif is_video and path.is_symlink():
            scan.broken_links.append(path)
        elif path.is_file():
            scan.other_files[path.suffix.lower() or "(no extension)"] += 1
    for error in errors:
        kind = PermissionDeniedError.kind if isinstance(error, PermissionError) else MediaError.kind
        scan.unlisted.append(Skipped(error.filename, kind, f"folder not listed: its videos unseen ({error.strerror})"))
    return scan


def _files_under(root: Path, on_error: Callable[[OSError], None],
                 on_repeat: Callable[[str, str], None]) -> Iterator[Path]:
    """Every file (or link to nothing) under `root`, folders in name order, through links to folders
    (class folders linked in from other disks) but into no folder twice, so a link loop ends; hidden
    names left out. A folder that cannot be listed goes to `on_error`, one walked already under
    another name to `on_repeat(folder, first name)`."""
    first_name: dict[str, str] = {}
    for folder, folders, files in os.walk(root, followlinks=True, onerror=on_error):
        first = first_name.setdefault(os.path.realpath(folder), folder)
        if first != folder:
            on_repeat(folder, first)
            folders.clear()
            continue
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        yield from (Path(folder, name) for name in files if not name.startswith("."))
