"""Manifests: one CSV row per usable video (path, label, split, duration, fps, num_frames,
has_audio, then any extra columns a builder adds). Paths are stored relative to the manifest's
folder when they lie under it, so a dataset folder can be moved with its manifest.

Builders (`build_folder`, `build_ucf101`, `build_hmdb51`, `build_kinetics`) list a dataset's
files with their labels and splits, probe them in parallel processes and return a `BuildResult`:
the rows of the usable files and every file left out with its reason.
"""
from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pebble

from mmssl.data.isolation import isolated_map
from mmssl.io import MediaError, MediaInfo, PermissionDeniedError, probe

COLUMNS = ("path", "label", "split", "duration", "fps", "num_frames", "has_audio")
# A file name that is not UTF-8 (Python holds its bytes as surrogates) is written and read back as
# its bytes, so the manifest names the file the folder has.
PATH_ERRORS = "surrogateescape"
AUDIO_ERROR = "audio_error"  # extra column: why a file's audio track does not decode (it has no audio then)
DUPLICATE = "duplicate"  # Skipped kind: a file or folder listed already, or another file of a clip listed
# already (once in a manifest, never in two splits)


@dataclass
class ManifestRow:
    path: str
    label: str = ""
    split: str = ""
    duration: float = 0.0
    fps: float = 0.0
    num_frames: int = 0
    has_audio: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_info(cls, path: str | Path, info: MediaInfo, label: str = "", split: str = "",
                  **extra: str) -> ManifestRow:
        if info.audio_error:
            extra = {**extra, AUDIO_ERROR: info.audio_error}
        return cls(str(path), label, split, info.duration, info.fps, info.num_frames,
                   info.has_audio, {k: str(v) for k, v in extra.items()})


def write_manifest(rows: Iterable[ManifestRow], path: str | Path) -> Path:
    """Write rows as CSV (atomically: temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    extra_cols = sorted({k for r in rows for k in r.extra})
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8", errors=PATH_ERRORS) as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS + tuple(extra_cols))
        for r in rows:
            writer.writerow([_relative(r.path, path.parent), r.label, r.split, f"{r.duration:.6f}",
                             f"{r.fps:.6f}", r.num_frames, int(r.has_audio)]
                            + [r.extra.get(k, "") for k in extra_cols])
    os.replace(tmp, path)
    return path


class ManifestError(ValueError):
    """A manifest that cannot serve: no such file, missing columns, unusable values, or no row in the
    split asked for. The message says which and what to do."""


def read_manifest(path: str | Path, split: str | None = None) -> list[ManifestRow]:
    """Read a manifest; relative paths are resolved against its folder. `split` filters rows, and a
    split without rows is a `ManifestError` that lists the splits the manifest has."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}: build one with tools/build_manifest.py "
                            f"(datasets/ has a recipe per dataset)")
    with open(path, newline="", encoding="utf-8", errors=PATH_ERRORS) as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ManifestError(f"{path}: manifest lacks columns {sorted(missing)}")
        rows = [_parse_row(path, line, d) for line, d in enumerate(reader, start=2)]
    chosen = [r for r in rows if split is None or r.split == split]
    if split is not None and not chosen:
        splits = ", ".join(f"{name!r} ({count})" for name, count in sorted(Counter(r.split for r in rows).items()))
        raise ManifestError(f"{path} has no rows in split {split!r}; its splits: {splits or 'none (no rows)'}")
    return chosen


