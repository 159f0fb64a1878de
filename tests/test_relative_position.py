"""Relative patch position (docs/methods.md#relative_position): the label of each of the 8 placements, the
gap, colour dropping, the down-up-sampling and the per-patch normalisation, the view."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SpyEncoder

from mmssl.cli import visualize
from mmssl.config import ConfigError
from mmssl.data.clip import DecodedClip, Window
from mmssl.tasks.relative_position import (
    NEIGHBOURS,
    RelativePosition,
    RelativePositionConfig,
    patch_corners,
)

CONFIG = RelativePositionConfig(patch_share=0.25, gap_share=0.094, jitter_share=0.031, resample_share=0.0)  # 16/6/2 px


def coded_frame(side: int) -> torch.Tensor:
    """uint8 [side, side, 3]: red = 4 * row, green = 4 * column, so every pixel says where it is."""
    y, x = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([4 * y, 4 * x, torch.zeros_like(y)], -1).to(torch.uint8)


def test_each_placement_has_its_label_and_the_patches_never_touch() -> None:
    task = RelativePosition(CONFIG)
    frame = coded_frame(64)
    rng = np.random.default_rng(0)
    directions = {"top left": (-1, -1), "top": (-1, 0), "top right": (-1, 1), "left": (0, -1), "right": (0, 1),
                  "bottom left": (1, -1), "bottom": (1, 0), "bottom right": (1, 1)}
    assert list(directions.values()) == NEIGHBOURS
    gaps = []
    for label, (dy, dx) in enumerate(NEIGHBOURS):
        for _ in range(30):
            clip = DecodedClip(frame[None], None, Window(np.array([0]), targets={"label": label}), None)
            sample = task.make_sample(clip, rng)
            assert int(sample["label"]) == label and sample["frames"].shape == (2, 16, 16, 3)
            (y0, x0), (y1, x1) = [(int(p[0, 0, 0]) // 4, int(p[0, 0, 1]) // 4) for p in sample["frames"]]
            for patch, (y, x) in zip(sample["frames"], [(y0, x0), (y1, x1)]):
                assert torch.equal(patch, frame[y:y + 16, x:x + 16])
            for offset, step in ((y1 - y0, dy), (x1 - x0, dx)):
                assert np.sign(offset) == step or (step == 0 and abs(offset) <= 4)  # jitter: 2 px each
                assert step == 0 or 22 - 4 <= abs(offset) <= 22 + 4  # 16 px patch + 6 px gap, jittered
            apart = max(abs(y1 - y0) if dy else 0, abs(x1 - x0) if dx else 0) - 16
            assert apart >= 2  # the gap, less both jitters
            gaps.append(apart)
    assert min(gaps) == 2 and max(gaps) == 10  # the jitter moves them
    with pytest.raises(ConfigError, match="touch"):
        patch_corners(64, 64, 0, RelativePositionConfig(gap_share=0.05, jitter_share=0.031), rng)


def test_each_patch_keeps_one_colour_then_is_normalised() -> None:
    task = RelativePosition(RelativePositionConfig(resample_share=0.0))
    encoder = SpyEncoder()
    patches = torch.randint(0, 256, (3, 2, 16, 16, 3), dtype=torch.uint8)
    out = task.loss({"frames": patches, "label": torch.tensor([0, 4, 7])}, encoder, task.build_head(encoder))
    assert torch.isfinite(out["loss"])
    shown = encoder.inputs[0][:, :, 0]
    assert shown.shape == (6, 3, 16, 16)  # both patches of 3 samples, one at a time
    torch.testing.assert_close(shown.mean((1, 2, 3)), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(shown.square().mean((1, 2, 3)), torch.ones(6), atol=1e-3, rtol=0)
    spread = shown.std((2, 3)).sort(1).values  # per patch: the two dropped channels' spread, then the kept one's
    assert (spread[:, 1] * 20 < spread[:, 2]).all()


def test_a_third_of_the_patches_are_down_and_up_sampled() -> None:
    task = RelativePosition(RelativePositionConfig(patch_share=0.25, resample_share=1 / 3))
    frame = torch.randint(0, 256, (64, 64, 3), dtype=torch.uint8)
    rng = np.random.default_rng(0)
    changed = []
    for _ in range(150):
        clip = DecodedClip(frame[None], None, Window(np.array([0]), targets={"label": 0}), None)
        for patch in task.make_sample(clip, rng)["frames"].int():
            detail = (patch[:, 1:] - patch[:, :-1]).abs().float().mean()
            changed.append(bool(detail < 40))  # noise: ~85 between neighbours; down-up-sampled: far less
    assert 0.23 < np.mean(changed) < 0.43  # about a third of 300


def test_visualize_shows_the_patches_in_their_places(tiny_synthav: Path, tmp_path: Path) -> None:
    task = RelativePosition(CONFIG)
    clip = DecodedClip(coded_frame(64)[None], None, Window(np.array([0]), targets={"label": 2}), None)
    sample = task.make_sample(clip, np.random.default_rng(0))
    ((caption, board),) = task.views(sample)
    assert caption == "(rows, columns) (-1, 1)" and board.shape == (50, 50, 3)
    assert torch.equal(board[17:33, 17:33], sample["frames"][0]) and torch.equal(board[:16, 34:], sample["frames"][1])
    out = visualize.main(["--task", "relative_position", "--num", "2", f"data.synthav_dir={tiny_synthav}",
                          "data.frame_size=32", "--out", str(tmp_path / "r.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
