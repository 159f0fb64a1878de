"""Space-time cubic puzzles: Kim, Cho, Kweon, "Self-Supervised Video Representation Learning with
Space-Time Cubic Puzzles", AAAI 2019.

A window of 4 * `cell_len` frames every `stride`, split into a space-time grid of 2 x 2 places by 4
time slots. In each cell a cube of `cube_share` of the cell's side (and of its length in time) sits at
a random place: a piece of the free room (`jitter_share`) is where it may move, the rest always stays
between neighbouring cubes, in space and in time, so that no two cubes touch. A sample is one of two
puzzles, each with 4! = 24 orders: a spatial one (the 4 cubes of one random time slot, row-major) or
a temporal one (the 4 cubes of one random place, in time). Labels: 0-23 the spatial orders, 24-47 the
temporal ones (`ORDERS`, lexicographic); position i shows the cube of cell perm[i]. Each cube keeps one
random colour channel copied to all three (channel replication, against chromatic aberration).
Network: one encoder with shared weights on every cube, the 4 features concatenated, an MLP classifier
over the 48 classes (`ConcatHead`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from einops import rearrange
from torch import nn

from mmssl.config import AT_LEAST_1, Bound, Config
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import clip_span, random_clip
from mmssl.io import TooShortError
from mmssl.models import VideoEncoder
from mmssl.models.heads import ConcatHead
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask, classification_loss
from mmssl.tasks.jigsaw import grid_cells
from mmssl.transforms.video import VideoAugment, channel_split, to_model_input

PIECES = 4  # 2 x 2 places, 4 time slots
ORDERS = list(itertools.permutations(range(PIECES)))  # 24 per puzzle


@dataclass
class CubicPuzzleConfig:
    """Space-time cubic puzzles (docs/methods.md#cubic_puzzle): 24 spatial + 24 temporal orders of 4 cubes."""

    cell_len: int = 8  # frames per time slot [unverified]
    stride: int = 1
    cube_share: float = 0.75  # cube side (and length) / cell side (and length): 80 of 112 px in the paper
    jitter_share: float = 0.5  # share of the free room a cube may move in; the rest is a gap
    channel_replication: bool = True
    hidden_dim: int = 512  # the classifier's hidden layer [unverified]

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "cell_len": Bound(2), "stride": AT_LEAST_1, "cube_share": Bound(0.1, 0.95),
        "jitter_share": Bound(0.0, 0.9), "hidden_dim": AT_LEAST_1}


def describe(label: int) -> str:
    """A label as a person reads it: its puzzle and order."""
    return f"{'temporal' if label >= len(ORDERS) else 'spatial'} {ORDERS[label % len(ORDERS)]}"


@register_task("cubic_puzzle", label_family="action", encoder_input="rgb",
               metric=PretextMetric("accuracy", chance=lambda task, _: 1 / (2 * len(ORDERS))))
class CubicPuzzle(PretextTask):
    config_class = CubicPuzzleConfig
    feature_mode = "clip"
    smoke_overrides = ("task.cubic_puzzle.cell_len=5",)  # 20 frames of the test videos' 24

    def __init__(self, config: CubicPuzzleConfig, augment: VideoAugment | None = None) -> None:
        grid_cells(PIECES * config.cell_len, PIECES, config.cube_share, config.jitter_share)  # a gap in time
        self.config = config

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> CubicPuzzle:
        return cls(config.task.cubic_puzzle, augment)

    def min_frames(self, fps: float) -> int:
        return clip_span(PIECES * self.config.cell_len, self.config.stride)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """The space-time grid's frames at a random start and a random label of the 48."""
        frames = PIECES * self.config.cell_len
        if row.num_frames < self.min_frames(row.fps):
            raise TooShortError(row.path, f"{row.num_frames} frames cannot hold {frames} every {self.config.stride}")
        return Window(frames=random_clip(row.num_frames, frames, self.config.stride, rng),
                      targets={"label": int(rng.integers(2 * len(ORDERS)))})

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """frames: the 4 cubes [4, length, h, w, 3] uint8 in the label's order."""
        label = clip.window.targets["label"]
        c = self.config
        (ts, length, jitter_t), (ys, h, jitter_y), (xs, w, jitter_x) = (
            grid_cells(extent, cells, c.cube_share, c.jitter_share)
            for extent, cells in zip(clip.video.shape[:3], (PIECES, 2, 2)))
        if label >= len(ORDERS):  # temporal: one place, its 4 time slots
            place = int(rng.integers(PIECES))
            cells = [(slot, place // 2, place % 2) for slot in range(PIECES)]
        else:  # spatial: one time slot, its 4 places row-major
            slot = int(rng.integers(PIECES))
            cells = [(slot, place // 2, place % 2) for place in range(PIECES)]
        starts = np.array([(ts[t], ys[y], xs[x]) for t, y, x in cells])
        starts += rng.integers(0, [jitter_t + 1, jitter_y + 1, jitter_x + 1], size=starts.shape)
        cubes = torch.stack([clip.video[t:t + length, y:y + h, x:x + w] for t, y, x in starts])
        return {"frames": cubes[list(ORDERS[label % len(ORDERS)])], "label": torch.tensor(label)}

    def views(self, sample: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """Each cube's middle frame in the model's order, captioned with the cell it was cut from (the
        row's title gives the label)."""
        label = int(sample["label"])
        order = ORDERS[label % len(ORDERS)]
        cell = "t{}" if label >= len(ORDERS) else "place {}"
        return [((f"{describe(label)}\n" if i == 0 else "") + cell.format(order[i]), cube[len(cube) // 2])
                for i, cube in enumerate(sample["frames"])]

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return ConcatHead(encoder.feature_dim, PIECES, self.config.hidden_dim, 2 * len(ORDERS))

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        x = to_model_input(rearrange(batch["frames"], "b k t h w c -> (b k) t h w c"))  # one clip per cube
        if self.config.channel_replication:
            x = channel_split(x, per_frame=False)
        return classification_loss(head(encoder(self.front_end(x))), batch["label"])
