"""UCF101 with its official train/test splits."""
from __future__ import annotations

from pathlib import Path

from mmssl.data.builders.probing import BuildResult, Listing, probe_candidates
from mmssl.data.builders.split_files import check_split, split_lines, video_folder

ARCHIVE_FOLDERS = ("UCF-101", "UCF101")  # what UCF101.rar extracts to


def list_ucf101(root: str | Path, split: int = 1, splits_dir: str | Path | None = None) -> Listing:
    """UCF101 official split `split` (1..3): `classInd.txt`, `trainlist0N.txt` and
    `testlist0N.txt` in `splits_dir` (default ROOT/ucfTrainTestlist), videos at
    ROOT/UCF-101/<Class>/<file> (the two archives extracted side by side; also UCF101/) or
    ROOT/<Class>/<file>. The label is the class folder of the listed path, checked against classInd
    (and against the index a trainlist line gives)."""
    check_split(split)
    root = Path(root).absolute()
    splits_dir = Path(splits_dir) if splits_dir is not None else root / "ucfTrainTestlist"
    videos = video_folder(root, ARCHIVE_FOLDERS)
    index_of: dict[str, int] = {}
    for where, line in split_lines(splits_dir / "classInd.txt"):
        if len(line) != 2 or not line[0].isdecimal():
            raise ValueError(f"{where}: expected '<index> <class>', got {line}")
        index_of[line[1]] = int(line[0])
    listing = Listing()
    for split_name in ("train", "test"):
        list_file = splits_dir / f"{split_name}list0{split}.txt"
        for where, (rel, *index) in split_lines(list_file):
            label = rel.split("/")[0]
            if label not in index_of:
                raise ValueError(f"{where}: class {label!r} is not in classInd.txt")
            if index and not (index[0].isdecimal() and int(index[0]) == index_of[label]):
                raise ValueError(f"{where}: index {index[0]} of {label!r} disagrees with "
                                 f"classInd.txt ({index_of[label]})")
            listing.add(videos / rel, label, split_name, list_file.name)
    return listing


def build_ucf101(root: str | Path, split: int = 1, splits_dir: str | Path | None = None,
                 workers: int | None = None) -> BuildResult:
    """Manifest rows for UCF101 (see `list_ucf101`); split column "train" / "test"."""
    return probe_candidates(list_ucf101(root, split, splits_dir), workers)
