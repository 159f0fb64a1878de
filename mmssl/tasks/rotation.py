"""Rotation prediction: 3DRotNet (Jing, Yang, Liu, Tian, "Self-Supervised Spatiotemporal Feature
Learning via Video Rotation Prediction", arXiv 1811.11387, 2018), the video form of RotNet (Gidaris,
Singh, Komodakis, "Unsupervised Representation Learning by Predicting Image Rotations", ICLR 2018).

A clip of `clip_len` frames every `stride` frames; on the device, after the run's crop, flip and
jitter (square output), an optional small rotation of up to `max_degrees` (10 in 3DRotNet) shared by
the clip's frames, then all four quarter turns of it: every sample contributes its 0, 90, 180 and 270
degree copies to the same batch, labels k = 0..3 (k quarter turns counterclockwise, `torch.rot90`),
so the classes are exactly balanced and a clip's content cannot tell its label. Each copy turns all
its frames alike (a spatial turn of the whole clip). Quarter turns of a square frame are exact (no
resampling), so interpolation cannot give the angle away; a non-square frame or an asymmetric crop
aspect range would (the turned copies would have another shape or stretch than the upright ones).
Head: one linear layer, 4-way cross-entropy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from mmssl.config import AT_LEAST_1, Bound, Config, ConfigError
from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import random_clip
from mmssl.models import VideoEncoder
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask, classification_loss
from mmssl.transforms.video import VideoAugment, rotate, to_model_input

TURNS = 4


def quarter_turns(x: torch.Tensor, dims: tuple[int, int] = (-2, -1)) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, ...] -> its four turns [4B, ...] in the (H, W) plane `dims` (copy k * B + i: sample i turned k
    quarter turns counterclockwise) and their labels k."""
    turned = torch.cat([torch.rot90(x, k, dims) for k in range(TURNS)])
    return turned, torch.arange(TURNS, device=x.device).repeat_interleave(len(x))


@dataclass
class RotationConfig:
    """3DRotNet rotation prediction (docs/methods.md#rotation): four quarter turns of each clip, 4 classes."""

    clip_len: int = 16
    stride: int = 2  # 16 frames over 32 in 3DRotNet
    max_degrees: float = 10.0  # the small random rotation before the quarter turns (0: none)

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "clip_len": AT_LEAST_1, "stride": AT_LEAST_1, "max_degrees": Bound(0.0, 45.0)}


@register_task("rotation", label_family="object", encoder_input="rgb",
               metric=PretextMetric("accuracy", chance=lambda task, _: 1 / TURNS))
class Rotation(PretextTask):
    config_class = RotationConfig
    feature_mode = "clip"

    def __init__(self, config: RotationConfig, augment: VideoAugment | None = None) -> None:
        if augment is not None and not math.isclose(augment.crop_ratio[0] * augment.crop_ratio[1], 1.0):
            raise ConfigError(f"rotation needs a crop aspect range symmetric about 1 (data.crop_ratio [r, 1/r]): "
                              f"an asymmetric one stretches upright and turned copies differently, got "
                              f"{augment.crop_ratio}")
        self.config = config
        self.augment = augment

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> Rotation:
        return cls(config.task.rotation, augment)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """One clip at a random start (a short video repeats its last frame, as the other clip tasks)."""
        return Window(frames=random_clip(row.num_frames, self.config.clip_len, self.config.stride, rng))

    def views(self, sample: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """The middle frame's four copies with their labels (the small rotation is drawn on the device)."""
        frame = sample["frames"][len(sample["frames"]) // 2]
        turned, labels = quarter_turns(frame[None], dims=(1, 2))
        return [(f"label={k} ({90 * k} deg)", image) for image, k in zip(turned, labels.tolist())]

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return nn.Linear(encoder.feature_dim, TURNS)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        x = to_model_input(batch["frames"], self.augment)  # [B, C, T, H, W], square
        if self.config.max_degrees:
            x = rotate(x, (torch.rand(len(x), device=x.device) * 2 - 1) * math.radians(self.config.max_degrees))
        x, labels = quarter_turns(x)
        return classification_loss(head(encoder(self.front_end(x))), labels)
