"""HMDB51 with its official train/test splits."""
from __future__ import annotations

from pathlib import Path

from mmssl.data.builders.probing import BuildResult, Listing, probe_candidates
from mmssl.data.builders.split_files import check_split, split_lines, video_folder

HMDB_CODES = {"1": "train", "2": "test"}  # "0": not used in this split
ARCHIVE_FOLDERS = ("hmdb51", "hmdb51_org")  # the folder the class archives of hmdb51_org.rar are unpacked into


def list_hmdb51(root: str | Path, split: int = 1, splits_dir: str | Path | None = None) -> Listing:
    """HMDB51 official split `split` (1..3): one `<class>_test_split<N>.txt` per class in
    `splits_dir` (default ROOT/testTrainMulti_7030_splits), lines `<video> <code>` with code
    1 = train, 2 = test, 0 = unused (counted in `excluded`); videos at ROOT/hmdb51/<class>/<video>
    (the class folders beside the split folder; also hmdb51_org/) or ROOT/<class>/<video>."""
    check_split(split)
    root = Path(root).absolute()
    splits_dir = Path(splits_dir) if splits_dir is not None else root / "testTrainMulti_7030_splits"
    videos = video_folder(root, ARCHIVE_FOLDERS)
    suffix = f"_test_split{split}.txt"
    list_files = sorted(p for p in splits_dir.glob(f"*{suffix}") if not p.name.startswith("."))  # no ._ forks
    if not list_files:
        raise FileNotFoundError(f"{splits_dir}: no *{suffix} split files")
    listing = Listing()
    for list_file in list_files:
        label = list_file.name[: -len(suffix)]
        for where, line in split_lines(list_file):
            if len(line) != 2 or line[1] not in ("0", *HMDB_CODES):
                raise ValueError(f"{where}: expected '<video> <0|1|2>', got {line}")
            video, code = line
            if code == "0":
                listing.excluded += 1
            else:
                listing.add(videos / label / video, label, HMDB_CODES[code], list_file.name)
    return listing


def build_hmdb51(root: str | Path, split: int = 1, splits_dir: str | Path | None = None,
                 workers: int | None = None) -> BuildResult:
    """Manifest rows for HMDB51 (see `list_hmdb51`); split column "train" / "test"."""
    return probe_candidates(list_hmdb51(root, split, splits_dir), workers)
