"""Relative patch position (context prediction): Doersch, Gupta, Efros, "Unsupervised Visual
Representation Learning by Context Prediction", ICCV 2015.

One frame; a 3 x 3 layout of square patches of `patch_share` of the frame's shorter side, `gap_share`
apart, placed at a random spot where the whole layout fits. The first patch is the layout's centre,
the second one of its 8 neighbours; label = the neighbour's index in `NEIGHBOURS` (row-major: top
left, top, top right, left, right, bottom left, bottom, bottom right). Each patch moves by up to
`jitter_share` along each axis on its own, so the gap between them varies but never closes.

With probability `resample_share` a patch is down-sampled to a side from `min_resample` of its own
to one pixel less, then up-sampled back (so fine texture cannot be matched across the gap). Device: each patch
keeps one random colour channel and the other two become faint noise (colour dropping, against
chromatic aberration); then each patch is normalised to zero mean and unit RMS. The run's crop,
flip and jitter are not applied. Network: one encoder with shared weights on both patches (T=1),
the 2 features concatenated, an MLP classifier over the 8 places (`ConcatHead`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
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

NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]  # (rows, columns) away
NOISE = 0.01  # the dropped channels' noise, as a share of the kept channel's standard deviation [paper]


@dataclass
class RelativePositionConfig:
    """Context prediction (docs/methods.md#relative_position): where a patch lies among the 8 neighbours of another."""

    patch_share: float = 0.2  # patch side / frame side: 96 px of ~500 in the paper
    gap_share: float = 0.1  # 48 px in the paper
    jitter_share: float = 0.014  # up to 7 px each way in the paper
    resample_share: float = 1 / 3  # patches down- then up-sampled [paper]
    min_resample: float = 0.1  # down to as little as 100 pixels of 96 x 96 [paper]
    colour_dropping: bool = True
    hidden_dim: int = 512  # the classifier's hidden layer (the paper's fc7: 4096)

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "patch_share": Bound(0.05, 0.33), "gap_share": Bound(0.0, 0.3), "jitter_share": Bound(0.0, 0.1),
        "resample_share": SHARE, "min_resample": Bound(0.0, 0.5, strict=True), "hidden_dim": AT_LEAST_1}


def patch_corners(height: int, width: int, label: int, config: RelativePositionConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """The top-left corners [2, 2] ((y, x): the centre patch, then its neighbour `label`) and the side."""
    side = min(height, width)
    patch, gap, jitter = (round(share * side) for share in (config.patch_share, config.gap_share, config.jitter_share))
    extent = 3 * patch + 2 * gap + 2 * jitter
    if gap - 2 * jitter < 1 or extent > side:
        raise ConfigError(f"relative_position: {patch} px patches {gap} px apart with {jitter} px jitter "
                          f"{'touch' if gap - 2 * jitter < 1 else 'do not fit'} in {height}x{width} px frames")
    centre = rng.integers(0, [height - extent + 1, width - extent + 1]) + jitter + patch + gap
    corners = np.stack([centre, centre + (patch + gap) * np.array(NEIGHBOURS[label])])
    return corners + rng.integers(-jitter, jitter + 1, size=corners.shape), patch


def drop_colours(x: torch.Tensor) -> torch.Tensor:
    """float [N, C, ...]: each item keeps one random channel; the others become Gaussian noise of
    NOISE times its standard deviation."""
    n, c = x.shape[:2]
    keep = torch.randint(c, (n,), device=x.device)
    kept = x[torch.arange(n, device=x.device), keep]
    noise = torch.randn_like(x) * NOISE * kept.flatten(1).std(1).view(n, *[1] * (x.dim() - 1))
    chosen = F.one_hot(keep, c).bool().view(n, c, *[1] * (x.dim() - 2))
    return torch.where(chosen, x, noise)


def down_up(patch: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 [H, W, 3] down-sampled to side x side, then up-sampled back to H x W (bilinear)."""
    x = rearrange(patch, "h w c -> 1 c h w").float()
    down = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    up = F.interpolate(down, size=tuple(patch.shape[:2]), mode="bilinear", align_corners=False)
    return rearrange(up.round().clamp(0, 255).to(torch.uint8), "1 c h w -> h w c")


@register_task("relative_position", label_family="object", encoder_input="rgb",
               metric=PretextMetric("accuracy", chance=lambda task, _: 1 / len(NEIGHBOURS)))
class RelativePosition(PretextTask):
    config_class = RelativePositionConfig
    feature_mode = "frames"

    def __init__(self, config: RelativePositionConfig) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> RelativePosition:
        return cls(config.task.relative_position)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """One frame at random and a random neighbour."""
        return Window(frames=random_clip(row.num_frames, 1, 1, rng),
                      targets={"label": int(rng.integers(len(NEIGHBOURS)))})

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """frames: the centre patch and its neighbour [2, side, side, 3] uint8, each down- and up-sampled
        with probability `resample_share`."""
        frame = clip.video[0]
        label = clip.window.targets["label"]
        corners, side = patch_corners(*frame.shape[:2], label, self.config, rng)
        smallest = max(1, math.ceil(self.config.min_resample * side))
        patches = [down_up(patch, int(rng.integers(smallest, side)))
                   if rng.random() < self.config.resample_share else patch
                   for patch in (frame[y:y + side, x:x + side] for y, x in corners)]
        return {"frames": torch.stack(patches), "label": torch.tensor(label)}

    def views(self, sample: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """The two patches on a 3 x 3 board, the neighbour in the label's place (the row's title gives the label)."""
        label = int(sample["label"])
        centre, other = sample["frames"]
        side = centre.shape[0]
        board = torch.full((3 * side + 2, 3 * side + 2, 3), 128, dtype=torch.uint8)
        dy, dx = NEIGHBOURS[label]
        for (row, column), patch in (((1, 1), centre), ((1 + dy, 1 + dx), other)):
            board[row * (side + 1):row * (side + 1) + side, column * (side + 1):column * (side + 1) + side] = patch
        return [(f"(rows, columns) {NEIGHBOURS[label]}", board)]

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return ConcatHead(encoder.feature_dim, 2, self.config.hidden_dim, len(NEIGHBOURS))

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        x = rearrange(to_model_input(batch["frames"]), "b c k h w -> (b k) c h w")  # one patch each
        if self.config.colour_dropping:
            x = drop_colours(x)
        x = x - x.mean((1, 2, 3), keepdim=True)
        x = x / (x.square().mean((1, 2, 3), keepdim=True).sqrt() + 1e-5)
        logits = head(encoder(self.front_end(rearrange(x, "n c h w -> n c 1 h w"))))
        return classification_loss(logits, batch["label"])