def _parse_row(path: Path, line: int, d: dict[str, str]) -> ManifestRow:
    """One CSV row (`line` of the file, for the error) as a ManifestRow with a positive frame rate
    and frame count."""
    try:
        row = ManifestRow(
            path=str(path.parent / d["path"]) if not os.path.isabs(d["path"]) else d["path"],
            label=d["label"], split=d["split"], duration=float(d["duration"]),
            fps=float(d["fps"]), num_frames=int(d["num_frames"]),
            has_audio=d["has_audio"] in ("1", "True", "true"),
            extra={k: v for k, v in d.items() if k not in COLUMNS},
        )
    except (TypeError, ValueError) as e:
        raise ManifestError(f"{path}, line {line}: unreadable row ({e})") from e
    if not row.fps > 0 or row.num_frames < 1:
        raise ManifestError(f"{path}, line {line}: {row.path} needs fps > 0 and num_frames >= 1, got fps "
                            f"{row.fps} and num_frames {row.num_frames} (tools/build_manifest.py measures both)")
    return row


def class_names(rows: Iterable[ManifestRow]) -> list[str]:
    """Sorted distinct non-empty labels: the class index of a label is its position here."""
    return sorted({r.label for r in rows if r.label})


def _relative(file: str, folder: Path) -> str:
    """`file` relative to `folder` when it lies under it (as named, or with links resolved), else absolute."""
    for path, base in ((Path(os.path.abspath(file)), Path(os.path.abspath(folder))),
                       (Path(file).resolve(), folder.resolve())):
        try:
            return str(path.relative_to(base))
        except ValueError:
            pass
    return os.path.abspath(file)


# ---------------------------------------------------------------------------------------------
# Builders. Each format first *lists* candidates (path, label, split, extras) and the files its
# split files name but the disk lacks; `probe_candidates` then probes every candidate in worker
# processes and turns the readable ones into rows. One probing path serves every format.

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".ogv", ".m4v", ".flv", ".wmv", ".3gp", ".ts", ".mts",
    ".m2ts",
})
FOLDER_LAYOUTS = ("class", "split/class")
OFFICIAL_SPLITS = (1, 2, 3)
KINETICS_COLUMNS = ("youtube_id", "time_start", "time_end")


@dataclass(frozen=True)
class Candidate:
    """A file to probe and the manifest fields its dataset gives it."""

    path: str
    label: str = ""
    split: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    """A file left out (of a manifest, or of a batch when it fails to decode): `kind` is a
    MediaError kind ("crashed": its probe or decode killed a process), "timeout" for a probe
    stopped, "missing" for a listed file not on disk, DUPLICATE for a file or folder listed
    already, "error" for anything else."""

    path: str
    kind: str
    detail: str


@dataclass
class Listing:
    """What a format's lister found: candidates to probe, listed files that were not on disk
    (as Skipped, kind "missing") and how many listed files the split marks as unused."""

    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    excluded: int = 0
    not_videos: Counter = field(default_factory=Counter)  # files not probed, by extension

    def add(self, path: Path, label: str, split: str, source: str, **extra: str) -> None:
        """Add `path` as a candidate, or as missing (named in `source`) when it is not a file, or
        as permission_denied when a folder on its path may not be searched."""
        try:
            found = path.is_file()
        except PermissionError as e:
            self.skipped.append(Skipped(str(path), PermissionDeniedError.kind, f"listed in {source}; {e.strerror}"))
            return
        if found:
            self.candidates.append(Candidate(str(path), label, split, extra))
        else:
            self.skipped.append(Skipped(str(path), "missing", f"listed in {source}, not on disk"))


