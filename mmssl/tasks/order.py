"""Frame-order verification: Shuffle and Learn (Misra, Zitnick, Hebert, "Shuffle and Learn:
Unsupervised Learning using Temporal Order Verification", ECCV 2016).

Five frame numbers a < b < c < d < e with |d - b| <= tau_max and a, e at least tau_min from [b, d].
The positive tuple is (b, c, d); the negatives keep the first and last frame and take the middle
one from outside: (b, a, d) or (b, e, d). The label is drawn after the five frames, so b and d,
their gap and their place in the video, are the same for both classes and cannot give the label
away (a wider gap means first and last frames further apart). A reversed tuple keeps its label
(the question is "is the middle frame between the other two"). Positives are `positive_share` of
the samples (25% in the paper's code). Tuples come from high-motion windows, the paper's
flow-weighted sampling with mean absolute frame difference as the motion proxy (`window`): on
SynthAV, uniform tuples often fall in static stretches (a shape at rest or turning in place)
whose order is invisible, and the loss then never leaves the majority-class level. One encoder
with shared weights sees each frame (T=1); the three feature vectors are concatenated and
classified two-way with cross-entropy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from einops import rearrange
from torch import nn

from mmssl.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, SHARE, Bound, Config
from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.motion import MotionConfig, MotionWeighting
from mmssl.io import TooShortError
from mmssl.models import VideoEncoder
from mmssl.models.heads import ConcatHead
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask, classification_loss, majority_share
from mmssl.transforms.video import VideoAugment, to_model_input


@dataclass
class OrderConfig:
    """Shuffle and Learn frame-order verification (docs/methods.md#order): gaps in seconds, so fps-independent."""

    tau_max_s: float = 2.0  # max |d - b| (60 frames at 30 fps)
    tau_min_s: float = 0.5  # min gap of a and e (a negative's middle frame) from [b, d] (15 frames at 30 fps)
    positive_share: float = 0.25
    hidden_dim: int = 256
    motion: MotionConfig = field(default_factory=MotionConfig)

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "tau_max_s": POSITIVE, "tau_min_s": NON_NEGATIVE, "positive_share": SHARE, "hidden_dim": AT_LEAST_1}


@register_task("order", label_family="action", encoder_input="rgb",
               metric=PretextMetric("accuracy", chance=lambda task, _: majority_share(task.config.positive_share)))
class OrderVerification(PretextTask):
    config_class = OrderConfig
    renamed_keys: ClassVar[dict[str, str]] = {"motion_candidates": "motion.candidates", "motion_power": "motion.power",
                                              "motion_size": "motion.size"}  # the motion settings became a section
    feature_mode = "frames"

    def __init__(self, config: OrderConfig, augment: VideoAugment | None = None) -> None:
        self.config = config
        self.augment = augment
        self.motion = MotionWeighting(config.motion.candidates, config.motion.power, config.motion.size)

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> OrderVerification:
        return cls(config.task.order, augment)

    def motion_weightings(self) -> list[MotionWeighting]:
        return [self.motion]

    def gaps(self, fps: float) -> tuple[int, int]:
        """tau_min and tau_max in frames at `fps`."""
        return max(1, round(self.config.tau_min_s * fps)), max(2, round(self.config.tau_max_s * fps))

    def min_frames(self, fps: float) -> int:
        """The shortest video holding a < b < c < d < e: d = b + 2, a and e tau_min outside."""
        return 3 + 2 * self.gaps(fps)[0]

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """Five frames a < b < c < d < e, then the label: positive (b, c, d), label 1, with
        probability `positive_share`, else (b, a, d) or (b, e, d), label 0, either side alike.

        As in the paper, the five frames come from a high-motion window (`MotionWeighting`: one of
        `motion.candidates` uniformly drawn 5-tuples, kept with probability proportional to the
        motion across its smallest gap), so tuples inside static stretches, whose order cannot be
        seen, are rarely used."""
        a, b, c, d, e = self.motion.choose(row, lambda: self._draw(row, rng), rng)
        if rng.random() < self.config.positive_share:
            frames, label = np.array([b, c, d]), 1
        else:
            frames, label = np.array([b, a if rng.random() < 0.5 else e, d]), 0
        if rng.random() < 0.5:
            frames = frames[::-1].copy()
        return Window(frames=frames, targets={"label": label})

    def _draw(self, row: ManifestRow, rng: np.random.Generator) -> np.ndarray:
        """One uniformly drawn a < b < c < d < e: 2 <= d - b <= tau_max, a <= b - tau_min, e >= d + tau_min."""
        n = row.num_frames
        tau_min, tau_max = self.gaps(row.fps)
        span_max = min(tau_max, n - 1 - 2 * tau_min)
        if span_max < 2:
            raise TooShortError(row.path, f"{n} frames cannot hold a Shuffle and Learn tuple "
                                          f"(tau_min {tau_min}, tau_max {tau_max})")
        span = int(rng.integers(2, span_max + 1))  # d - b
        b = int(rng.integers(tau_min, n - tau_min - span))
        d = b + span
        return np.array([rng.integers(0, b - tau_min + 1), b, rng.integers(b + 1, d), d, rng.integers(d + tau_min, n)])

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return ConcatHead(encoder.feature_dim, 3, self.config.hidden_dim, 2)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        x = to_model_input(batch["frames"], self.augment)  # [B, C, 3, H, W], one crop per tuple
        frames = rearrange(self.front_end(x), "b c t h w -> (b t) c 1 h w")
        return classification_loss(head(encoder(frames)), batch["label"])
