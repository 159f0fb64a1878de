"""Frame-order verification: Shuffle and Learn (Misra, Zitnick, Hebert, "Shuffle and Learn:
Unsupervised Learning using Temporal Order Verification", ECCV 2016).

Five frame numbers a < b < c < d < e with |d - b| <= tau_max. The positive tuple is (b, c, d); the
negatives keep the first and last frame and take the middle one from outside: (b, a, d) or
(b, e, d), with the outside frame at least tau_min from [b, d]. A reversed tuple keeps its label
(the question is "is the middle frame between the other two"). Positives are `positive_share` of
the samples (25% in the paper's code). Tuples come from high-motion windows, the paper's
flow-weighted sampling with mean absolute frame difference as the motion proxy (`window`): on
SynthAV, uniform tuples often fall in static stretches (a shape at rest or turning in place)
whose order is invisible, and the loss then never leaves the majority-class level. One encoder
with shared weights sees each frame (T=1); the three feature vectors are concatenated and
classified two-way with cross-entropy.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mmssl.config import Config, OrderConfig
from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import MotionWeighting
from mmssl.io import TooShortError
from mmssl.models import VideoEncoder
from mmssl.models.heads import ConcatHead
from mmssl.tasks.base import PretextTask
from mmssl.transforms.video import VideoAugment, to_model_input


class OrderVerification(PretextTask):
    name = "order"
    feature_mode = "frames"

    def __init__(self, config: OrderConfig, augment: VideoAugment | None = None) -> None:
        self.config = config
        self.augment = augment
        self.motion = MotionWeighting(config.motion.candidates, config.motion.power, config.motion.size)

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> "OrderVerification":
        return cls(config.task.order, augment)

    def gaps(self, fps: float) -> tuple[int, int]:
        """tau_min and tau_max in frames at `fps`."""
        return max(1, round(self.config.tau_min_s * fps)), max(2, round(self.config.tau_max_s * fps))

    def min_frames(self, fps: float) -> int:
        """A negative's shortest window: b, d = b + 2, and the outside frame tau_min away."""
        return 3 + self.gaps(fps)[0]

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """Sample (b, c, d) and, for a negative, a or e; positive label 1, negative 0.

        The label is drawn first (positive with probability `positive_share`). Then, as in the
        paper, the tuple comes from a high-motion window (`MotionWeighting`: one of
        `motion.candidates` uniformly drawn tuples of that label, kept with probability
        proportional to its motion across the smaller of its two gaps), so tuples inside static
        stretches, whose order cannot be seen, are rarely used."""
        positive = bool(rng.random() < self.config.positive_share)
        frames = self.motion.choose(row, lambda: self._draw(row, positive, rng), rng)
        if rng.random() < 0.5:
            frames = frames[::-1].copy()
        return Window(frames=frames, targets={"label": int(positive)})

    def _draw(self, row: ManifestRow, positive: bool, rng: np.random.Generator) -> np.ndarray:
        """One uniformly drawn tuple (b, c, d) of the given label, in time order."""
        n = row.num_frames
        tau_min, tau_max = self.gaps(row.fps)
        sides = ["before", "after"]
        rng.shuffle(sides)
        for side in ([None] if positive else sides):
            span_max = min(tau_max, n - 1 - (0 if positive else tau_min))
            if span_max < 2:
                continue
            span = int(rng.integers(2, span_max + 1))  # d - b
            lo = tau_min if side == "before" else 0
            hi = n - 1 - span - (tau_min if side == "after" else 0)
            if hi < lo:
                continue
            b = int(rng.integers(lo, hi + 1))
            d = b + span
            if side is None:
                middle = int(rng.integers(b + 1, d))
            elif side == "before":
                middle = int(rng.integers(0, b - tau_min + 1))
            else:
                middle = int(rng.integers(d + tau_min, n))
            return np.array([b, middle, d])
        raise TooShortError(row.path, f"{n} frames cannot hold a Shuffle and Learn tuple "
                                      f"(tau_min {tau_min}, tau_max {tau_max})")

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return ConcatHead(encoder.feature_dim, 3, self.config.hidden_dim, 2)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        x = to_model_input(batch["frames"], self.augment)  # [B, C, 3, H, W], one crop per tuple
        frames = rearrange(x, "b c t h w -> (b t) c 1 h w")
        logits = head(encoder(frames))
        loss = F.cross_entropy(logits, batch["label"])
        accuracy = (logits.argmax(-1) == batch["label"]).float().mean()
        return {"loss": loss, "accuracy": accuracy.detach()}
