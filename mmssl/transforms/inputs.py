"""Encoder input front ends: what an encoder sees of its input, by name (`ENCODER_INPUTS`).

A task declares its encoder's (`@register_task(..., encoder_input="luma")`) and applies it right before
the encoder; its checkpoints save the name, and transfer, the benchmark and any export apply the same
function (`front_end`), so an encoder is never probed on input it did not train on. A video front end
maps the normalised model input float [N, 3, T, H, W] (`to_model_input`) to the same shape: every
video encoder takes three channels. An audio one maps raw samples [N, samples] to the same.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import rgb_to_grayscale

from mmssl.registry import ENCODER_INPUTS, register_encoder_input
from mmssl.transforms.video import lab, normalize, unnormalize


def identity(x: torch.Tensor) -> torch.Tensor:
    """The input as it is."""
    return x


register_encoder_input("rgb")(identity)  # the colour frames
register_encoder_input("waveform")(identity)  # the raw audio samples


@register_encoder_input("luma")
def luma(x: torch.Tensor) -> torch.Tensor:
    """Luminance only (ITU-R BT.601 weights, torchvision's `rgb_to_grayscale`), copied to the three
    channels. The weights sum to 1 (up to 1e-4) and the normalisation is the same for every channel,
    so it commutes with the normalisation: the luma of the model input is the model input of the luma."""
    return rgb_to_grayscale(x.transpose(1, 2), num_output_channels=3).transpose(1, 2)


SOBEL_X = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


@register_encoder_input("sobel")
def sobel(x: torch.Tensor) -> torch.Tensor:
    """DeepCluster's fixed edge filter: the luma's horizontal and vertical Sobel responses per frame
    (replicated borders) and their magnitude, as the three channels. Without colour, k-means on the
    features of a random network no longer groups by colour alone (Caron et al. 2018, Sec. 4)."""
    n, _, t, h, w = x.shape
    grey = luma(x)[:, :1].transpose(1, 2).reshape(n * t, 1, h, w)
    kernels = torch.stack([SOBEL_X, SOBEL_X.T])[:, None].to(x)
    edges = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    edges = torch.cat([edges, edges.square().sum(1, keepdim=True).add(1e-12).sqrt()], dim=1)
    return edges.reshape(n, t, 3, h, w).transpose(1, 2)


@register_encoder_input("lightness")
def lightness(x: torch.Tensor) -> torch.Tensor:
    """CIE Lab lightness L only (kornia; sRGB, D65 white), as the model input of a grey frame of that
    lightness (L / 100 in every channel, normalised): a frame's chroma (a, b) cannot reach the encoder,
    not even through the small differences between L and `luma`'s weighted sum of R, G, B."""
    pixels = lab(unnormalize(x))[:, :1] / 100
    return normalize(pixels.expand(-1, 3, -1, -1, -1))


def front_end(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The front end registered as `name` (UnknownNameError naming the known ones)."""
    return ENCODER_INPUTS.get(name)
