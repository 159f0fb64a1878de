"""Sequence sorting: OPN, the Order Prediction Network (Lee, Huang, Singh, Yang, "Unsupervised
Representation Learning by Sorting Sequences", ICCV 2017).

A tuple of `num_frames` frames (4 in the paper) taken `gap_s` apart is shown shuffled, and the
network names the permutation. A sequence and its reverse share a label (forward and backward
motion are equally plausible), so there are n!/2 classes: 12 for 4 frames. Class k is the k-th
permutation p (lexicographic) with p[0] < p[-1]; no class is the reverse of another, and the
classes with their reverses cover all n! orders. A sample draws a class uniformly, then shows the
reverse of its permutation with probability 0.5, keeping the label.

Window choice: as in the paper, from high-motion windows (the paper weights by optical flow;
here `MotionWeighting` keeps one of `motion.candidates` uniform tuples with probability
proportional to the motion across its smallest gap, mean absolute frame difference as the proxy):
the order of frames inside a static stretch cannot be seen. A video too short for the gap gets
the largest gap that fits; one with fewer than `num_frames` frames raises TooShortError.

Augmentation, batched on the device: one random crop (and flip, colour jitter) shared by the
frames of a tuple, then spatial jitter (each frame moved by its own few pixels) and channel
splitting (each frame keeps one random colour channel, copied to all three), so that low-level
cues (crop position, chromatic aberration) cannot give the order away.

Network: one encoder with shared weights on every frame (T=1); for each of the 6 frame pairs
i < j the two feature vectors are concatenated and passed through a shared pair layer; the 6
outputs are concatenated and classified 12-way with cross-entropy (`PairwiseHead`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from einops import rearrange
from torch import nn

from mmssl.config import AT_LEAST_1, POSITIVE, SHARE, SHARE_BELOW_1, Bound, Config, ConfigError
from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.motion import MotionConfig, MotionWeighting
from mmssl.data.sampling import random_clip
from mmssl.io import TooShortError
from mmssl.models import VideoEncoder
from mmssl.models.heads import PairwiseHead
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask, classification_loss
from mmssl.transforms.video import VideoAugment, channel_split, frame_shift, to_model_input


@dataclass
class OPNConfig:
    """OPN sequence sorting (docs/methods.md#opn): a tuple of `num_frames` frames, num_frames!/2 classes."""

    num_frames: int = 4  # 4 in the paper: 12 classes
    gap_s: float = 0.25  # time between consecutive frames of a tuple [unverified]
    jitter: float = 0.05  # max per-frame shift after the shared crop, share of the frame side [unverified]
    channel_split: bool = True
    hidden_dim: int = 512  # shared pair layer (OPN's fc7) [unverified]
    dropout: float = 0.5  # before the classifier [unverified]
    motion: MotionConfig = field(default_factory=MotionConfig)  # OPN's high-motion windows

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "num_frames": Bound(3), "gap_s": POSITIVE, "jitter": SHARE, "hidden_dim": AT_LEAST_1, "dropout": SHARE_BELOW_1}


def sequence_classes(num_frames: int) -> list[tuple[int, ...]]:
    """OPN's num_frames!/2 order classes: of each permutation and its reverse, the one whose first
    element is smaller than its last, in lexicographic order."""
    return [p for p in itertools.permutations(range(num_frames)) if p[0] < p[-1]]


@register_task("opn", label_family="action", encoder_input="rgb",
               metric=PretextMetric("accuracy", chance=lambda task, _: 1 / len(task.classes)))
class OPN(PretextTask):
    config_class = OPNConfig
    feature_mode = "frames"

    def __init__(self, config: OPNConfig, augment: VideoAugment | None = None) -> None:
        if config.num_frames < 3:
            raise ConfigError(f"OPN needs at least 3 frames per tuple, got {config.num_frames}")
        self.config = config
        self.augment = augment
        self.classes = sequence_classes(config.num_frames)
        self.motion = MotionWeighting(config.motion.candidates, config.motion.power, config.motion.size)

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> OPN:
        return cls(config.task.opn, augment)

    def motion_weightings(self) -> list[MotionWeighting]:
        return [self.motion]

    def min_frames(self, fps: float) -> int:
        return self.config.num_frames

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """The tuple's frames in the order of a random class's permutation (reversed with
        probability 0.5): position i shows the tuple's frame perm[i]; label = the class."""
        n, k = row.num_frames, self.config.num_frames
        if n < k:
            raise TooShortError(row.path, f"{n} frames cannot hold an OPN tuple of {k} distinct frames")
        gap = min(max(1, round(self.config.gap_s * row.fps)), (n - 1) // (k - 1))
        tuple_frames = self.motion.choose(row, lambda: random_clip(n, k, gap, rng), rng)
        label = int(rng.integers(len(self.classes)))
        order = np.array(self.classes[label])
        if rng.random() < 0.5:
            order = order[::-1]
        return Window(frames=tuple_frames[order], targets={"label": label})

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return PairwiseHead(encoder.feature_dim, self.config.num_frames, self.config.hidden_dim,
                            len(self.classes), self.config.dropout)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder,
             head: nn.Module) -> dict[str, torch.Tensor]:
        x = to_model_input(batch["frames"], self.augment)  # [B, C, K, H, W], one crop per tuple
        x = frame_shift(x, round(self.config.jitter * x.shape[-1]))
        if self.config.channel_split:
            x = channel_split(x)
        logits = head(encoder(rearrange(self.front_end(x), "b c t h w -> (b t) c 1 h w")))
        return classification_loss(logits, batch["label"])
