"""Writing a generated dataset's folder (SynthAV, PhysAV): the config stamp that caches it, the
videos made in parallel processes, their motion profiles (`mmssl.data.motion`), the manifest last."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from itertools import repeat
from pathlib import Path
from typing import Any

from mmssl.data.manifest import ManifestRow, read_manifest, write_manifest
from mmssl.data.motion import profile_file, store_profiles

MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class GeneratedVideo:
    """What one video of a generated dataset is, before rendering (each dataset adds its own fields)."""

    index: int  # position in the whole dataset; seeds the video's generator
    split: str
    name: str
    action: str

    @property
    def label(self) -> str:
        """Class name for labeled splits, empty for pretraining."""
        return "" if self.split == "pretrain" else self.action


def split_sizes(num_pretrain: int, train_per_class: int, test_per_class: int, num_classes: int) -> dict[str, int]:
    """Number of videos per split: unlabeled pretraining videos, then so many per class."""
    return {"pretrain": num_pretrain, "train": train_per_class * num_classes, "test": test_per_class * num_classes}


def generate_dataset(out_dir: str | Path, config: Any, version: int, stamp_name: str, dataset: str,
                     plan: Callable[[Any], Sequence[Any]], make_video: Callable[[Any, Any, Path], ManifestRow],
                     workers: int | None = None) -> Path:
    """Make the videos `plan(config)` lists with `make_video(config, spec, out_dir)` (each spec has
    a `split`: videos/<split>/ is made for it), store their motion profiles and write their
    manifest; return its path. Does
    nothing when the folder already holds a complete dataset made with the same config and
    generator `version` (the stamp `stamp_name`, written first: a crash leaves a stamp without
    manifest, so the next call redoes it). `workers` processes make the videos (default: all cores;
    1 runs in this process); the result must not depend on it."""
    out_dir = Path(out_dir)
    manifest, stamp = out_dir / MANIFEST_NAME, out_dir / stamp_name
    wanted = {"generator_version": version, **asdict(config)}
    if manifest.exists() and read_stamp(stamp) == wanted:
        return with_profiles(manifest, workers)
    if out_dir.exists() and any(out_dir.iterdir()) and read_stamp(stamp) is None:
        raise FileExistsError(f"{out_dir} is not empty and holds no {dataset} dataset; "
                              "choose an empty or new folder")
    manifest.unlink(missing_ok=True)
    shutil.rmtree(out_dir / "videos", ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(wanted, indent=2) + "\n")
    specs = plan(config)
    for split in {spec.split for spec in specs}:
        (out_dir / "videos" / split).mkdir(parents=True, exist_ok=True)

    workers = max(1, min(workers or os.cpu_count() or 1, len(specs)))
    if workers == 1:
        rows = [make_video(config, spec, out_dir) for spec in specs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            chunk = max(1, len(specs) // (4 * workers))
            rows = list(pool.map(make_video, repeat(config), specs, repeat(out_dir), chunksize=chunk))
    return write_manifest(store_profiles(rows, manifest, workers=workers).rows, manifest)


def with_profiles(manifest: Path, workers: int | None = None) -> Path:
    """`manifest`, its videos' motion profiles stored first when its folder, made before the
    generators stored them, has none."""
    if not profile_file(manifest).exists():
        write_manifest(store_profiles(read_manifest(manifest), manifest, workers=workers).rows, manifest)
    return manifest


def ensure_dataset(out_dir: str | Path, config: Any, config_type: type, version: int, stamp_name: str,
                   generate: Callable[..., Path], workers: int | None = None) -> Path:
    """The manifest of a generated dataset in `out_dir`, made on first use by `generate(out_dir,
    config, workers)`. Without `config` a complete dataset of this generator `version` already there
    is accepted, whatever its settings; one an older generator made (or left incomplete) is made
    again with its settings, and an empty folder gets the default dataset (`config_type()`). With a
    config, the folder is (re)generated unless it matches it."""
    manifest = Path(out_dir) / MANIFEST_NAME
    stamp = read_stamp(Path(out_dir) / stamp_name)
    if config is None and stamp:
        if manifest.exists() and stamp.get("generator_version") == version:
            return with_profiles(manifest, workers)
        config = config_type(**{f.name: stamp[f.name] for f in fields(config_type) if f.name in stamp})
    return generate(out_dir, config or config_type(), workers)


def read_stamp(path: Path) -> dict | None:
    """The config stamp of a generated dataset's folder, or None when there is none (or it is broken)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
