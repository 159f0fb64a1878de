"""Space-time cubic puzzles (docs/methods.md#cubic_puzzle): each label's cubes come back from their cells in
order when un-permuted, no two cubes touch in space or time, channel replication per cube, short videos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SpyEncoder

from mmssl.cli import visualize
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.dataset import PretextDataset
from mmssl.data.manifest import ManifestRow
from mmssl.io import TooShortError
from mmssl.tasks.cubic_puzzle import ORDERS, CubicPuzzle, CubicPuzzleConfig
from mmssl.transforms.video import to_model_input


def coded_video(frames: int, side: int) -> torch.Tensor:
    """uint8 [frames, side, side, 3]: red = 4 * row, green = 4 * column, blue = 8 * frame."""
    t, y, x = torch.meshgrid(torch.arange(frames), torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([4 * y, 4 * x, 8 * t], -1).to(torch.uint8)


def test_each_label_s_cubes_come_back_in_order_from_cells_that_do_not_touch() -> None:
    task = CubicPuzzle(CubicPuzzleConfig(cell_len=8))
    video = coded_video(32, 64)
    rng = np.random.default_rng(0)
    for label in range(48):
        for _ in range(2):
            clip = DecodedClip(video, None, Window(np.arange(32), targets={"label": label}), None)
            sample = task.make_sample(clip, rng)
            assert int(sample["label"]) == label and sample["frames"].shape == (4, 6, 24, 24, 3)
            back = sample["frames"][torch.from_numpy(np.argsort(ORDERS[label % 24]))]
            starts = np.array([(int(c[0, 0, 0, 2]) // 8, int(c[0, 0, 0, 0]) // 4, int(c[0, 0, 0, 1]) // 4)
                               for c in back])  # (t, y, x) of each cube's first voxel
            for (t, y, x), cube in zip(starts, back):
                assert torch.equal(cube, video[t:t + 6, y:y + 24, x:x + 24])
            slot, row, column = starts[:, 0] // 8, starts[:, 1] // 32, starts[:, 2] // 32
            if label >= 24:  # temporal: one place, cube i from time slot i, a frame or more apart
                assert slot.tolist() == [0, 1, 2, 3] and len({*zip(row, column)}) == 1
                assert (np.diff(starts[:, 0]) - 6).min() >= 1
            else:  # spatial: one time slot, cube i from place i (row-major), pixels apart
                assert len(set(slot)) == 1 and list(zip(row, column)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
                assert starts[1, 2] - starts[0, 2] - 24 >= 1 and starts[3, 2] - starts[2, 2] - 24 >= 1
                assert starts[2, 1] - starts[0, 1] - 24 >= 1 and starts[3, 1] - starts[1, 1] - 24 >= 1
            assert torch.equal(back, sample["frames"]) == (label % 24 == 0)  # shown permuted


def test_each_cube_keeps_one_colour_channel_in_all_its_frames() -> None:
    task = CubicPuzzle(CubicPuzzleConfig(cell_len=5))
    encoder = SpyEncoder()
    cubes = torch.randint(0, 256, (2, 4, 4, 12, 12, 3), dtype=torch.uint8)
    out = task.loss({"frames": cubes, "label": torch.tensor([3, 30])}, encoder, task.build_head(encoder))
    assert torch.isfinite(out["loss"]) and task.build_head(encoder).classifier[-1].out_features == 48
    shown, plain = encoder.inputs[0], to_model_input(cubes.flatten(0, 1))
    assert shown.shape == (8, 3, 4, 12, 12)  # 4 cubes of 2 samples, one clip each
    for cube, original in zip(shown, plain):
        assert any(torch.equal(cube, original[c:c + 1].expand_as(original)) for c in range(3))


def row(num_frames: int, path: str = "v.mp4") -> ManifestRow:
    return ManifestRow(path, fps=16.0, num_frames=num_frames, duration=num_frames / 16)


def test_short_videos_are_left_out_as_too_short() -> None:
    task = CubicPuzzle(CubicPuzzleConfig(cell_len=8, stride=1))
    window = task.window(row(32), np.random.default_rng(0))
    assert window.frames.tolist() == list(range(32)) and 0 <= window.targets["label"] < 48
    with pytest.raises(TooShortError):
        task.window(row(31), np.random.default_rng(0))
    dataset = PretextDataset([row(48, "a.mp4"), row(20, "short.mp4")], task, 32)
    assert [r.path for r in dataset.rows] == ["a.mp4"] and dataset.excluded["too_short"] == 1


def test_visualize_shows_each_cube_with_its_cell(tiny_synthav: Path, tmp_path: Path) -> None:
    task = CubicPuzzle(CubicPuzzleConfig(cell_len=8))
    clip = DecodedClip(coded_video(32, 64), None, Window(np.arange(32), targets={"label": 24 + 1}), None)
    views = task.views(task.make_sample(clip, np.random.default_rng(0)))
    assert [caption for caption, _ in views] == ["temporal (0, 1, 3, 2)\nt0", "t1", "t3", "t2"]
    assert [int(image[0, 0, 2]) // 64 for _, image in views] == [0, 1, 3, 2]  # middle frames of slots 0, 1, 3, 2
    out = visualize.main(["--task", "cubic_puzzle", "--num", "2", f"data.synthav_dir={tiny_synthav}",
                          "data.frame_size=32", "task.cubic_puzzle.cell_len=5", "--out", str(tmp_path / "c.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
