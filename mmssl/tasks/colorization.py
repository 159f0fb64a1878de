"""Colorization: Zhang, Isola, Efros, "Colorful Image Colorization", ECCV 2016, on every frame of a clip.

A clip of `clip_len` frames every `stride` frames at a random start; on the device, after the run's
crop, flip and jitter, the frames go to CIE Lab (kornia, sRGB with D65 white). The encoder sees the
lightness L only (the declared `lightness` front end, mmssl.transforms.inputs); the head predicts, at a
quarter of the frame's resolution, a distribution over the quantised ab plane: grid cells of `grid`
units centred on multiples of it, kept where some sRGB colour falls (`in_gamut_bins`, computed from
the colour space: 64^3 sRGB colours to Lab). Target: the soft encoding of each pixel's ab (of its 4x4
block mean), its `neighbours` nearest bins weighted by a Gaussian of std `soft_sigma` in ab units.
Loss: the cross-entropy against it, each pixel weighted by the class-rebalancing weight of its nearest
bin, w = ((1 - lambda) p~ + lambda / Q)^-1, normalised so that E_p~[w] = 1, p~ the prior over the bins
smoothed by a Gaussian of std `prior_sigma`; near-grey frames (mean chroma sqrt(a^2 + b^2) below
`grey_chroma`) weighted out. The prior is the bin histogram of every pixel the run has trained on so
far (a buffer of the head, saved in the checkpoint): estimated on the pretraining videos as they are
drawn, where Zhang et al. counted ImageNet's training set beforehand. The logits are the decoder's
output plus log(p~ w), the best constant distribution for the rebalanced loss under the prior, so the
model starts at it; the same constant is the trivial predictor the held-out loss is read against.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from kornia.color import rgb_to_lab
from torch import Tensor, nn

from mmssl.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, SHARE_ABOVE_0, Bound, Config
from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import random_clip
from mmssl.models import VideoEncoder
from mmssl.models.heads import UpsamplingDecoder
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask
from mmssl.transforms.video import VideoAugment, lab, to_model_input, unnormalize

OUT_STRIDE = 4  # the head predicts at a quarter of the frame's resolution, as Zhang et al.'s network


@dataclass
class ColorizationConfig:
    """Zhang et al.'s colorization, per frame (docs/methods.md#colorization)."""

    clip_len: int = 8
    stride: int = 2
    grid: float = 10.0  # ab units between bin centres
    neighbours: int = 5  # soft encoding: the nearest bins that share each pixel's target
    soft_sigma: float = 5.0  # their Gaussian weighting, ab units
    rebalance: float = 0.5  # lambda: the uniform distribution's share in the rebalancing mix (1: no rebalancing)
    prior_sigma: float = 5.0  # the prior's smoothing over the ab plane, ab units
    grey_chroma: float = 5.0  # frames of lower mean chroma (ab units) are weighted out
    decoder_width: int = 64  # channels of the decoder's first stage, halved by each of its stages
    decoder_stages: int = 1

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "clip_len": AT_LEAST_1, "stride": AT_LEAST_1, "grid": POSITIVE, "neighbours": AT_LEAST_1,
        "soft_sigma": POSITIVE, "rebalance": SHARE_ABOVE_0, "prior_sigma": NON_NEGATIVE, "grey_chroma": NON_NEGATIVE,
        "decoder_width": AT_LEAST_1, "decoder_stages": Bound(0, 5)}


@cache
def in_gamut_bins(grid: float, levels: int = 64) -> Tensor:
    """The ab bin centres [Q, 2] (multiples of `grid`) that some sRGB colour falls in (nearest centre):
    `levels`^3 colours spanning the sRGB cube, converted to Lab."""
    axis = torch.linspace(0, 1, levels)
    rgb = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij")).reshape(1, 3, -1, 1)
    ab = rgb_to_lab(rgb)[0, 1:, :, 0].T
    return torch.unique(torch.round(ab / grid), dim=0) * grid


def soft_encode(ab: Tensor, centres: Tensor, neighbours: int, sigma: float) -> tuple[Tensor, Tensor]:
    """ab [N, 2] -> the soft encoding, sparse: the `neighbours` nearest bins of each row [N, k], nearest
    first, and their weights [N, k], exp(-d^2 / (2 sigma^2)) normalised to sum 1 (every other bin: 0)."""
    nearest, index = torch.cdist(ab, centres.to(ab)).topk(neighbours, dim=1, largest=False)
    return index, torch.softmax(-nearest.pow(2) / (2 * sigma ** 2), dim=1)


def smooth_prior(counts: Tensor, centres: Tensor, sigma: float) -> Tensor:
    """The bin histogram `counts` [Q] as a distribution, smoothed over the ab plane by a Gaussian of std
    `sigma` (none at 0), renormalised; uniform before any count."""
    total = counts.sum()
    p = counts / total.clamp(min=1)
    if sigma > 0:
        p = torch.exp(-torch.cdist(centres, centres).pow(2) / (2 * sigma ** 2)) @ p
    uniform = torch.full_like(counts, 1 / len(counts))
    return torch.where(total > 0, p / p.sum().clamp(min=1e-30), uniform)  # no branch: one compiled graph


def rebalancing_weights(prior: Tensor, share: float) -> Tensor:
    """w = ((1 - share) p + share / Q)^-1, scaled so that sum_q p_q w_q = 1 (Zhang et al., eq. 4)."""
    w = 1 / ((1 - share) * prior + share / len(prior))
    return w / (prior * w).sum()


