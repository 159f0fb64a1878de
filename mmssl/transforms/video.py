"""Video transforms on whole batches, on the device: uint8 [B, T, H, W, C] crosses the bus, the
float conversion, crops, flips and colour jitter happen here in one pass (one affine resampling
for crop + flip + resize). Every frame of a sample gets the same spatial transform."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from kornia.color import rgb_to_lab

# Kinetics statistics as PyTorchVideo/SlowFast normalise (one value for every channel, so colour
# rotation and OPN's channel splitting commute with it); torchvision's pretrained video weights
# (`weights="KINETICS400_V1"`) were trained on (0.432, 0.395, 0.376) / (0.228, 0.221, 0.217).
MEAN = (0.45, 0.45, 0.45)
STD = (0.225, 0.225, 0.225)


@dataclass
class VideoAugment:
    """Random resized crop (area share in `crop_scale`, aspect in `crop_ratio`; both (1, 1): the
    whole frame), horizontal flip and brightness/contrast jitter, drawn per sample and shared by
    all its frames (the jitter drawn per frame instead with `jitter_per_frame`)."""

    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    jitter_per_frame: bool = False


def to_model_input(frames: torch.Tensor, augment: VideoAugment | None = None,
                   out_size: int | None = None) -> torch.Tensor:
    """uint8 [B, T, H, W, C] -> normalised float [B, C, T, H', W'] (augmented if `augment`)."""
    x = rearrange(frames, "b t h w c -> b c t h w").float().div_(255)
    if augment is not None:
        x = _crop_flip(x, augment, out_size or x.shape[-1])
        x = _jitter(x, augment)
    elif out_size is not None and out_size != x.shape[-1]:
        b = x.shape[0]
        x = F.interpolate(rearrange(x, "b c t h w -> (b t) c h w"), size=(out_size, out_size),
                          mode="bilinear", align_corners=False, antialias=True)
        x = rearrange(x, "(b t) c h w -> b c t h w", b=b)
    return normalize(x)


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1], float [B, C, T, H, W] -> the model input (MEAN and STD per channel)."""
    return (pixels - pixels.new_tensor(MEAN).view(1, -1, 1, 1, 1)) / pixels.new_tensor(STD).view(1, -1, 1, 1, 1)


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize`: the model input float [B, C, T, H, W] -> pixels in [0, 1]."""
    return x * x.new_tensor(STD).view(1, -1, 1, 1, 1) + x.new_tensor(MEAN).view(1, -1, 1, 1, 1)


def lab(pixels: torch.Tensor) -> torch.Tensor:
    """RGB pixels float [B, 3, T, H, W] in [0, 1] (sRGB, D65 white) -> CIE Lab, kornia's `rgb_to_lab`:
    L in [0, 100], a and b within about [-110, 110]."""
    b = pixels.shape[0]
    frames = rgb_to_lab(rearrange(pixels.clamp(0, 1), "b c t h w -> (b t) c h w"))
    return rearrange(frames, "(b t) c h w -> b c t h w", b=b)


def _crop_flip(x: torch.Tensor, aug: VideoAugment, out_size: int) -> torch.Tensor:
    b, c, t, _h, _w = x.shape
    device = x.device
    area = torch.empty(b, device=device).uniform_(*aug.crop_scale)
    log_ratio = torch.empty(b, device=device).uniform_(*map(math.log, aug.crop_ratio))
    ratio = log_ratio.exp()
    scale_x = (area * ratio).sqrt().clamp(max=1.0)  # crop width / frame width
    scale_y = (area / ratio).sqrt().clamp(max=1.0)
    shift_x = (torch.rand(b, device=device) * 2 - 1) * (1 - scale_x)
    shift_y = (torch.rand(b, device=device) * 2 - 1) * (1 - scale_y)
    flip = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0) if aug.flip else torch.ones(b, device=device)
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0] = scale_x * flip
    theta[:, 0, 2] = shift_x
    theta[:, 1, 1] = scale_y
    theta[:, 1, 2] = shift_y
    grid = F.affine_grid(theta, [b, c * t, out_size, out_size], align_corners=False)
    out = F.grid_sample(rearrange(x, "b c t h w -> b (c t) h w"), grid, mode="bilinear",
                        padding_mode="reflection", align_corners=False)
    return rearrange(out, "b (c t) h w -> b c t h w", c=c)


def _jitter(x: torch.Tensor, aug: VideoAugment) -> torch.Tensor:
    b, _, t = x.shape[:3]
    shape = (b, 1, t if aug.jitter_per_frame else 1, 1, 1)
    brightness = 1 + (torch.rand(shape, device=x.device) * 2 - 1) * aug.brightness
    contrast = 1 + (torch.rand(shape, device=x.device) * 2 - 1) * aug.contrast
    x = x * brightness
    mean = x.mean(dim=(1, 3, 4) if aug.jitter_per_frame else (1, 2, 3, 4), keepdim=True)
    return ((x - mean) * contrast + mean).clamp_(0, 1)


def channel_split(x: torch.Tensor, per_frame: bool = True) -> torch.Tensor:
    """Channel splitting (Lee et al., OPN, ICCV 2017): every frame of every sample keeps one random
    colour channel, copied to all channels (`per_frame` False: one channel for all the frames of a
    sample, Kim et al.'s channel replication). float [B, C, T, H, W] -> same shape."""
    b, c, t = x.shape[:3]
    keep = torch.randint(c, (b, 1, t if per_frame else 1, 1, 1), device=x.device)
    return x.gather(1, keep.expand(b, 1, t, *x.shape[3:])).expand_as(x).contiguous()


def frame_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Spatial jitter (OPN): every frame of every sample moved by its own whole-pixel offset in
    [-max_shift, max_shift] along each axis, borders reflected. float [B, C, T, H, W] -> same shape.
    Applied after the shared crop, so the frames of a sample come from slightly different windows."""
    b, c, t, h, w = x.shape
    frames = rearrange(x, "b c t h w -> (b t) c h w")
    shift = torch.randint(-max_shift, max_shift + 1, (b * t, 2), device=x.device).to(x.dtype)
    theta = torch.zeros(b * t, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = 2 * shift[:, 0] / w  # output (y, x) reads input (y + shift[:, 1], x + shift[:, 0])
    theta[:, 1, 2] = 2 * shift[:, 1] / h
    grid = F.affine_grid(theta, [b * t, c, h, w], align_corners=False)
    out = F.grid_sample(frames, grid, mode="nearest", padding_mode="reflection", align_corners=False)
    return rearrange(out, "(b t) c h w -> b c t h w", b=b)


def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Every frame of sample i of x (float [B, C, T, H, W], square frames) turned by `angles[i]` radians
    counterclockwise (as `torch.rot90` turns), about the centre, borders reflected: 3DRotNet's small
    random rotation before its quarter turns."""
    b, c, t, h, w = x.shape
    cos, sin = angles.cos(), angles.sin()
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = cos  # output (x, y) reads input (cos x - sin y, sin x + cos y), y down
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin
    grid = F.affine_grid(theta, [b, c * t, h, w], align_corners=False)
    out = F.grid_sample(rearrange(x, "b c t h w -> b (c t) h w"), grid, mode="bilinear",
                        padding_mode="reflection", align_corners=False)
    return rearrange(out, "b (c t) h w -> b c t h w", c=c)


def colour_distortion(x: torch.Tensor, hue: float, grayscale: float) -> torch.Tensor:
    """Per clip of x (normalised float [N, 3, T, H, W]): a rotation of the colours about the gray axis
    by an angle uniform in +- `hue` turns (a hue shift, as SimCLR's hue jitter), or with probability
    `grayscale` the mean of the channels instead. Both maps are linear and keep gray gray, so with the
    same mean and std for every channel (mmssl.transforms.video) they commute with the normalisation."""
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device) * 2 - 1) * (2 * math.pi * hue)
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    average = x.new_full((3, 3), 1 / 3)  # u u^T, u = (1, 1, 1) / sqrt(3)
    cross = x.new_tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3)  # v -> u x v
    rotation = cos * torch.eye(3, device=x.device) + (1 - cos) * average + sin * cross  # Rodrigues
    gray = torch.rand(n, device=x.device) < grayscale
    matrix = torch.where(gray[:, None, None], average, rotation)
    return torch.einsum("nij,njthw->nithw", matrix, x)
