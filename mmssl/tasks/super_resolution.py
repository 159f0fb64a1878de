"""Super-resolution as a pretext task: spatial (restore frames from an anti-aliased down-sampling,
as SRCNN, Dong, Loy, He, Tang, "Image Super-Resolution Using Deep Convolutional Networks", TPAMI 2016,
with a randomised blur kernel as in blind super-resolution) or temporal (restore the dropped frames of
a clip: frame interpolation, as Niklaus, Mai, Liu, "Video Frame Interpolation via Adaptive Separable
Convolution", ICCV 2017).

A clip of `clip_len` frames every `stride` frames at a random start; on the device, after the run's
crop, flip and jitter, `mode`:
  - "spatial": every frame blurred by an axis-aligned Gaussian whose standard deviation along each
    axis is uniform in `sigma` times `factor` (drawn per clip and axis; kornia's `gaussian_blur2d`,
    borders reflected), then sampled at the centres of the factor x factor blocks (bilinear, no
    further filtering): the low-resolution clip, H / factor x W / factor. The encoder sees it
    bicubically upsampled back to H x W (the blurred input: the trivial predictor); the loss reads
    every pixel.
  - "temporal": frames 0, 2, 4, ... kept, each shown twice in place of itself and the next one (the
    repeated neighbour frame: the trivial predictor); the loss reads the dropped frames 1, 3, 5, ...
The model restores the clean clip (mmssl.tasks.restoration).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from kornia.filters import gaussian_blur2d
from torch import Tensor

from mmssl.config import AT_LEAST_1, POSITIVE, Bound, Config, ConfigError
from mmssl.registry import register_task
from mmssl.tasks.restoration import RESTORATION_METRIC, Degraded, Restoration, whole_clip
from mmssl.transforms.video import VideoAugment

FACTORS = (2, 4)


@dataclass
class SuperResolutionConfig:
    """Spatial super-resolution or frame interpolation (docs/methods.md#super_resolution)."""

    clip_len: int = 8
    stride: int = 2
    mode: Literal["spatial", "temporal"] = "spatial"
    factor: int = 2  # spatial: 2 or 4
    sigma: list[float] = field(default_factory=lambda: [0.4, 0.6])  # spatial: the blur's std per axis / factor
    decoder_width: int = 64  # channels of the decoder's first stage, halved by each of its stages
    decoder_stages: int = 2

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "clip_len": AT_LEAST_1, "stride": AT_LEAST_1, "factor": Bound(2, 4), "sigma": POSITIVE,
        "decoder_width": AT_LEAST_1, "decoder_stages": Bound(0, 5)}


def kernel_size(sigma: float) -> int:
    """The odd width of a Gaussian kernel of standard deviation `sigma`, cut at 3 sigma."""
    return 2 * math.ceil(3 * sigma) + 1


def low_resolution(pixels: Tensor, factor: int, sigma: Tensor, size: int) -> Tensor:
    """pixels [B, C, T, H, W] -> [B, C, T, H / factor, W / factor]: each clip's frames blurred by a
    Gaussian of std sigma[b] = (along y, along x), a `size` x `size` kernel, borders reflected, then
    sampled at the factor x factor blocks' centres (bilinear)."""
    b, _, t, h, w = pixels.shape
    frames = rearrange(pixels, "b c t h w -> (b t) c h w")
    blurred = gaussian_blur2d(frames, (size, size), sigma.repeat_interleave(t, 0), border_type="reflect")
    small = F.interpolate(blurred, size=(h // factor, w // factor), mode="bilinear", align_corners=False)
    return rearrange(small, "(b t) c h w -> b c t h w", b=b)


def upsample(pixels: Tensor, size: tuple[int, int]) -> Tensor:
    """Frames [B, C, T, h, w] bicubically resized to `size` (H, W), clamped to [0, 1]."""
    b = pixels.shape[0]
    frames = F.interpolate(rearrange(pixels, "b c t h w -> (b t) c h w"), size=size, mode="bicubic",
                           align_corners=False)
    return rearrange(frames, "(b t) c h w -> b c t h w", b=b).clamp(0, 1)


def repeat_kept_frames(pixels: Tensor) -> Tensor:
    """[B, C, T, H, W] with every odd frame replaced by the one before it (frames 0, 0, 2, 2, ...)."""
    return pixels[:, :, ::2].repeat_interleave(2, dim=2)[:, :, :pixels.shape[2]]


def dropped_frames(num_frames: int, device: torch.device | None = None) -> Tensor:
    """bool [1, 1, T, 1, 1]: True on the dropped (odd) frames."""
    return (torch.arange(num_frames, device=device) % 2 == 1).view(1, 1, -1, 1, 1)


@register_task("super_resolution", label_family="object", encoder_input="rgb", metric=RESTORATION_METRIC)
class SuperResolution(Restoration):
    config_class = SuperResolutionConfig

    def __init__(self, config: SuperResolutionConfig, augment: VideoAugment | None = None) -> None:
        low, high = config.sigma
        if config.mode == "spatial" and (config.factor not in FACTORS or not 0 < low <= high):
            raise ConfigError(f"super_resolution: factor must be one of {FACTORS} and sigma [low, high] with "
                              f"0 < low <= high, got {config.factor} and {config.sigma}")
        if config.mode == "temporal" and config.clip_len < 2:
            raise ConfigError(f"temporal super-resolution drops every other frame: clip_len must be >= 2, "
                              f"got {config.clip_len}")
        super().__init__(config, augment)
        self.kernel = kernel_size(high * config.factor)

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> SuperResolution:
        return cls(config.task.super_resolution, augment)

    def draw_sigma(self, count: int, device: torch.device | None = None) -> Tensor:
        """[count, 2]: each clip's blur std along y and x, uniform in `sigma` times `factor`."""
        low, high = self.config.sigma
        return (low + (high - low) * torch.rand(count, 2, device=device)) * self.config.factor

    def degrade(self, clean: Tensor, batch: dict[str, Tensor]) -> Degraded:
        if self.config.mode == "temporal":
            return Degraded(repeat_kept_frames(clean), dropped_frames(clean.shape[2], clean.device))
        height, width = clean.shape[-2:]
        if height % self.config.factor or width % self.config.factor:
            raise ValueError(f"{height}x{width} frames do not divide by the factor {self.config.factor}")
        small = low_resolution(clean, self.config.factor, self.draw_sigma(len(clean), clean.device), self.kernel)
        return Degraded(upsample(small, (height, width)), whole_clip(clean.device))
