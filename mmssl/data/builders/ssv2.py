"""Something-Something v2 with its official train/validation split (the JSON label files)."""
from __future__ import annotations

import json
from pathlib import Path

from mmssl.data.builders.probing import BuildResult, Listing, probe_candidates
from mmssl.data.builders.split_files import video_folder

ARCHIVE_FOLDERS = ("20bn-something-something-v2",)  # what the video archive's parts extract to
LABEL_FOLDERS = ("labels", "20bn-something-something-download-package-labels/labels")  # and the labels archive
SSV2_SPLITS = {"train.json": "train", "validation.json": "val"}  # test.json has no labels: not listed


def list_ssv2(root: str | Path, labels_dir: str | Path | None = None) -> Listing:
    """Something-Something v2: in `labels_dir` (default ROOT/labels or
    ROOT/20bn-something-something-download-package-labels/labels, as the labels archive extracts, else ROOT)
    labels.json ({class: index}) and train.json / validation.json (lists of {"id", "label", "template",
    "placeholders"}); videos `<id>.webm` in ROOT/20bn-something-something-v2/ (the video archive extracted
    beside the labels) or in ROOT. The class is the entry's template without its brackets ("Putting
    [something] on [something]" -> "Putting something on something"), checked against labels.json; split
    "train" or "val"."""
    root = Path(root).absolute()
    labels_dir = Path(labels_dir) if labels_dir is not None else video_folder(root, LABEL_FOLDERS)
    videos = video_folder(root, ARCHIVE_FOLDERS)
    classes = set(_read_json(labels_dir / "labels.json"))
    listing = Listing()
    for file_name, split in SSV2_SPLITS.items():
        for number, entry in enumerate(_read_json(labels_dir / file_name)):
            try:
                video_id, label = str(entry["id"]), entry["template"].replace("[", "").replace("]", "")
            except (TypeError, KeyError, AttributeError) as e:
                raise ValueError(f"{labels_dir / file_name}: entry {number} lacks an id or a template ({e!r})") from None
            if label not in classes:
                raise ValueError(f"{labels_dir / file_name}: the class {label!r} of video {video_id} is not in "
                                 f"labels.json")
            listing.add(videos / f"{video_id}.webm", label, split, file_name)
    return listing


def _read_json(path: Path) -> list | dict:
    """A label file's JSON; a missing or damaged file is an error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no Something-Something v2 label file (the labels archive extracts "
                                "labels/ with labels.json, train.json, validation.json)") from None
    except ValueError as e:
        raise ValueError(f"{path}: not a JSON file ({e})") from None


def build_ssv2(root: str | Path, labels_dir: str | Path | None = None, workers: int | None = None) -> BuildResult:
    """Manifest rows for Something-Something v2 (see `list_ssv2`); split column "train" / "val"."""
    return probe_candidates(list_ssv2(root, labels_dir), workers)
