"""Dense Predictive Coding: Han, Xie, Zisserman, "Video Representation Learning by Dense Predictive
Coding", ICCVW 2019 (code github.com/TengdaHan/DPC); MemDPC: Han, Xie, Zisserman, "Memory-augmented
Dense Predictive Coding for Video Representation Learning", ECCV 2020 (github.com/TengdaHan/MemDPC).

Window: `num_blocks` blocks of `block_len` frames, every frame `stride` frames after the last (8 blocks
of 5 frames every 3 in DPC), one after another from a random start; a shorter video is left out
(too_short) before the run. Device: the run's crop and flip, shared by all the frames of a sample;
brightness and contrast, a hue rotation and greyscale drawn for every frame on its own (DPC's
ColorJitter and RandomGray with consistent=False), so colour cannot match a block to its neighbours. The encoder's
feature grid of every block (`VideoEncoder.feature_map`), averaged over its time cells: [D, H', W'] per
block. A ConvGRU aggregates the ReLU of the first N - P grids; from its hidden grid a predictor (1x1
conv, ReLU, 1x1 conv) predicts the next block's grid, whose ReLU goes back into the ConvGRU for the
step after, P times (`pred_steps`). Loss: `DensePredictiveLoss` between the P predicted grids and the
true grids of the last P blocks over the batch (the positive: the same video, step and cell), the
softmax mass on each of the three negative kinds logged as neg_video, neg_cell, neg_step.

The encoder's BatchNorm layers keep running statistics (DPC's backbone did not, so a linear probe of
it in eval mode normalised with statistics it never had).

MemDPC (`memory_size` > 0): the predictor gives a softmax over a learned memory of `memory_size`
vectors, and the prediction is their weighted sum. `bidirectional`: a second ConvGRU also reads the
blocks backwards, from the last N - P to predict the first P in reverse order, through the same
predictor and memory; the loss is the mean of both directions.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mmssl.config import AT_LEAST_1, NON_NEGATIVE, SHARE, Bound, Config, ConfigError
from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import clip_span, random_clip
from mmssl.losses import DensePredictiveLoss
from mmssl.models import VideoEncoder
from mmssl.models.convgru import ConvGRU
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask
from mmssl.transforms.video import VideoAugment, colour_distortion, to_model_input


@dataclass
class DPCConfig:
    """Dense Predictive Coding (docs/methods.md#dpc): predict the feature grids of the next blocks."""

    num_blocks: int = 8  # N
    block_len: int = 5  # frames per block
    stride: int = 3  # frame step, within and across blocks
    pred_steps: int = 3  # P: the last P blocks are predicted from the first N - P
    kernel_size: int = 1  # the ConvGRU's gates (DPC: 1)
    memory_size: int = 0  # MemDPC's memory (1024 in MemDPC); 0: DPC's direct prediction
    bidirectional: bool = False  # MemDPC: also predict the first P blocks from the last N - P, reversed
    # per-frame colour augmentation (DPC: ColorJitter 0.5, 0.5, 0.5, 0.25 and RandomGray 0.5, per frame)
    brightness: float = 0.5
    contrast: float = 0.5
    hue: float = 0.25  # turns
    grayscale: float = 0.5

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "num_blocks": Bound(2), "block_len": AT_LEAST_1, "stride": AT_LEAST_1, "pred_steps": AT_LEAST_1,
        "kernel_size": AT_LEAST_1, "memory_size": NON_NEGATIVE, "brightness": SHARE, "contrast": SHARE,
        "hue": Bound(0, 0.5), "grayscale": SHARE}


class DPCHead(nn.Module):
    """The aggregator(s), the predictor (and MemDPC's memory) on grids of `dim` channels, and the loss."""

    def __init__(self, dim: int, config: DPCConfig) -> None:
        super().__init__()
        self.aggregators = nn.ModuleList(ConvGRU(dim, dim, config.kernel_size)
                                         for _ in range(2 if config.bidirectional else 1))
        self.predictor = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(dim, config.memory_size or dim, 1))
        self.memory = nn.Parameter(torch.randn(config.memory_size, dim)) if config.memory_size else None
        self.criterion = DensePredictiveLoss(gather_distributed=True)

    def predict(self, hidden: Tensor) -> Tensor:
        """The next block's grid [B, D, H, W] from the aggregator's hidden grid (MemDPC: a convex
        combination of the memory's vectors in every cell)."""
        out = self.predictor(hidden)
        return out if self.memory is None else torch.einsum("bkhw,kd->bdhw", out.softmax(dim=1), self.memory)

    def rollout(self, context: Tensor, steps: int, aggregator: ConvGRU) -> Tensor:
        """context [B, n, D, H, W] -> `steps` predicted grids [B, steps, D, H, W], each prediction's
        ReLU fed back into the aggregator for the next."""
        hidden = aggregator(F.relu(context))
        predicted = [self.predict(hidden)]
        for _ in range(steps - 1):
            hidden = aggregator.cell(F.relu(predicted[-1]), hidden)
            predicted.append(self.predict(hidden))
        return torch.stack(predicted, dim=1)


