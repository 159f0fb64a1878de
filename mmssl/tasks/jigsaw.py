"""Jigsaw puzzles: Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles", ECCV 2016.

One frame; a `grid` x `grid` grid of cells laid over it (the largest that fits, centred), and in each
cell a square tile of `tile_share` of the cell's side at a random place. The tiles never fill their
cells, so edges and lines cannot be continued from tile to tile; of the space a tile leaves free, only
a `jitter_share` is where its corner may move, the rest is a gap that always stays between neighbours
(so no two tiles ever touch). The tiles are shown in the order of one permutation of a fixed set of
`num_permutations`, chosen greedily for maximal mean Hamming distance (`permutation_set`, seeded by
`permutation_seed`), and the label is its index in the set: position i shows the tile of cell perm[i].

Device: with probability `grey_share` a sample's tiles are made grey (against chromatic aberration),
then each tile is normalised on its own (its channels to zero mean and unit variance), so that
brightness and contrast differences between the tiles cannot tell where they were cut. The run's crop,
flip and jitter are not applied: the tiles' own jitter moves them, and the per-tile normalisation
would undo the colour jitter. Network: one encoder with shared weights on every tile (T=1), the
`grid`**2 features concatenated, an MLP classifier over the set (`ConcatHead`).
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from einops import rearrange
from torch import nn

from mmssl.config import AT_LEAST_1, SHARE, Bound, Config, ConfigError
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import random_clip
from mmssl.models import VideoEncoder
from mmssl.models.heads import ConcatHead
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask, classification_loss
from mmssl.transforms.video import VideoAugment, to_model_input


@dataclass
class JigsawConfig:
    """Jigsaw puzzles (docs/methods.md#jigsaw): `grid`**2 tiles of a frame in one of `num_permutations` orders."""

    grid: int = 3  # at most 3: the set is chosen from all (grid**2)! orders, 9! = 362,880 of them
    num_permutations: int = 1000  # the paper's set; its ablation: fewer, farther apart orders are easier
    permutation_seed: int = 0  # the set's first permutation: the same seed gives the same set
    tile_share: float = 0.75  # tile side / cell side: 64 of 85 px in the paper
    jitter_share: float = 0.5  # share of the free space the tile may move in (paper: all of it, tiles may touch)
    grey_share: float = 0.3  # samples made grey [code]
    hidden_dim: int = 512  # the classifier's hidden layer (the paper's fc7: 4096)

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "grid": Bound(2, 3), "num_permutations": Bound(2), "permutation_seed": Bound(0),
        "tile_share": Bound(0.1, 0.95), "jitter_share": Bound(0.0, 0.9), "grey_share": SHARE,
        "hidden_dim": AT_LEAST_1}


@functools.lru_cache(maxsize=4)
def permutation_set(pieces: int, size: int, seed: int) -> np.ndarray:
    """`size` permutations of `pieces` [size, pieces], chosen as in Noroozi & Favaro's code: a random
    first one (from `seed`), then again and again the permutation not yet chosen whose mean Hamming
    distance to the chosen ones is largest. Ties (there are many) go to the one farthest from its
    nearest chosen permutation, which raises the set's minimum distance (at 100 of 9 pieces: 4, not 2)."""
    every = np.array(list(itertools.permutations(range(pieces))), dtype=np.int8)
    if size > len(every):
        raise ConfigError(f"jigsaw: {pieces} pieces have only {len(every)} orders, asked for {size}")
    chosen = [int(np.random.default_rng(seed).integers(len(every)))]
    total = np.zeros(len(every), dtype=np.int64)  # each permutation's distances to the chosen ones, summed
    nearest = np.full(len(every), pieces)  # and the smallest of them
    for _ in range(size - 1):
        distance = (every != every[chosen[-1]]).sum(1)
        total += distance
        nearest = np.minimum(nearest, distance)
        score = total * (pieces + 1) + nearest  # the mean first, the nearest only among equal means
        score[chosen] = -1
        chosen.append(int(score.argmax()))
    return every[chosen].astype(np.int64)