@dataclass
class BuildResult:
    """Rows of the usable files, every file left out with its reason, and the unused count."""

    rows: list[ManifestRow]
    skipped: list[Skipped]
    excluded: int = 0
    not_videos: Counter = field(default_factory=Counter)

    @property
    def usable(self) -> int:
        return len(self.rows)

    @property
    def no_audio(self) -> int:
        return sum(not r.has_audio for r in self.rows)

    def skipped_by_kind(self) -> dict[str, int]:
        """Count of left-out files per reason, most frequent first."""
        return dict(Counter(s.kind for s in self.skipped).most_common())

    def summary(self) -> str:
        """Human-readable report: counts, then each left-out file with its reason."""
        unlabeled = sum(not r.label for r in self.rows)
        bad_audio = [r for r in self.rows if r.extra.get(AUDIO_ERROR)]
        lines = [f"usable: {self.usable} (no audio: {self.no_audio}"
                 + (f", of which an audio track that does not decode: {len(bad_audio)}" if bad_audio else "")
                 + (f", unlabeled: {unlabeled}" if unlabeled else "") + ")",
                 f"unreadable: {len(self.skipped)}"]
        lines += [f"  {kind}: {n}" for kind, n in self.skipped_by_kind().items()]
        if self.excluded:
            lines.append(f"excluded by the split (unused): {self.excluded}")
        if self.not_videos:
            lines.append("not probed, not a video file name: "
                         + ", ".join(f"{ext}: {n}" for ext, n in sorted(self.not_videos.items())))
        if self.skipped:
            lines.append("unreadable files:")
            lines += [f"  [{s.kind}] {s.path}: {s.detail}" for s in self.skipped]
        if bad_audio:
            lines.append("kept without audio, the audio track does not decode:")
            lines += [f"  {r.path}: {r.extra[AUDIO_ERROR]}" for r in bad_audio]
        return "\n".join(lines)


PROBE_TIMEOUT_S = 300.0  # a probe demuxes the whole file: seconds for a film, far less for a clip


def probe_candidates(listing: Listing, workers: int | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     timeout_s: float = PROBE_TIMEOUT_S) -> BuildResult:
    """Probe every candidate in `workers` processes (default: all cores; 1 probes in this
    process) and keep the order of the listing. A bad file becomes a Skipped entry, never an
    exception; in worker processes so does a probe that runs past `timeout_s` ("timeout") or
    kills its process ("crashed", e.g. a segfault in a decoder library), and the build goes on.
    A file listed a second time (the same file after links are resolved) is left out as DUPLICATE
    and probed once. `progress(done, total)` is called after each file."""
    candidates, duplicates = _first_listings(listing.candidates)
    total = len(candidates)
    workers = min(workers or os.cpu_count() or 1, total)
    rows: list[ManifestRow] = []
    skipped = listing.skipped + duplicates
    with ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(pebble.ProcessPool(max_workers=workers))
            results = isolated_map(pool, _probe_one, candidates, _probe_failed, 4 * workers, timeout_s, "probe")
        else:
            results = map(_probe_one, candidates)
        for done, result in enumerate(results, 1):
            (rows if isinstance(result, ManifestRow) else skipped).append(result)
            if progress is not None:
                progress(done, total)
    return BuildResult(rows, skipped, listing.excluded, listing.not_videos)


def _first_listings(candidates: list[Candidate]) -> tuple[list[Candidate], list[Skipped]]:
    """The first candidate of each file, and every later one as DUPLICATE naming the first's split
    and label (two rows of one file would put it in two splits, or twice in one)."""
    first_of: dict[str, Candidate] = {}
    duplicates: list[Skipped] = []
    for c in candidates:
        first = first_of.setdefault(os.path.realpath(c.path), c)
        if first is not c:
            duplicates.append(Skipped(c.path, DUPLICATE, f"listed again (split {c.split!r}, label {c.label!r}); kept "
                                      f"once, as {first.path} in split {first.split!r} with label {first.label!r}"))
    return list(first_of.values()), duplicates


def _probe_failed(candidate: Candidate, kind: str, detail: str) -> Skipped:
    return Skipped(candidate.path, kind, detail)


def _probe_one(candidate: Candidate) -> ManifestRow | Skipped:
    """Worker: probe one file; every failure is returned as Skipped, never raised."""
    try:
        info = probe(candidate.path)
    except MediaError as e:
        return Skipped(candidate.path, e.kind, e.detail)
    except Exception as e:  # noqa: BLE001 - a bad file must not abort the build
        return Skipped(candidate.path, "error", f"{type(e).__name__}: {e}")
    return ManifestRow.from_info(candidate.path, info, candidate.label, candidate.split,
                                 **candidate.extra)


