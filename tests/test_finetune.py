"""The supervised yardstick: the fine-tune recipe trains an encoder from random init that fits a labeled
set and generalises to held-out videos of it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmssl.config import TransferConfig, load_config
from mmssl.data.manifest import ManifestRow, write_manifest
from mmssl.eval.transfer import Transfer, random_encoder
from mmssl.io import probe, write_media

ROOT = Path(__file__).resolve().parents[1]


def sliding_square(path: Path, direction: int, rng: np.random.Generator, size: int = 32,
                   num_frames: int = 16) -> Path:
    """A bright square moving 1 px per frame left (-1) or right (+1) over noise, through a random
    middle place: mainly the motion tells the two classes apart."""
    frames = rng.integers(40, 90, (num_frames, size, size, 3), dtype=np.uint8)
    middle, y = int(rng.integers(size // 2 - 8, size // 2 + 1)), int(rng.integers(0, size - 8))
    for t in range(num_frames):
        x = int(np.clip(middle + direction * (t - num_frames // 2), 0, size - 8))
        frames[t, y:y + 8, x:x + 8] = 230
    return write_media(path, frames, 8.0, gop=4)


def test_the_finetune_recipe_fits_and_generalises_on_an_easy_labeled_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for split, per_class in (("train", 12), ("test", 8)):
        for label, direction in (("left", -1), ("right", 1)):
            for i in range(per_class):
                path = sliding_square(tmp_path / f"{split}_{label}_{i}.mp4", direction, rng)
                rows.append(ManifestRow.from_info(path, probe(path), label=label, split=split))
    manifest = write_manifest(rows, tmp_path / "manifest.csv")
    # the shipped recipe, at this set's size: the same lr, schedule, crop and clip spread over the video
    config = load_config(ROOT / "configs/transfer/finetune.yaml",
                         [f"manifest={manifest}", "frame_size=32", "clip_len=8", "stride=2", "num_workers=0",
                          "finetune_epochs=12", "batch_size=8"], root=TransferConfig)
    transfer = Transfer(config, torch.device("cpu"))
    result = transfer.finetune(random_encoder("tiny3d", 0), "clip")
    assert result["num_train_videos"] == 24 and result["num_test_videos"] == 16
    assert result["train_clip_top1"] >= 90.0, result  # fits: the last epoch's augmented clips
    assert result["video_top1"] >= 85.0, result  # and generalises to videos it never saw