def grid_cells(extent: int, cells: int, piece_share: float, jitter_share: float) -> tuple[np.ndarray, int, int]:
    """Pieces in `cells` equal cells along an axis of `extent` (centred): each cell's earliest piece start
    [cells], the piece's length and its jitter (a piece starts up to that much later). At least
    cell - piece - jitter always lies between neighbouring pieces."""
    cell = extent // cells
    piece = round(piece_share * cell)
    jitter = round(jitter_share * (cell - piece))
    if cell - piece - jitter < 1:
        raise ConfigError(f"{cells} pieces of {piece} in {cell}-long cells with a jitter of {jitter} leave no gap "
                          f"(a frame or window of {extent} is too small: lower the piece or jitter share)")
    first = (extent - cells * cell) // 2 + (cell - piece - jitter) // 2
    return first + cell * np.arange(cells), piece, jitter


def tile_corners(height: int, width: int, grid: int, tile_share: float, jitter_share: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """The top-left corners [grid * grid, 2] (row-major cells, (y, x)) of tiles at random places in
    their cells, and the tiles' (height, width)."""
    ys, tile_h, jitter_y = grid_cells(height, grid, tile_share, jitter_share)
    xs, tile_w, jitter_x = grid_cells(width, grid, tile_share, jitter_share)
    cells = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
    return cells + rng.integers(0, [jitter_y + 1, jitter_x + 1], size=cells.shape), (tile_h, tile_w)


def grey(x: torch.Tensor, share: float) -> torch.Tensor:
    """float [B, C, ...]: a random `share` of the samples with every channel their channels' mean."""
    made_grey = torch.rand(len(x), device=x.device) < share
    return torch.where(made_grey.view(-1, *[1] * (x.dim() - 1)), x.mean(1, keepdim=True).expand_as(x), x)


def normalise_pieces(x: torch.Tensor) -> torch.Tensor:
    """float [B, C, K, ...]: each channel of each of the K pieces to zero mean and unit variance."""
    dims = tuple(range(3, x.dim()))
    return (x - x.mean(dims, keepdim=True)) / (x.std(dims, keepdim=True) + 1e-5)


@register_task("jigsaw", label_family="object", encoder_input="rgb",
               metric=PretextMetric("accuracy", chance=lambda task, _: 1 / len(task.permutations)))
class Jigsaw(PretextTask):
    config_class = JigsawConfig
    feature_mode = "frames"

    def __init__(self, config: JigsawConfig) -> None:
        self.config = config
        self.permutations = permutation_set(config.grid ** 2, config.num_permutations, config.permutation_seed)

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> Jigsaw:
        return cls(config.task.jigsaw)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """One frame at random and a random permutation of the set."""
        return Window(frames=random_clip(row.num_frames, 1, 1, rng),
                      targets={"label": int(rng.integers(len(self.permutations)))})

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """frames: the tiles [grid**2, h, w, 3] uint8, position i the tile of cell perm[i]."""
        frame = clip.video[0]
        label = clip.window.targets["label"]
        corners, (h, w) = tile_corners(*frame.shape[:2], self.config.grid, self.config.tile_share,
                                       self.config.jitter_share, rng)
        tiles = torch.stack([frame[y:y + h, x:x + w] for y, x in corners])
        return {"frames": tiles[torch.from_numpy(self.permutations[label])], "label": torch.tensor(label)}

    def views(self, sample: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """The tiles as the model gets them, in a grid, captioned with the label's order (position i: the
        tile of cell perm[i]), and put back by it (the row's title gives the label)."""
        perm = self.permutations[int(sample["label"])]
        shown = sample["frames"]
        return [(f"order {''.join(map(str, perm.tolist()))}", self._board(shown)),
                ("un-permuted", self._board(shown[torch.from_numpy(np.argsort(perm))]))]

    def _board(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 [K, h, w, 3] -> the tiles row-major on a grey board, 1 px apart."""
        grid, (h, w) = self.config.grid, tiles.shape[1:3]
        board = torch.full((grid * (h + 1) - 1, grid * (w + 1) - 1, 3), 128, dtype=torch.uint8)
        for index, image in enumerate(tiles):
            y, x = divmod(index, grid)
            board[y * (h + 1):y * (h + 1) + h, x * (w + 1):x * (w + 1) + w] = image
        return board

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return ConcatHead(encoder.feature_dim, self.config.grid ** 2, self.config.hidden_dim, len(self.permutations))

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        x = normalise_pieces(grey(to_model_input(batch["frames"]), self.config.grey_share))  # [B, C, K, t, t]
        logits = head(encoder(rearrange(self.front_end(x), "b c k h w -> (b k) c 1 h w")))
        return classification_loss(logits, batch["label"])