# --- folder per class -------------------------------------------------------------------------

def list_folder(root: str | Path, layout: str = "class", default_split: str = "train") -> Listing:
    """Videos under `root` laid out as `<class>/<video>` (layout "class") or
    `<split>/<class>/<video>` (layout "split/class"); deeper folders keep the label of their
    top class folder. Videos above the class level are unlabeled; videos with no split folder
    get `default_split`. Links to nothing are listed as missing, other files counted by extension."""
    if layout not in FOLDER_LAYOUTS:
        raise ValueError(f"layout must be one of {FOLDER_LAYOUTS}, got {layout!r}")
    root = Path(root).absolute()
    scan = _scan_folder(root)
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


# --- UCF101 -----------------------------------------------------------------------------------

def list_ucf101(root: str | Path, split: int = 1, splits_dir: str | Path | None = None) -> Listing:
    """UCF101 official split `split` (1..3): `classInd.txt`, `trainlist0N.txt` and
    `testlist0N.txt` in `splits_dir` (default ROOT/ucfTrainTestlist), videos at
    ROOT/<Class>/<file>. The label is the class folder of the listed path, checked against
    classInd (and against the index a trainlist line gives)."""
    _check_split(split)
    root = Path(root).absolute()
    splits_dir = Path(splits_dir) if splits_dir is not None else root / "ucfTrainTestlist"
    index_of: dict[str, int] = {}
    for where, line in _split_lines(splits_dir / "classInd.txt"):
        if len(line) != 2 or not line[0].isdecimal():
            raise ValueError(f"{where}: expected '<index> <class>', got {line}")
        index_of[line[1]] = int(line[0])
    listing = Listing()
    for split_name in ("train", "test"):
        list_file = splits_dir / f"{split_name}list0{split}.txt"
        for where, (rel, *index) in _split_lines(list_file):
            label = rel.split("/")[0]
            if label not in index_of:
                raise ValueError(f"{where}: class {label!r} is not in classInd.txt")
            if index and not (index[0].isdecimal() and int(index[0]) == index_of[label]):
                raise ValueError(f"{where}: index {index[0]} of {label!r} disagrees with "
                                 f"classInd.txt ({index_of[label]})")
            listing.add(root / rel, label, split_name, list_file.name)
    return listing


def build_ucf101(root: str | Path, split: int = 1, splits_dir: str | Path | None = None,
                 workers: int | None = None) -> BuildResult:
    """Manifest rows for UCF101 (see `list_ucf101`); split column "train" / "test"."""
    return probe_candidates(list_ucf101(root, split, splits_dir), workers)


# --- HMDB51 -----------------------------------------------------------------------------------

HMDB_CODES = {"1": "train", "2": "test"}  # "0": not used in this split


def list_hmdb51(root: str | Path, split: int = 1, splits_dir: str | Path | None = None) -> Listing:
    """HMDB51 official split `split` (1..3): one `<class>_test_split<N>.txt` per class in
    `splits_dir` (default ROOT/testTrainMulti_7030_splits), lines `<video> <code>` with code
    1 = train, 2 = test, 0 = unused (counted in `excluded`); videos at ROOT/<class>/<video>."""
    _check_split(split)
    root = Path(root).absolute()
    splits_dir = Path(splits_dir) if splits_dir is not None else root / "testTrainMulti_7030_splits"
    suffix = f"_test_split{split}.txt"
    list_files = sorted(p for p in splits_dir.glob(f"*{suffix}") if not p.name.startswith("."))  # no ._ forks
    if not list_files:
        raise FileNotFoundError(f"{splits_dir}: no *{suffix} split files")
    listing = Listing()
    for list_file in list_files:
        label = list_file.name[: -len(suffix)]
        for where, line in _split_lines(list_file):
            if len(line) != 2 or line[1] not in ("0", *HMDB_CODES):
                raise ValueError(f"{where}: expected '<video> <0|1|2>', got {line}")
            video, code = line
            if code == "0":
                listing.excluded += 1
            else:
                listing.add(root / label / video, label, HMDB_CODES[code], list_file.name)
    return listing


