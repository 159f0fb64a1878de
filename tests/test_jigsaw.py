"""Jigsaw puzzles (docs/methods.md#jigsaw): the permutation set's Hamming distances, each label's tiles put
back by its permutation, the gap between tiles, per-tile normalisation, the views."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from helpers import SpyEncoder

from mmssl.cli import visualize
from mmssl.data.clip import DecodedClip, Window
from mmssl.tasks.jigsaw import Jigsaw, JigsawConfig, permutation_set, tile_corners


def hamming(perms: np.ndarray) -> np.ndarray:
    """The distances (places that differ) of every pair of distinct rows."""
    distance = (perms[:, None] != perms[None]).sum(-1)
    return distance[np.triu_indices(len(perms), 1)]


def test_the_permutation_set_is_far_apart_and_fixed_by_its_seed() -> None:
    perms = permutation_set(9, 24, 0)
    assert perms.shape == (24, 9) and all(sorted(p) == list(range(9)) for p in perms.tolist())
    distance = hamming(perms)
    # a random set of 24 has mean 8.0 (9 * 8/9) and minimum 4-5; the greedy set is farther apart
    assert distance.min() >= 6 and distance.mean() > 8.3
    assert np.array_equal(permutation_set(9, 24, 0), perms)
    assert not np.array_equal(permutation_set(9, 24, 1), perms)
    assert hamming(permutation_set(4, 24, 0)).min() >= 1  # all 4! orders of 4 pieces, each once


def coded_frame(side: int) -> torch.Tensor:
    """uint8 [side, side, 3]: red = 4 * row, green = 4 * column, so every pixel says where it is."""
    y, x = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([4 * y, 4 * x, torch.zeros_like(y)], -1).to(torch.uint8)


def test_each_label_s_tiles_come_back_in_order_when_un_permuted() -> None:
    task = Jigsaw(JigsawConfig(num_permutations=24))
    frame = coded_frame(64)
    rng = np.random.default_rng(0)
    for label, perm in enumerate(task.permutations):
        clip = DecodedClip(frame[None], None, Window(np.array([0]), targets={"label": label}), None)
        sample = task.make_sample(clip, rng)
        assert int(sample["label"]) == label and sample["frames"].shape == (9, 16, 16, 3)
        back = sample["frames"][torch.from_numpy(np.argsort(perm))]
        for cell, tile in enumerate(back):
            y, x = int(tile[0, 0, 0]) // 4, int(tile[0, 0, 1]) // 4
            assert divmod(cell, 3) == (y // 21, x // 21)  # cell i's tile, cut from cell i
            assert torch.equal(tile, frame[y:y + 16, x:x + 16])
        assert torch.equal(back, sample["frames"]) == bool((perm == np.arange(9)).all())  # shown permuted


def test_no_two_tiles_touch_and_each_moves_in_its_cell() -> None:
    rng = np.random.default_rng(0)
    places = set()
    for side in (32, 64, 100):
        for _ in range(200):
            corners, (tile, _) = tile_corners(side, side, 3, 0.75, 0.5, rng)
            grid = corners.reshape(3, 3, 2)
            assert (grid[:, 1:, 1] - grid[:, :-1, 1] - tile).min() >= 1  # a gap between left and right
            assert (grid[1:, :, 0] - grid[:-1, :, 0] - tile).min() >= 1  # and between top and bottom
            assert corners.min() >= 0 and corners.max() + tile <= side
            places.add(tuple(corners[4]))
    assert len(places) > 3  # the jitter moves the tiles


def test_the_encoder_sees_each_tile_alone_normalised() -> None:
    task = Jigsaw(JigsawConfig(num_permutations=24, grey_share=1.0))
    encoder = SpyEncoder()
    tiles = torch.randint(0, 256, (2, 9, 16, 16, 3), dtype=torch.uint8)
    out = task.loss({"frames": tiles, "label": torch.tensor([0, 5])}, encoder, task.build_head(encoder))
    assert torch.isfinite(out["loss"]) and 0 <= float(out["accuracy"]) <= 1
    shown = encoder.inputs[0]
    assert shown.shape == (18, 3, 1, 16, 16)  # 9 tiles of 2 samples, one at a time
    torch.testing.assert_close(shown.mean((2, 3, 4)), torch.zeros(18, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(shown.std((2, 3, 4)), torch.ones(18, 3), atol=1e-3, rtol=0)
    assert torch.equal(shown[:, 0], shown[:, 1])  # grey: every channel alike


def test_visualize_shows_the_puzzle_and_its_solution(tiny_synthav: Path, tmp_path: Path) -> None:
    task = Jigsaw(JigsawConfig(num_permutations=24))
    clip = DecodedClip(coded_frame(32)[None], None, Window(np.array([0]), targets={"label": 7}), None)
    sample = task.make_sample(clip, np.random.default_rng(0))
    (caption, puzzle), (solved_caption, solved) = task.views(sample)
    assert caption == f"order {''.join(map(str, task.permutations[7].tolist()))}" and solved_caption == "un-permuted"
    assert puzzle.shape == solved.shape == (26, 26, 3)  # 3 tiles of 8 px, 1 px apart
    # solved: the tiles' top-left pixels lie further right along a row (green) and further down a column (red)
    assert (solved[0, ::9, 1].int().diff() > 0).all() and (solved[::9, 0, 0].int().diff() > 0).all()
    out = visualize.main(["--task", "jigsaw", "--num", "2", f"data.synthav_dir={tiny_synthav}",
                          "data.frame_size=32", "task.jigsaw.num_permutations=24", "--out", str(tmp_path / "j.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
