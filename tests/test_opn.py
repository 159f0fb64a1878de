"""OPN sequence sorting: the 12 classes, window and label rules, device augmentation, head, training."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SpyEncoder
from torch import Tensor

from mmssl.config import load_config
from mmssl.data.manifest import ManifestRow
from mmssl.data.motion import MotionConfig, tuple_motion
from mmssl.engine.trainer import pretrain
from mmssl.io import TooShortError
from mmssl.models.heads import PairwiseHead
from mmssl.tasks import build_task
from mmssl.tasks.opn import OPN, OPNConfig, sequence_classes
from mmssl.transforms.video import VideoAugment, channel_split, frame_shift, to_model_input

ROOT = Path(__file__).resolve().parents[1]
ROW = ManifestRow("video.mp4", fps=8.0, num_frames=24)
UNIFORM = MotionConfig(candidates=1)  # no motion decode: the rows here name no real file


def find_shift(a: Tensor, b: Tensor, max_shift: int) -> tuple[int, int] | None:
    """(dy, dx) with b[y, x] == a[y + dy, x + dx] away from the borders, if any ([..., H, W])."""
    h, w = a.shape[-2:]
    m = max_shift
    for dy, dx in itertools.product(range(-m, m + 1), repeat=2):
        if torch.equal(b[..., m:h - m, m:w - m], a[..., m + dy:h - m + dy, m + dx:w - m + dx]):
            return dy, dx
    return None


def test_twelve_classes_no_class_reverses_another_and_with_reverses_cover_all_24() -> None:
    classes = sequence_classes(4)
    assert len(classes) == 12 and classes == sorted(classes)
    reverses = {p[::-1] for p in classes}
    assert not reverses & set(classes)
    assert reverses | set(classes) == set(itertools.permutations(range(4)))
    assert len(OPN(OPNConfig()).classes) == 12


def test_window_shows_the_class_permutation_or_its_reverse_with_uniform_labels() -> None:
    task = OPN(OPNConfig(gap_s=0.25, motion=UNIFORM))
    rng = np.random.default_rng(0)
    draws = 2400
    counts = np.zeros(12, int)
    reversed_counts = np.zeros(12, int)
    for _ in range(draws):
        window = task.window(ROW, rng)
        frames, label = window.frames, window.targets["label"]
        tuple_frames = np.sort(frames)
        assert np.all(np.diff(tuple_frames) == 2) and tuple_frames[0] >= 0 and tuple_frames[-1] < 24
        order = tuple(int(i) for i in np.searchsorted(tuple_frames, frames))  # frame rank at each position
        forward = task.classes[label]
        assert order in (forward, forward[::-1])  # a reversed sample keeps its label
        counts[label] += 1
        reversed_counts[label] += order != forward
    expected = draws / 12
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected))
    assert np.all(np.abs(reversed_counts / counts - 0.5) < 0.15)


def test_short_videos_shrink_the_gap_and_too_short_ones_raise() -> None:
    task = OPN(OPNConfig(gap_s=1.0, motion=UNIFORM))  # 8 frames at 8 fps: needs 25 frames
    rng = np.random.default_rng(1)
    frames = np.sort(task.window(ManifestRow("short.mp4", fps=8.0, num_frames=10), rng).frames)
    assert np.all(np.diff(frames) == 3)
    assert np.array_equal(np.sort(task.window(ManifestRow("s.mp4", fps=8.0, num_frames=4), rng).frames),
                          np.arange(4))
    with pytest.raises(TooShortError):
        task.window(ManifestRow("s.mp4", fps=8.0, num_frames=3), rng)


def test_tuples_come_from_high_motion_windows() -> None:
    """OPN's large-motion sampling: in a video static for its first half, uniform tuples often lie
    in the static half (their order is invisible); motion-weighted ones rarely do."""
    motion = np.where(np.arange(23) < 12, 0.0, 1.0) + 1e-3

    def static_share(candidates: int) -> float:
        task = OPN(OPNConfig(gap_s=0.25, motion=MotionConfig(candidates=candidates)))
        task.motion.cache.get(ROW.path, lambda: motion)
        rng = np.random.default_rng(0)
        windows = [task.window(ROW, rng).frames for _ in range(1000)]
        return float(np.mean([tuple_motion(task.motion.profile(ROW), w) < 1.0 for w in windows]))

    assert static_share(1) > 0.3 and static_share(16) < 0.1


def test_channel_split_copies_one_channel_of_each_frame() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 3, 5, 6, 6)
    out = channel_split(x)
    assert out.shape == x.shape
    chosen = set()
    for b, t in itertools.product(range(4), range(5)):
        frame = out[b, :, t]
        assert torch.equal(frame[0], frame[1]) and torch.equal(frame[0], frame[2])
        matches = [c for c in range(3) if torch.equal(frame[0], x[b, c, t])]
        assert len(matches) == 1
        chosen.add(matches[0])
    assert chosen == {0, 1, 2}


def test_frame_shift_moves_each_frame_by_its_own_offset() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 4, 16, 16)
    out = frame_shift(x, 2)
    shifts = [find_shift(x[b, :, t], out[b, :, t], 2) for b in range(2) for t in range(4)]
    assert None not in shifts and len(set(shifts)) > 1
    assert torch.equal(frame_shift(x, 0), x)


def test_loss_shares_the_crop_then_jitters_and_splits_channels_per_frame() -> None:
    task = OPN(OPNConfig(jitter=0.1), VideoAugment())
    encoder = SpyEncoder()
    head = task.build_head(encoder)
    colour = torch.randint(0, 256, (2, 1, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batch = {"frames": colour.expand(2, 4, 32, 32, 3).contiguous(), "label": torch.tensor([0, 11])}
    torch.manual_seed(0)
    out = task.loss(batch, encoder, head)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    torch.manual_seed(0)  # the same crop, flip and colour jitter: the normalised crop every frame of a sample shares
    crop = to_model_input(batch["frames"], task.augment)[:, :, 0]
    x = encoder.inputs[0]
    assert x.shape == (8, 3, 1, 32, 32)  # each frame on its own, T=1
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    frames = x[:, 0, 0].reshape(2, 4, 32, 32)
    channels, shifts = set(), set()
    for b, t in itertools.product(range(2), range(4)):  # one channel of the shared crop, moved by the frame's jitter
        found = [(c, s) for c in range(3) if (s := find_shift(crop[b, c], frames[b, t], 6)) is not None]
        assert len(found) == 1, found
        channels.add(found[0][0])
        shifts.add(found[0][1])
    assert len(channels) > 1 and len(shifts) > 1


def test_head_classifies_pairs_into_twelve_classes() -> None:
    head = PairwiseHead(feature_dim=8, num_inputs=4, hidden_dim=16, num_classes=12, dropout=0.5)
    assert list(zip(head.first.tolist(), head.second.tolist())) == list(itertools.combinations(range(4), 2))
    assert head.pair[0].in_features == 16 and head.classifier[-1].in_features == 16 * 6
    logits = head(torch.randn(3 * 4, 8))
    assert logits.shape == (3, 12)
    logits.sum().backward()
    task = OPN(OPNConfig(hidden_dim=32))
    assert task.build_head(SpyEncoder())(torch.randn(5 * 4, 8)).shape == (5, 12)


def test_one_training_step(tiny_synthav: Path, tmp_path: Path) -> None:
    config = load_config(ROOT / "configs/pretrain/opn.yaml", [
        "data.frame_size=32", "data.batch_size=4", "data.num_workers=0", "train.max_steps=1",
        "train.log_every=1", f"data.synthav_dir={tiny_synthav}"])
    assert isinstance(build_task(config), OPN)
    checkpoint = pretrain(config, tmp_path)
    assert checkpoint.exists()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["step"] == 1 and np.isfinite(record["loss"])
