"""A task registered from outside the package: the arrow of time (Wei, Lim, Zisserman, Freeman,
"Learning and Using the Arrow of Time", CVPR 2018), in its simplest form: is this clip played
forwards (label 1) or backwards (label 0)? A backwards window lists its frames last to first, and
the reader returns frames in the order asked. The test of the house contract: one file, one YAML, one test."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mmssl.config import Config
from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import clip_span, random_clip
from mmssl.io import TooShortError
from mmssl.models import VideoEncoder
from mmssl.models.heads import mlp
from mmssl.registry import register_task
from mmssl.tasks.base import PretextTask, classification_loss
from mmssl.transforms.video import VideoAugment, to_model_input


@dataclass
class ArrowOfTimeConfig:
    clip_len: int = 8
    stride: int = 2
    hidden_dim: int = 64


@register_task("arrow_of_time")
class ArrowOfTime(PretextTask):
    config_class = ArrowOfTimeConfig
    feature_mode = "clip"

    def __init__(self, config: ArrowOfTimeConfig, augment: VideoAugment | None = None) -> None:
        self.config = config
        self.augment = augment

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> ArrowOfTime:
        return cls(config.task.arrow_of_time, augment)

    def min_frames(self, fps: float) -> int:
        return clip_span(self.config.clip_len, self.config.stride)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """A clip and its label; a backwards clip lists its frames last to first."""
        c = self.config
        if row.num_frames < self.min_frames(row.fps):
            raise TooShortError(row.path, f"{row.num_frames} frames < {self.min_frames(row.fps)}")
        forwards = int(rng.integers(2))
        frames = random_clip(row.num_frames, c.clip_len, c.stride, rng)
        return Window(frames=frames if forwards else frames[::-1].copy(), targets={"label": forwards})

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return mlp(encoder.feature_dim, self.config.hidden_dim, 2)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        return classification_loss(head(encoder(to_model_input(batch["frames"], self.augment))), batch["label"])
