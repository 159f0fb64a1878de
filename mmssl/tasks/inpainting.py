"""Inpainting: Context Encoders (Pathak, Krahenbuhl, Donahue, Darrell, Efros, "Context Encoders: Feature
Learning by Inpainting", CVPR 2016) on clips, with denoising (Vincent, Larochelle, Bengio, Manzagol,
"Extracting and Composing Robust Features with Denoising Autoencoders", ICML 2008) as its option.

A clip of `clip_len` frames every `stride` frames (1: single frames) at a random start. `corruption`:
  - "region" (Context Encoders' random-region masks): in the workers, smooth random noise over the
    frame (a `region_cells` x `region_cells` grid of normal draws, bicubically upsampled), of which
    the pixels with the largest values make the hole: exactly round(share * H * W) pixels in one or
    a few blobs, share uniform in `share` per sample; the same hole in every frame of the clip, so
    the other frames cannot show what it hides;
  - "pixels" (masking noise): exactly round(share * H * W) random pixels of every frame, each frame its own;
  - "gaussian" (additive noise): N(0, noise_std^2) on every pixel in [0, 1], clamped, drawn on the device.
On the device, after the run's crop, flip and jitter (the masks apply to the cropped clip, as
VideoMAE's): the hidden pixels take the mean colour of the clip's visible pixels (Context Encoders
fill with the mean), and the model restores the clean clip (mmssl.tasks.restoration). Loss: L2 on the
hidden pixels ("gaussian": on every pixel); the trivial predictor is the fill (the noisy clip).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmssl.config import AT_LEAST_1, POSITIVE, Bound, Config, ConfigError
from mmssl.data.clip import DecodedClip
from mmssl.registry import register_task
from mmssl.tasks.restoration import RESTORATION_METRIC, Degraded, Restoration, whole_clip
from mmssl.transforms.video import VideoAugment


@dataclass
class InpaintingConfig:
    """Context Encoders' random-region inpainting on clips, or denoising (docs/methods.md#inpainting)."""

    clip_len: int = 8
    stride: int = 2
    corruption: Literal["region", "pixels", "gaussian"] = "region"
    share: list[float] = field(default_factory=lambda: [0.2, 0.3])  # region, pixels: hidden share, uniform in this range
    region_cells: int = 4  # region: the noise grid's cells a side; fewer: larger blobs
    noise_std: float = 0.1  # gaussian: of the noise on pixels in [0, 1]
    decoder_width: int = 64  # channels of the decoder's first stage, halved by each of its stages
    decoder_stages: int = 2

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "clip_len": AT_LEAST_1, "stride": AT_LEAST_1, "share": Bound(0, 1, strict=True, strict_high=True),
        "region_cells": AT_LEAST_1, "noise_std": POSITIVE, "decoder_width": AT_LEAST_1, "decoder_stages": Bound(0, 5)}


def hidden_pixels(height: int, width: int, share: float) -> int:
    """Pixels a mask of `share` hides in a height x width frame."""
    return round(share * height * width)


def region_mask(height: int, width: int, share: float, cells: int, rng: np.random.Generator) -> Tensor:
    """bool [height, width], True on exactly `hidden_pixels` pixels: the largest values of smooth noise
    (a cells x cells grid of normal draws, bicubically upsampled), so one or a few random blobs."""
    noise = torch.from_numpy(rng.standard_normal((1, 1, cells, cells)).astype(np.float32))
    smooth = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False).flatten()
    mask = torch.zeros(height * width, dtype=torch.bool)
    mask[smooth.argsort(descending=True)[:hidden_pixels(height, width, share)]] = True
    return mask.view(height, width)


def pixel_mask(frames: int, height: int, width: int, share: float, rng: np.random.Generator) -> Tensor:
    """bool [frames, height, width]: exactly `hidden_pixels` random pixels of each frame (masking noise)."""
    ranks = rng.random((frames, height * width)).argsort(1).argsort(1)
    return torch.from_numpy(ranks < hidden_pixels(height, width, share)).view(frames, height, width)


def mean_fill(pixels: Tensor, hidden: Tensor) -> Tensor:
    """pixels [B, C, T, H, W] with the `hidden` ones (bool [B, 1, T or 1, H, W]) set to the mean colour of
    the clip's visible pixels (per clip and channel)."""
    visible = (~hidden).to(pixels.dtype).expand(-1, -1, *pixels.shape[2:])
    mean = (pixels * visible).sum((2, 3, 4), keepdim=True) / visible.sum((2, 3, 4), keepdim=True).clamp(min=1)
    return torch.where(hidden, mean, pixels)


@register_task("inpainting", label_family="object", encoder_input="rgb", metric=RESTORATION_METRIC)
class Inpainting(Restoration):
    config_class = InpaintingConfig

    def __init__(self, config: InpaintingConfig, augment: VideoAugment | None = None) -> None:
        low, high = config.share
        if not 0 < low <= high < 1:
            raise ConfigError(f"inpainting: share must be [low, high] with 0 < low <= high < 1, got {config.share}")
        super().__init__(config, augment)

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> Inpainting:
        return cls(config.task.inpainting, augment)

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, Tensor]:
        """The uint8 frames and, unless the noise is Gaussian, the mask (True: hidden) at their size:
        [1, H, W] for a region (every frame's), [T, H, W] for masking noise."""
        sample = {"frames": clip.video}
        c = self.config
        frames, height, width = clip.video.shape[:3]
        share = rng.uniform(*c.share)
        if c.corruption == "region":
            sample["mask"] = region_mask(height, width, share, c.region_cells, rng)[None]
        elif c.corruption == "pixels":
            sample["mask"] = pixel_mask(frames, height, width, share, rng)
        return sample

    def degrade(self, clean: Tensor, batch: dict[str, Tensor]) -> Degraded:
        if self.config.corruption == "gaussian":
            noisy = (clean + torch.randn_like(clean) * self.config.noise_std).clamp(0, 1)
            return Degraded(noisy, whole_clip(clean.device))
        hidden = batch["mask"][:, None]  # [B, 1, T or 1, H, W]
        if hidden.shape[-2:] != clean.shape[-2:]:
            raise ValueError(f"mask {tuple(hidden.shape[-2:])} does not match the clip's frames {tuple(clean.shape[-2:])}")
        return Degraded(mean_fill(clean, hidden), hidden)
