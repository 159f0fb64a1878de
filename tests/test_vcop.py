"""VCOP clip order prediction: window arithmetic, lexicographic labels, per-clip augmentation,
head, training."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SpyEncoder

from mmssl.config import load_config
from mmssl.data.manifest import ManifestRow
from mmssl.engine.trainer import pretrain
from mmssl.io import TooShortError
from mmssl.tasks import build_task
from mmssl.tasks.vcop import VCOP, VCOPConfig
from mmssl.transforms.video import VideoAugment

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("clip_len, stride, interval, num_clips, span", [
    (16, 1, 8, 3, 64), (4, 1, 2, 3, 16), (4, 2, 3, 3, 27), (2, 1, 0, 4, 8)])
def test_window_span_and_too_short(clip_len: int, stride: int, interval: int, num_clips: int,
                                   span: int) -> None:
    config = VCOPConfig(num_clips=num_clips, clip_len=clip_len, stride=stride, interval=interval)
    task = VCOP(config)
    assert task.window_span == span
    rng = np.random.default_rng(0)
    frames = task.window(ManifestRow("fits.mp4", fps=8.0, num_frames=span), rng).frames
    assert sorted(frames) == sorted(set(frames)) and min(frames) == 0 and max(frames) == span - 1
    with pytest.raises(TooShortError):
        task.window(ManifestRow("short.mp4", fps=8.0, num_frames=span - 1), rng)


def test_label_is_the_lexicographic_index_of_the_clip_permutation() -> None:
    config = VCOPConfig(num_clips=3, clip_len=4, stride=2, interval=3)
    task = VCOP(config)
    permutations = list(itertools.permutations(range(3)))
    assert task.permutations == permutations
    rng = np.random.default_rng(0)
    counts = np.zeros(6, int)
    for _ in range(600):
        window = task.window(ManifestRow("video.mp4", fps=8.0, num_frames=50), rng)
        shown = window.frames.reshape(3, 4)  # position i shows one clip
        assert np.all(np.diff(shown, axis=1) == 2)
        clips = shown[np.argsort(shown[:, 0])]  # the clips in time order
        assert np.all(np.diff(clips[:, 0]) == 7 + 3)  # span 7, then 3 frames between clips
        assert clips[0, 0] >= 0 and clips[-1, -1] < 50
        label = window.targets["label"]
        assert np.array_equal(shown, clips[list(permutations[label])])
        counts[label] += 1
    assert np.all(np.abs(counts - 100) < 40)


def test_augmentation_is_shared_within_a_clip_and_independent_between_clips() -> None:
    torch.manual_seed(0)
    task = VCOP(VCOPConfig(num_clips=3, clip_len=4), VideoAugment())
    encoder = SpyEncoder()
    image = torch.randint(0, 256, (2, 1, 32, 32, 3), dtype=torch.uint8)  # one still image per sample
    batch = {"frames": image.expand(2, 12, 32, 32, 3).contiguous(), "label": torch.tensor([0, 5])}
    out = task.loss(batch, encoder, task.build_head(encoder))
    assert torch.isfinite(out["loss"]) and 0 <= out["accuracy"] <= 1
    x = encoder.inputs[0]
    assert x.shape == (6, 3, 4, 32, 32)  # B * clips, C, L, H, W
    for clip in x:
        assert all(torch.equal(clip[:, 0], clip[:, t]) for t in range(1, 4))
    for sample in x.reshape(2, 3, 3, 4, 32, 32):
        for i, j in itertools.combinations(range(3), 2):
            assert not torch.allclose(sample[i], sample[j])


def test_head_matches_vcop() -> None:
    task = VCOP(VCOPConfig(num_clips=3))
    head = task.build_head(SpyEncoder())
    assert (head.pair[0].in_features, head.pair[0].out_features) == (16, 512)
    assert head.classifier[0].p == 0.5
    assert (head.classifier[1].in_features, head.classifier[1].out_features) == (512 * 3, 6)
    assert head(torch.randn(5 * 3, 8)).shape == (5, 6)
    four = VCOP(VCOPConfig(num_clips=4, hidden_dim=32)).build_head(SpyEncoder())
    assert four(torch.randn(2 * 4, 8)).shape == (2, 24) and four.classifier[1].in_features == 32 * 6


def test_one_training_step(tiny_synthav: Path, tmp_path: Path) -> None:
    config = load_config(ROOT / "configs/pretrain/vcop.yaml", [  # a 23-frame window of the 24-frame videos
        "task.vcop.interval=1", "data.frame_size=32", "data.batch_size=4", "data.num_workers=0", "train.max_steps=1",
        "train.log_every=1", f"data.synthav_dir={tiny_synthav}"])
    task = build_task(config)
    assert isinstance(task, VCOP) and task.window_span <= 24
    checkpoint = pretrain(config, tmp_path)
    assert checkpoint.exists()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["step"] == 1 and np.isfinite(record["loss"])
