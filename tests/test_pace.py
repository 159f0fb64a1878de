"""Pace prediction and SpeedNet (docs/methods.md#pace): no clip wraps or repeats a frame, the stride is
the label's pace, every pace's clip has the same places in the video, too-short videos are left out,
each clip is paired with its own pace's label, colour jitter per frame."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SpyEncoder
from torch import Tensor, nn

from mmssl.cli import visualize
from mmssl.data.dataset import PretextDataset
from mmssl.data.manifest import ManifestRow
from mmssl.io import TooShortError
from mmssl.models import VideoEncoder
from mmssl.tasks.pace import Pace, PaceConfig
from mmssl.transforms.video import STD, VideoAugment

PACES = [1, 2, 3, 4]


def row(num_frames: int = 48, path: str = "video.mp4") -> ManifestRow:
    return ManifestRow(path, fps=16.0, num_frames=num_frames, duration=num_frames / 16)


def test_no_clip_wraps_or_repeats_a_frame_and_the_stride_is_the_pace() -> None:
    task = Pace(PaceConfig(clip_len=8, paces=PACES))
    assert task.min_frames(16.0) == 7 * 4 + 1
    rng = np.random.default_rng(0)
    counts = np.zeros(4, int)
    for num_frames in (48, 29):  # a video exactly as long as the fastest clip fits
        for _ in range(2000):
            window = task.window(row(num_frames), rng)
            label, frames = window.targets["label"], window.frames
            assert len(frames) == 8 and frames.min() >= 0 and frames.max() < num_frames
            assert np.all(np.diff(frames) == PACES[label])  # increasing: no wrap, no repeat
            counts[label] += 1
    assert np.all(np.abs(counts - 1000) < 4 * np.sqrt(1000))


def test_every_pace_has_the_same_places_in_the_video() -> None:
    """The clip's centre ranges over the same frames for every label (a start drawn over each pace's own
    range would put slow clips nearer the ends, and the place would hint at the label)."""
    task = Pace(PaceConfig(clip_len=8, paces=PACES))
    rng = np.random.default_rng(1)
    centres: dict[int, list[float]] = {k: [] for k in range(4)}
    for _ in range(4000):
        window = task.window(row(), rng)
        centres[window.targets["label"]].append(float(window.frames[[0, -1]].mean()))
    lows, highs = [min(c) for c in centres.values()], [max(c) for c in centres.values()]
    assert max(lows) - min(lows) <= 0.5 and max(highs) - min(highs) <= 0.5
    means = [np.mean(c) for c in centres.values()]
    assert max(means) - min(means) < 1.0


def test_every_pace_mode_gives_each_sample_one_clip_per_pace_centred_alike() -> None:
    task = Pace(PaceConfig(clip_len=6, paces=[1, 2], every_pace=True))
    rng = np.random.default_rng(2)
    for _ in range(500):
        window = task.window(row(24), rng)
        assert window.targets == {}
        normal, fast = window.frames.reshape(2, 6)
        assert np.all(np.diff(normal) == 1) and np.all(np.diff(fast) == 2) and fast.max() < 24
        assert abs(normal[[0, -1]].mean() - fast[[0, -1]].mean()) <= 0.5


def test_short_videos_are_left_out_as_too_short() -> None:
    task = Pace(PaceConfig(clip_len=8, paces=PACES))
    with pytest.raises(TooShortError):
        task.window(row(28), np.random.default_rng(0))
    dataset = PretextDataset([row(48, "a.mp4"), row(16, "short.mp4"), row(29, "b.mp4")], task, 32)
    assert [r.path for r in dataset.rows] == ["a.mp4", "b.mp4"] and dataset.excluded["too_short"] == 1


class StepEncoder(VideoEncoder):
    """Frames whose pixels are their frame number: features one-hot of the frame step of the clip."""

    feature_dim = 4

    def encode(self, x: Tensor) -> Tensor:
        step = ((x[:, 0, 1] - x[:, 0, 0]).mean(dim=(1, 2)) * STD[0] * 255).round().long()
        return nn.functional.one_hot(step - 1, 4).float()


@pytest.mark.parametrize("every_pace", [False, True])
def test_the_loss_pairs_every_clip_with_its_pace(every_pace: bool) -> None:
    task = Pace(PaceConfig(clip_len=4, paces=PACES, every_pace=every_pace))
    rng = np.random.default_rng(3)
    windows = [task.window(row(), rng) for _ in range(6)]
    frames = torch.tensor(np.stack([w.frames for w in windows]), dtype=torch.uint8)
    batch = {"frames": frames[:, :, None, None, None].expand(*frames.shape, 4, 4, 3).contiguous()}
    if not every_pace:
        batch["label"] = torch.tensor([w.targets["label"] for w in windows])
    head = nn.Linear(4, 4)
    with torch.no_grad():
        head.weight.copy_(torch.eye(4))
        head.bias.zero_()
    assert task.loss(batch, StepEncoder(), head)["accuracy"] == 1.0


@pytest.mark.parametrize("frame_jitter", [False, True])
def test_colour_jitter_is_drawn_per_frame(frame_jitter: bool) -> None:
    torch.manual_seed(0)
    task = Pace(PaceConfig(clip_len=4, frame_jitter=frame_jitter), VideoAugment(crop_scale=(1, 1), flip=False))
    encoder = SpyEncoder()
    still = torch.randint(0, 256, (2, 1, 16, 16, 3), dtype=torch.uint8).expand(2, 4, 16, 16, 3)
    task.loss({"frames": still, "label": torch.tensor([0, 1])}, encoder, task.build_head(encoder))
    shown = encoder.inputs[0]
    same = [torch.allclose(clip[:, 0], clip[:, t]) for clip in shown for t in range(1, 4)]
    assert not any(same) if frame_jitter else all(same)


def test_visualize_shows_the_frame_numbers_and_the_label(tiny_synthav: Path, tmp_path: Path) -> None:
    out = visualize.main(["--task", "pace", "--num", "2", f"data.synthav_dir={tiny_synthav}", "data.frame_size=32",
                          "task.pace.clip_len=6", "--out", str(tmp_path / "pace.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
