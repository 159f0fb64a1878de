"""3DRotNet rotation prediction (docs/methods.md#rotation): all four quarter turns of every clip in one
batch, each turned back by its label gives the clip, every frame turned alike, the small rotation."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import SpyEncoder
from torch import Tensor, nn

from mmssl.cli import visualize
from mmssl.config import ConfigError
from mmssl.models import VideoEncoder
from mmssl.tasks.rotation import Rotation, RotationConfig, quarter_turns
from mmssl.transforms.video import VideoAugment, rotate, to_model_input


def test_turning_each_copy_back_by_its_label_gives_the_original() -> None:
    x = torch.rand(3, 3, 4, 8, 8)
    turned, labels = quarter_turns(x)
    assert turned.shape == (12, 3, 4, 8, 8) and torch.equal(torch.bincount(labels), torch.tensor([3, 3, 3, 3]))
    for copy, label, original in zip(turned, labels.tolist(), x.repeat(4, 1, 1, 1, 1)):
        assert torch.equal(torch.rot90(copy, -label, dims=(-2, -1)), original)
        assert label == 0 or not torch.equal(copy, original)
    corner = torch.zeros(1, 1, 1, 8, 8)
    corner[..., 0, 7] = 1  # top right: a quarter turn counterclockwise takes it to the top left, and so on
    places = [tuple(torch.nonzero(copy[0, 0]).tolist()[0]) for copy in quarter_turns(corner)[0]]
    assert places == [(0, 7), (0, 0), (7, 0), (7, 7)]


class QuadrantEncoder(VideoEncoder):
    """Features: the brightness of the top-right, top-left, bottom-left and bottom-right quarters."""

    feature_dim = 4

    def encode(self, x: Tensor) -> Tensor:
        top, bottom = x.mean(dim=(1, 2)).chunk(2, dim=1)
        quarters = [top.chunk(2, -1)[1], top.chunk(2, -1)[0], bottom.chunk(2, -1)[0], bottom.chunk(2, -1)[1]]
        return torch.stack([q.mean(dim=(1, 2)) for q in quarters], dim=1)


def test_the_loss_pairs_every_turn_with_its_label() -> None:
    """Clips bright in their top-right corner: an encoder that sees where the corner went and a head
    reading it as the label answer every copy right, only if each copy carries its own turn's label."""
    task = Rotation(RotationConfig(clip_len=4, max_degrees=0.0))
    frames = torch.zeros(5, 4, 16, 16, 3, dtype=torch.uint8)
    frames[:, :, :8, 8:] = 255
    head = nn.Linear(4, 4)
    with torch.no_grad():
        head.weight.copy_(torch.eye(4))
        head.bias.zero_()
    out = task.loss({"frames": frames}, QuadrantEncoder(), head)
    assert out["accuracy"] == 1.0


def test_every_frame_of_a_copy_turns_alike() -> None:
    task = Rotation(RotationConfig(clip_len=4, max_degrees=0.0))
    encoder = SpyEncoder()
    frames = torch.randint(0, 256, (2, 4, 16, 16, 3), dtype=torch.uint8)
    out = task.loss({"frames": frames}, encoder, task.build_head(encoder))
    assert torch.isfinite(out["loss"])
    shown, plain = encoder.inputs[0], to_model_input(frames)
    assert shown.shape == (8, 3, 4, 16, 16)  # 4 copies of 2 clips
    for k in range(4):
        for i in range(2):
            for t in range(4):
                assert torch.equal(shown[k * 2 + i][:, t], torch.rot90(plain[i][:, t], k, dims=(-2, -1)))


def test_the_small_rotation_turns_the_same_way_is_shared_by_the_copies_and_bounded() -> None:
    x = torch.rand(2, 3, 2, 8, 8)
    torch.testing.assert_close(rotate(x, torch.full((2,), math.pi / 2)), torch.rot90(x, 1, dims=(-2, -1)))
    torch.testing.assert_close(rotate(x, torch.zeros(2)), x)
    torch.manual_seed(0)
    task = Rotation(RotationConfig(clip_len=3, max_degrees=10.0))
    encoder = SpyEncoder()
    frame = torch.randint(0, 256, (1, 1, 16, 16, 3), dtype=torch.uint8)
    task.loss({"frames": frame.expand(1, 3, 16, 16, 3)}, encoder, task.build_head(encoder))
    shown, plain = encoder.inputs[0], to_model_input(frame)[0, :, 0]
    back = [torch.rot90(shown[k], -k, dims=(-2, -1)) for k in range(4)]
    assert all(torch.equal(back[0], b) for b in back[1:])  # one small rotation for the four copies
    assert all(torch.equal(back[0][:, 0], back[0][:, t]) for t in range(3))  # and every frame
    assert not torch.allclose(back[0][:, 0], plain)
    # an angle within 10 degrees: closer to the unturned frame than any turn of 20 degrees or more
    error = {deg: float((rotate(plain[None, :, None], torch.tensor([math.radians(deg)]))[0, :, 0]
                         - back[0][:, 0]).abs().mean()) for deg in range(-30, 31)}
    assert abs(min(error, key=error.get)) <= 10


def test_an_asymmetric_crop_aspect_range_is_refused() -> None:
    Rotation(RotationConfig(), VideoAugment(crop_ratio=(3 / 4, 4 / 3)))
    with pytest.raises(ConfigError, match="symmetric about 1"):
        Rotation(RotationConfig(), VideoAugment(crop_ratio=(1.0, 4 / 3)))


def test_visualize_shows_the_four_turns_with_their_labels(tiny_synthav: Path, tmp_path: Path) -> None:
    task = Rotation(RotationConfig(clip_len=4))
    frames = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    views = task.views({"frames": frames})
    assert [caption for caption, _ in views] == ["label=0 (0 deg)", "label=1 (90 deg)", "label=2 (180 deg)",
                                                 "label=3 (270 deg)"]
    for k, (_, image) in enumerate(views):
        assert torch.equal(image, torch.rot90(frames[2], k, dims=(0, 1)))
    out = visualize.main(["--task", "rotation", "--num", "2", f"data.synthav_dir={tiny_synthav}",
                          "data.frame_size=32", "--out", str(tmp_path / "rotation.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
