"""The official split files of UCF101 and HMDB51: split numbers, the line reader, and where the videos are."""
from __future__ import annotations

from pathlib import Path

OFFICIAL_SPLITS = (1, 2, 3)


def split_lines(path: Path) -> list[tuple[str, list[str]]]:
    """("<path>:<line number>", whitespace-split fields) of each non-blank line of an official split
    file (CRLF-tolerant); a line that is not UTF-8 is a ValueError naming the file and line."""
    lines = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                fields = raw.decode("utf-8").split()
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: not UTF-8 text ({e})") from e
            if fields:
                lines.append((where, fields))
    return lines


def check_split(split: int) -> None:
    if split not in OFFICIAL_SPLITS:
        raise ValueError(f"split must be one of {OFFICIAL_SPLITS}, got {split}")


def video_folder(root: Path, archive_folders: tuple[str, ...]) -> Path:
    """The folder holding the class folders: ROOT/<name> for the first of `archive_folders` (the folders
    the official video archive extracts to, beside the split folder) that ROOT holds, else ROOT itself
    (the class folders moved up into ROOT)."""
    return next((root / name for name in archive_folders if (root / name).is_dir()), root)