def build_hmdb51(root: str | Path, split: int = 1, splits_dir: str | Path | None = None,
                 workers: int | None = None) -> BuildResult:
    """Manifest rows for HMDB51 (see `list_hmdb51`); split column "train" / "test"."""
    return probe_candidates(list_hmdb51(root, split, splits_dir), workers)


# --- Kinetics ---------------------------------------------------------------------------------

def list_kinetics(root: str | Path, annotations: str | Path | Sequence[str | Path],
                  default_split: str = "") -> Listing:
    """Kinetics-style CSVs (`label,youtube_id,time_start,time_end,split`; label and split may be
    absent, as in the test set). Each row's video is found anywhere under `root` as
    `<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>` or `<youtube_id>.<ext>`; rows with no
    file are reported missing. youtube_id, time_start and time_end become extra columns. Where a
    row's name matches several files (one clip in two formats or two folders), the first in path
    order is listed (and probed: left out if unreadable) and the others are left out as DUPLICATE."""
    root = Path(root).absolute()
    if isinstance(annotations, (str, Path)):
        annotations = [annotations]
    by_stem: dict[str, list[Path]] = {}
    scan = _scan_folder(root)
    for path in scan.videos:
        by_stem.setdefault(path.stem, []).append(path)
    listing = Listing(skipped=list(scan.unlisted))

    used: set[str] = set()

    def file_of(stem: str) -> Path | None:
        """The first file named `stem`; the others go to `listing.skipped` the first time it is used."""
        first, *others = by_stem.get(stem) or [None]
        if others and stem not in used:
            listing.skipped.extend(Skipped(str(other), DUPLICATE, f"another file of clip {stem}; {first} is used")
                                   for other in others)
        used.add(stem)
        return first
    for csv_path in map(Path, annotations):
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            lacking = set(KINETICS_COLUMNS) - set(reader.fieldnames or ())
            if lacking:
                raise ValueError(f"{csv_path}: annotations lack columns {sorted(lacking)}")
            for d in reader:
                yid = d["youtube_id"]
                try:
                    start, end = int(float(d["time_start"])), int(float(d["time_end"]))
                except (TypeError, ValueError, OverflowError) as e:
                    raise ValueError(f"{csv_path}:{reader.line_num}: time_start and time_end must be numbers of "
                                     f"seconds, got {d['time_start']!r} and {d['time_end']!r}") from e
                name = f"{yid}_{start:06d}_{end:06d}"
                path = file_of(name) or file_of(yid) or root / name
                listing.add(path, d.get("label") or "", d.get("split") or default_split,
                            csv_path.name, youtube_id=yid, time_start=str(start), time_end=str(end))
    return listing


def build_kinetics(root: str | Path, annotations: str | Path | Sequence[str | Path],
                   default_split: str = "", workers: int | None = None) -> BuildResult:
    """Manifest rows for a Kinetics-style download (see `list_kinetics`)."""
    return probe_candidates(list_kinetics(root, annotations, default_split), workers)


# --- helpers ----------------------------------------------------------------------------------

@dataclass
class FolderScan:
    videos: list[Path]  # files with a video extension (any case), sorted
    broken_links: list[Path]  # video names whose link points to nothing
    other_files: Counter  # files with other extensions, by extension
    unlisted: list[Skipped]  # folders not listed (unreadable, or walked already): their videos not in `videos`


def _scan_folder(root: Path) -> FolderScan:
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


def _split_lines(path: Path) -> list[tuple[str, list[str]]]:
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


def _check_split(split: int) -> None:
    if split not in OFFICIAL_SPLITS:
        raise ValueError(f"split must be one of {OFFICIAL_SPLITS}, got {split}")