def per_frame_colours(x: Tensor, hue: float, grayscale: float) -> Tensor:
    """`colour_distortion` drawn for every frame of x (float [B, C, T, H, W]) on its own."""
    frames = colour_distortion(rearrange(x, "b c t h w -> (b t) c 1 h w"), hue, grayscale)
    return rearrange(frames, "(b t) c 1 h w -> b c t h w", b=len(x))


@register_task("dpc", label_family="action", encoder_input="rgb",
               metric=PretextMetric("accuracy", chance_key="chance"))
class DPC(PretextTask):
    config_class = DPCConfig
    feature_mode = "clip"
    smoke_overrides = ("task.dpc.num_blocks=4", "task.dpc.block_len=3", "task.dpc.stride=1",
                       "task.dpc.pred_steps=2")  # 12 of the 24-frame test videos' frames

    def __init__(self, config: DPCConfig, augment: VideoAugment | None = None) -> None:
        if config.pred_steps >= config.num_blocks:
            raise ConfigError(f"dpc: pred_steps ({config.pred_steps}) must leave at least one of the "
                              f"{config.num_blocks} blocks to aggregate")
        self.config = config
        self.augment = augment and dataclasses.replace(augment, brightness=config.brightness,
                                                       contrast=config.contrast, jitter_per_frame=True)

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> DPC:
        return cls(config.task.dpc, augment)

    def min_frames(self, fps: float) -> int:
        """The blocks' span: a shorter video is left out (too_short)."""
        return clip_span(self.config.num_blocks * self.config.block_len, self.config.stride)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """The blocks one after another at a random start, every `stride`-th frame."""
        c = self.config
        return Window(frames=random_clip(row.num_frames, c.num_blocks * c.block_len, c.stride, rng))

    def views(self, sample: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """Each block as a strip of its frames, the context blocks apart from the ones to predict
        (the colour augmentation is drawn on the device)."""
        c = self.config
        blocks = rearrange(sample["frames"], "(n l) h w c -> n h (l w) c", n=c.num_blocks)
        context = c.num_blocks - c.pred_steps
        return [(f"block {k}: {'context' if k < context else 'to predict'}", block) for k, block in enumerate(blocks)]

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return DPCHead(encoder.map_dim, self.config)

    def predicted_views(self, batch: dict[str, Tensor], encoder: VideoEncoder,
                        head: nn.Module) -> list[list[tuple[str, Tensor]]]:
        """Per sample: the middle frame of each context block; then for each predicted step the true
        block and the block of the batch (any video, any predicted step) whose grid scores highest
        with the prediction, as the loss scores it (the cells' dot products, here summed over the cells)."""
        c = self.config
        frames = batch["frames"]
        grid = self.grids(frames, encoder, augment=False)
        context = c.num_blocks - c.pred_steps
        predicted = head.rollout(grid[:, :context], c.pred_steps, head.aggregators[0])
        scores = torch.einsum("bpdhw,qrdhw->bpqr", predicted.float(), grid[:, context:].float())
        nearest = scores.flatten(2).argmax(-1)  # [B, P] -> index of (video, step)
        middle = lambda b, k: frames[b, k * c.block_len + c.block_len // 2]  # noqa: E731
        views = []
        for b in range(len(frames)):
            shown = [(f"context block {k}", middle(b, k)) for k in range(context)]
            for p in range(c.pred_steps):
                video, step = divmod(int(nearest[b, p]), c.pred_steps)
                verdict = "right" if (video, step) == (b, p) else f"video {video}, step {step}"
                shown += [(f"block {context + p}: true", middle(b, context + p)),
                          (f"predicted nearest:\n{verdict}", middle(video, context + step))]
            views.append(shown)
        return views

    def grids(self, frames: Tensor, encoder: VideoEncoder, augment: bool = True) -> Tensor:
        """uint8 frames [B, N L, H, W, C] -> every block's feature grid [B, N, D, H', W'] (augmented
        unless `augment` is False)."""
        c = self.config
        augment = self.augment if augment else None
        x = to_model_input(frames, augment)
        if augment is not None:
            x = per_frame_colours(x, c.hue, c.grayscale)
        blocks = rearrange(x, "b c (n l) h w -> (b n) c l h w", n=c.num_blocks)
        grid = encoder.feature_map(self.front_end(blocks)).mean(dim=2)  # over the block's time cells
        return rearrange(grid, "(b n) d h w -> b n d h w", n=c.num_blocks)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        grid = self.grids(batch["frames"], encoder)
        context = self.config.num_blocks - self.config.pred_steps
        outs = []
        for aggregator, blocks in zip(head.aggregators, (grid, grid.flip(1))):  # forwards (and backwards)
            predicted = head.rollout(blocks[:, :context], self.config.pred_steps, aggregator)
            scores = head.criterion.score(*(rearrange(g, "b t d h w -> b t (h w) d")
                                            for g in (predicted, blocks[:, context:])))
            outs.append({"loss": scores.loss(), **scores.metrics()})
        return {key: torch.stack([out[key] for out in outs]).mean() for key in outs[0]}