def rebalanced_constant(prior: Tensor, share: float) -> Tensor:
    """p w: the constant distribution that minimises the rebalanced cross-entropy when the pixels'
    bins follow `prior` (weighted counts p_q w_q, which sum to 1 by the weights' scaling)."""
    return prior * rebalancing_weights(prior, share)


class ColorizationHead(nn.Module):
    """The upsampling decoder to logits over the ab bins, and the run's bin histogram (the prior)."""

    def __init__(self, map_dim: int, centres: Tensor, width: int, stages: int) -> None:
        super().__init__()
        self.decoder = UpsamplingDecoder(map_dim, len(centres), width, stages, skip_channels=1)
        self.register_buffer("centres", centres.clone())
        self.register_buffer("counts", torch.zeros(len(centres), dtype=torch.float64))

    def forward(self, grid: Tensor, size: tuple[int, int, int], lightness: Tensor) -> Tensor:
        return self.decoder(grid, size, skip=lightness)

    @torch.compiler.disable  # bincount's output size depends on the data: eager, outside the graph
    def count(self, nearest: Tensor) -> None:
        """Add the training pixels' nearest bins [N] to the histogram the prior is made of."""
        self.counts += torch.bincount(nearest, minlength=len(self.centres)).to(self.counts)


@register_task("colorization", label_family="object", encoder_input="lightness",
               metric=PretextMetric("loss", higher_is_better=False, chance_key="trivial_loss"))
class Colorization(PretextTask):
    config_class = ColorizationConfig

    def __init__(self, config: ColorizationConfig, augment: VideoAugment | None = None) -> None:
        self.config = config
        self.augment = augment
        self.centres = in_gamut_bins(config.grid)

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> Colorization:
        return cls(config.task.colorization, augment)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        return Window(frames=random_clip(row.num_frames, self.config.clip_len, self.config.stride, rng))

    def build_head(self, encoder: VideoEncoder) -> ColorizationHead:
        return ColorizationHead(encoder.map_dim, self.centres, self.config.decoder_width, self.config.decoder_stages)

    def targets(self, pixels: Tensor, head: ColorizationHead) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Of RGB pixels [B, 3, T, H, W], one row per pixel of the output grid (T, H/4, W/4), in
        (b, t, h, w) order: the soft target's bins and weights [N, k] (`soft_encode`), the pixel's
        weight [N] (rebalancing, near-grey frames 0) and its ab [N, 2] (the mean of its 4x4 block)."""
        c = self.config
        ab = F.avg_pool3d(lab(pixels)[:, 1:], (1, OUT_STRIDE, OUT_STRIDE))
        colourful = ab.norm(dim=1).mean((2, 3)) >= c.grey_chroma  # [B, T]: near-grey frames out
        ab = rearrange(ab, "b c t h w -> (b t h w) c")
        index, soft = soft_encode(ab, head.centres, c.neighbours, c.soft_sigma)
        nearest = index[:, 0]
        if head.training:  # the prior: every pixel trained on so far
            head.count(nearest)
        prior = smooth_prior(head.counts.float(), head.centres, c.prior_sigma)
        weight = rebalancing_weights(prior, c.rebalance)[nearest]
        weight = weight * colourful.repeat_interleave(len(ab) // colourful.numel())
        return index, soft, weight, ab

    def predict(self, x: Tensor, encoder: VideoEncoder, head: ColorizationHead) -> Tensor:
        """Logits over the ab bins [B, Q, T, H/4, W/4] of a model input x (RGB, normalised), from its lightness:
        the decoder's output added to `constant_log`, so that the model starts at the trivial predictor
        (the decoder's last layer starts at zero) rather than at uniform logits, which AdamW would take
        thousands of steps to move by the constant's log-odds."""
        lightness = self.front_end(x)
        t, h, w = x.shape[2:]
        size = (t, h // OUT_STRIDE, w // OUT_STRIDE)
        skip = F.avg_pool3d(lightness[:, :1], (1, OUT_STRIDE, OUT_STRIDE))
        return head(encoder.feature_map(lightness), size, skip) + self.constant_log(head)[None, :, None, None, None]

    def constant_log(self, head: ColorizationHead) -> Tensor:
        """log of `rebalanced_constant` under the run's prior so far."""
        prior = smooth_prior(head.counts.float(), head.centres, self.config.prior_sigma)
        return rebalanced_constant(prior, self.config.rebalance).clamp(min=1e-12).log()

    def loss(self, batch: dict[str, Tensor], encoder: VideoEncoder, head: ColorizationHead) -> dict[str, Tensor]:
        x = to_model_input(batch["frames"], self.augment)
        index, soft, weight, ab = self.targets(unnormalize(x), head)
        logits = rearrange(self.predict(x, encoder, head).float(), "b q t h w -> (b t h w) q")
        total = weight.sum().clamp(min=1e-8)
        loss = -(weight * (soft * F.log_softmax(logits, dim=1).gather(1, index)).sum(1)).sum() / total
        with torch.no_grad():  # the trivial predictor: the best constant under the training pixels' prior
            constant = self.constant_log(head)  # (not one fitted to the scored batch, which would see it)
            trivial = -(weight * (soft * constant[index]).sum(1)).sum() / total
            ab_error = (logits.softmax(1) @ head.centres.float() - ab).norm(dim=1).mean()
            mean_colour_error = (ab - ab.mean(0)).norm(dim=1).mean()
        return {"loss": loss, "trivial_loss": trivial, "ab_error": ab_error, "mean_colour_ab_error": mean_colour_error}
