"""Clip order prediction: VCOP (Xu, Xiao, Zhao, Shao, Xie, Zhuang, "Self-supervised
Spatiotemporal Learning via Video Clip Order Prediction", CVPR 2019).

`num_clips` clips (n, 3 in the paper) of `clip_len` frames (L, 16) taken every `stride` frames
(1), consecutive clips separated by `interval` frames (8): the window spans
n * clip_span(L, stride) + interval * (n - 1) frames (L*n + interval*(n-1) for stride 1), at a
uniformly random start; a shorter video raises TooShortError. The clips are shuffled by a random
permutation p of range(n): position i shows clip p[i], and the label is the index of p in
`itertools.permutations(range(n))` (lexicographic), so there are n! classes.

Each clip is augmented as its own sample on the device: one crop/flip/colour jitter shared by
the frames of a clip, independent between clips. Network: one 3D encoder with shared weights per
clip; a shared Linear(2d, 512) + ReLU on each clip pair i < j; the pair outputs concatenated;
dropout 0.5; Linear(512 * pairs, n!) with cross-entropy (`PairwiseHead`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from einops import rearrange
from torch import nn

from mmssl.config import AT_LEAST_1, AT_LEAST_2, NON_NEGATIVE, SHARE_BELOW_1, Bound, Config, ConfigError
from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import clip_span, random_clip
from mmssl.io import TooShortError
from mmssl.models import VideoEncoder
from mmssl.models.heads import PairwiseHead
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask, classification_loss
from mmssl.transforms.video import VideoAugment, to_model_input


@dataclass
class VCOPConfig:
    """VCOP clip order prediction (docs/methods.md#vcop): `num_clips` clips, num_clips! classes."""

    num_clips: int = 3
    clip_len: int = 16
    stride: int = 1  # frame step inside a clip (1 in the paper)
    interval: int = 8  # frames between the end of a clip and the start of the next
    hidden_dim: int = 512
    dropout: float = 0.5

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "num_clips": AT_LEAST_2, "clip_len": AT_LEAST_1, "stride": AT_LEAST_1, "interval": NON_NEGATIVE,
        "hidden_dim": AT_LEAST_1, "dropout": SHARE_BELOW_1}


@register_task("vcop", label_family="action", encoder_input="rgb",
               metric=PretextMetric("accuracy", chance=lambda task, _: 1 / len(task.permutations)))
class VCOP(PretextTask):
    config_class = VCOPConfig
    smoke_overrides = ("task.vcop.interval=0",)  # 3 clips of 7 frames and no gaps fit 24 frames
    feature_mode = "clip"

    def __init__(self, config: VCOPConfig, augment: VideoAugment | None = None) -> None:
        if config.num_clips < 2 or config.clip_len < 1 or config.stride < 1 or config.interval < 0:
            raise ConfigError(f"VCOP needs num_clips >= 2, clip_len >= 1, stride >= 1 and interval >= 0, "
                             f"got {config}")
        self.config = config
        self.augment = augment
        self.permutations = list(itertools.permutations(range(config.num_clips)))

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> VCOP:
        return cls(config.task.vcop, augment)

    @property
    def window_span(self) -> int:
        """Frames covered by the n clips and the n - 1 intervals between them."""
        c = self.config
        return c.num_clips * clip_span(c.clip_len, c.stride) + c.interval * (c.num_clips - 1)

    def min_frames(self, fps: float) -> int:
        return self.window_span

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """The n clips' frames, clip p[i] at position i for a random permutation p; label: p's index."""
        c = self.config
        if row.num_frames < self.window_span:
            raise TooShortError(row.path, f"{row.num_frames} frames < {self.window_span}: {c.num_clips} "
                                          f"clips of {c.clip_len} frames every {c.stride}, gap {c.interval}")
        span = clip_span(c.clip_len, c.stride)
        # The clips' first frames are themselves a clip: n frames every span + interval, among the
        # num_frames - span + 1 frames where a clip can start.
        starts = random_clip(row.num_frames - span + 1, c.num_clips, span + c.interval, rng)
        clips = starts[:, None] + c.stride * np.arange(c.clip_len)
        label = int(rng.integers(len(self.permutations)))
        return Window(frames=clips[list(self.permutations[label])].reshape(-1), targets={"label": label})

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return PairwiseHead(encoder.feature_dim, self.config.num_clips, self.config.hidden_dim,
                            len(self.permutations), self.config.dropout)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder,
             head: nn.Module) -> dict[str, torch.Tensor]:
        clips = rearrange(batch["frames"], "b (k t) h w c -> (b k) t h w c", k=self.config.num_clips)
        logits = head(encoder(self.front_end(to_model_input(clips, self.augment))))  # each clip augmented alone
        return classification_loss(logits, batch["label"])
