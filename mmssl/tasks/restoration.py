"""What the restoration tasks share (inpainting and denoising, super-resolution): the clip is degraded
on the device, the encoder sees the degraded clip, and a light decoder on its feature grid
(`UpsamplingDecoder`, with the degraded model input as its full-resolution skip) predicts the
correction that restores it: restored = degraded + decoder(encoder.feature_map(degraded), degraded).

Loss: the mean squared error of the restored pixels (in [0, 1]) against the clean clip on the task's
region (`region_mse`: the hole, the corrupted pixels, the dropped frames or the whole clip), beside
"trivial_loss", the same error of the trivial predictor, the degraded clip itself (the mean-colour
fill, the noisy or the blurred input, the repeated neighbour frame), on the same pixels: the pretext
metric's chance level.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import random_clip
from mmssl.losses.region_mse import region_mse
from mmssl.models import VideoEncoder
from mmssl.models.heads import UpsamplingDecoder
from mmssl.tasks.base import PretextMetric, PretextTask
from mmssl.transforms.video import VideoAugment, normalize, to_model_input, unnormalize

# the declared metric of every restoration task: its loss on held-out clips against the trivial predictor's
RESTORATION_METRIC = PretextMetric("loss", higher_is_better=False, chance_key="trivial_loss")


@dataclass(frozen=True)
class Degraded:
    """A degraded batch: its pixels [B, 3, T, H, W] in [0, 1] (what the encoder sees, and the trivial
    prediction) and the region the loss reads, bool broadcastable to [B, 1, T, H, W]."""

    pixels: Tensor
    region: Tensor


def whole_clip(device: torch.device | None = None) -> Tensor:
    """The region of a loss that reads every pixel: bool [1, 1, 1, 1, 1], True."""
    return torch.ones(1, 1, 1, 1, 1, dtype=torch.bool, device=device)


@dataclass(frozen=True)
class Restored:
    """The clean clip, its degraded copy and the model's restoration, pixels [B, 3, T, H, W]."""

    clean: Tensor
    degraded: Degraded
    restored: Tensor


class Restoration(PretextTask):
    """A clip of `config.clip_len` frames every `config.stride` degraded by `degrade`, restored by
    encoder + UpsamplingDecoder (`config.decoder_width`, `config.decoder_stages`; module docstring)."""

    def __init__(self, config: Any, augment: VideoAugment | None = None) -> None:
        self.config = config
        self.augment = augment

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        return Window(frames=random_clip(row.num_frames, self.config.clip_len, self.config.stride, rng))

    @abstractmethod
    def degrade(self, clean: Tensor, batch: dict[str, Tensor]) -> Degraded:
        """The degraded copy of the clean pixels [B, 3, T, H, W] in [0, 1] of `batch` (its other entries:
        what the workers drew, e.g. masks) and the region its loss reads."""

    def build_head(self, encoder: VideoEncoder) -> UpsamplingDecoder:
        return UpsamplingDecoder(encoder.map_dim, 3, self.config.decoder_width, self.config.decoder_stages,
                                 skip_channels=3)

    def restore(self, batch: dict[str, Tensor], encoder: VideoEncoder, head: UpsamplingDecoder) -> Restored:
        """The batch's clean clip after the run's augmentation, its degraded copy and the restoration."""
        clean = unnormalize(to_model_input(batch["frames"], self.augment))
        degraded = self.degrade(clean, batch)
        x = self.front_end(normalize(degraded.pixels))
        restored = degraded.pixels + head(encoder.feature_map(x), x.shape[2:], skip=x)
        return Restored(clean, degraded, restored)

    def loss(self, batch: dict[str, Tensor], encoder: VideoEncoder, head: UpsamplingDecoder) -> dict[str, Tensor]:
        out = self.restore(batch, encoder, head)
        region = out.degraded.region
        with torch.no_grad():
            trivial = region_mse(out.degraded.pixels, out.clean, region)
        return {"loss": region_mse(out.restored, out.clean, region), "trivial_loss": trivial}
