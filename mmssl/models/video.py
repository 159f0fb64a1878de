"""Video encoders: float clips ``[B, C, T, H, W]`` (or single frames, T=1) -> features ``[B, D]``.

Input is float RGB (C=3, channels in R, G, B order), already scaled and normalised on the device
by ``mmssl.transforms``; encoders do no normalisation of their own. Build encoders by name with
``build_video_encoder``; other modules add theirs with ``@register_video_encoder("name")``.

Every encoder (``VideoEncoder``) has two outputs, behind the same input checks and frame stretching:
  - ``encoder(x)`` -> ``[B, feature_dim]``: pooled features, for probes and clip-level tasks;
  - ``encoder.feature_map(x)`` -> ``[B, map_dim, T', H', W']``: the last feature grid before pooling,
    for dense tasks (future prediction, flow similarity, reconstruction);
and ``encoder.pool(encoder.feature_map(x))`` is ``encoder(x)``. ``map_dim`` is ``feature_dim`` except
for tiny3d. The grid's strides (T' about T / st, H' about H / sh, W' about W / sw) as (st, sh, sw):
  - r3d_18, r2plus1d_18: (8, 16, 16), rounded up (every stride is padded); mc3_18: (1, 16, 16);
  - s3d: (8, 32, 32), rounded down by its last max-pool (after stretching to 5 frames);
  - tiny3d: (2^(n-1), 2^n, 2^n) for n blocks, rounded up: (8, 16, 16) by default;
  - ViT: its tubelet, rounded down: (2, 8, 8) for vit_tiny, (2, 16, 16) for vit_small and vit_base;
    each grid cell is one token (``mmssl.models.vit``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import video as tv_video

from mmssl.registry import VIDEO_ENCODERS, register_video_encoder


def repeat_frames(x: Tensor, min_frames: int) -> Tensor:
    """Stretch ``[B, C, T, H, W]`` to at least ``min_frames`` frames by repeating each frame in place.

    Frame order is kept (``abc`` -> ``aabbcc``); a single frame becomes a static clip.
    Returns ``x`` itself when it already has ``min_frames`` frames or more.
    """
    num_frames = x.shape[2]
    if num_frames >= min_frames:
        return x
    return x.repeat_interleave(-(-min_frames // num_frames), dim=2)


def mean_pool(grid: Tensor) -> Tensor:
    """The mean over the cells of a grid ``[B, D, T', H', W']`` -> ``[B, D]``."""
    return grid.mean(dim=(2, 3, 4))


class VideoEncoder(nn.Module):
    """Interface of every video encoder: float ``[B, C, T, H, W]`` -> pooled ``[B, feature_dim]``
    (``forward``) or the feature grid ``[B, map_dim, T', H', W']`` it pools (``feature_map``).

    Inputs shorter than ``min_frames`` (single frames included) are stretched by ``repeat_frames``,
    so frame tasks and clip tasks share one encoder. Subclasses set ``feature_dim`` and ``map_dim``
    (and ``in_channels``, ``min_frames`` where they differ from 3 and 1) and implement
    ``encode_map``, plus ``pool`` where theirs is not the global mean. An encoder with no grid may
    implement ``encode`` (pooled features) alone; its ``feature_map`` then raises.
    """

    feature_dim: int
    map_dim: int  # channels of the feature grid; feature_dim where pooling is a mean
    in_channels: int = 3
    min_frames: int = 1

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``[B, feature_dim]`` of float ``[B, in_channels, T, H, W]`` input."""
        return self.encode(self.check_clip(x))

    def feature_map(self, x: Tensor) -> Tensor:
        """The grid ``[B, map_dim, T', H', W']`` that ``forward`` pools, of float ``[B, in_channels, T, H, W]``
        input; cell (t, h, w) sees mostly the part of the clip at that place (strides: module docstring)."""
        return self.encode_map(self.check_clip(x))

    def check_clip(self, x: Tensor) -> Tensor:
        """``x`` checked to be float ``[B, in_channels, T, H, W]``, stretched to ``min_frames`` frames."""
        if x.ndim != 5 or x.shape[1] != self.in_channels or not x.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} expects float [B, {self.in_channels}, T, H, W], "
                f"got {x.dtype} {list(x.shape)}"
            )
        return repeat_frames(x, self.min_frames)

    def encode(self, x: Tensor) -> Tensor:
        """Pooled features ``[B, feature_dim]`` of a clip with at least ``min_frames`` frames."""
        return self.pool(self.encode_map(x))

    def encode_map(self, x: Tensor) -> Tensor:
        """Feature grid ``[B, map_dim, T', H', W']`` of a clip with at least ``min_frames`` frames."""
        raise NotImplementedError(f"{type(self).__name__} has no feature map")

    def pool(self, grid: Tensor) -> Tensor:
        """Feature grid ``[B, map_dim, T', H', W']`` -> ``[B, feature_dim]``: the mean over its cells."""
        return mean_pool(grid)


def build_video_encoder(name: str, **kwargs: object) -> VideoEncoder:
    """Build the video encoder registered under ``name``; unknown names raise ``UnknownNameError``."""
    return VIDEO_ENCODERS.build(name, **kwargs)


def resnet_pool(grid: Tensor) -> Tensor:
    """torchvision VideoResNet's pool (``AdaptiveAvgPool3d(1)``, flattened): the mean over the grid,
    computed as torchvision does so that features match its model bit for bit."""
    return F.adaptive_avg_pool3d(grid, 1).flatten(1)


@dataclass(frozen=True)
class TorchvisionSpec:
    """How to turn one torchvision video classifier into an encoder."""

    builder: Callable[..., nn.Module]
    feature_dim: int
    min_frames: int
    trunk: tuple[str, ...]  # the model's submodules, run in order, that make the feature grid
    pool: Callable[[Tensor], Tensor]  # what torchvision does between the grid and the classifier
    classifier: str  # attribute replaced by nn.Identity


RESNET_TRUNK = ("stem", "layer1", "layer2", "layer3", "layer4")
TORCHVISION_SPECS: dict[str, TorchvisionSpec] = {
    "r3d_18": TorchvisionSpec(tv_video.r3d_18, 512, 1, RESNET_TRUNK, resnet_pool, "fc"),
    "mc3_18": TorchvisionSpec(tv_video.mc3_18, 512, 1, RESNET_TRUNK, resnet_pool, "fc"),
    "r2plus1d_18": TorchvisionSpec(tv_video.r2plus1d_18, 512, 1, RESNET_TRUNK, resnet_pool, "fc"),
    "s3d": TorchvisionSpec(tv_video.s3d, 1024, 5, ("features",), mean_pool, "classifier"),
}


class TorchvisionVideoEncoder(VideoEncoder):
    """A torchvision video network without its classifier, kept whole as ``self.model``.

    The feature grid is the output of its last stage (``layer4``; ``features`` for s3d), with
    ``feature_dim`` channels; features are its global average, as torchvision computes it.

    ``export_state_dict()`` holds exactly the torchvision model's keys less the classifier, so
    ``torchvision.models.video.<name>(num_classes=n).load_state_dict(sd, strict=False)`` reports
    only ``fc.*`` (``classifier.*`` for s3d) missing and nothing unexpected.

    Short clips and small frames:
      - r3d_18, mc3_18, r2plus1d_18: every temporal stride is padded, so T=1 and any H, W >= 1 run
        as they are (``min_frames`` 1).
      - s3d: torchvision pools with a fixed (2, 7, 7) window and then averages what is left, which
        needs >= 13 frames at >= 209 px. Here that window is skipped, so torchvision's closing mean
        is a global average pool (the same number when the grid is exactly 2x7x7). The remaining
        unpadded (2, 2, 2) max-pool still needs 5 frames and H, W >= 17: shorter clips, T=1
        included, are stretched to 5 frames by ``repeat_frames``.

    ``weights`` is passed to the torchvision builder (e.g. ``"KINETICS400_V1"``, which downloads).
    """

    def __init__(self, name: str, weights: str | None = None) -> None:
        super().__init__()
        if name not in TORCHVISION_SPECS:
            raise ValueError(f"unknown torchvision video net {name!r}; known: {', '.join(TORCHVISION_SPECS)}")
        self.spec = TORCHVISION_SPECS[name]
        self.name = name
        self.feature_dim = self.map_dim = self.spec.feature_dim
        self.min_frames = self.spec.min_frames
        self.model = self.spec.builder(weights=weights)
        setattr(self.model, self.spec.classifier, nn.Identity())

    def encode_map(self, x: Tensor) -> Tensor:
        for stage in self.spec.trunk:
            x = getattr(self.model, stage)(x)
        return x

    def pool(self, grid: Tensor) -> Tensor:
        return self.spec.pool(grid)

    def export_state_dict(self) -> dict[str, Tensor]:
        """The backbone weights under torchvision's own key names (no wrapper prefix)."""
        return self.model.state_dict()


for _name in TORCHVISION_SPECS:
    register_video_encoder(_name)(partial(TorchvisionVideoEncoder, _name))


@register_video_encoder("tiny3d")
class Tiny3D(VideoEncoder):
    """CPU-sized 3D CNN: conv3d(3x3x3)-BN-ReLU blocks, an average pool over time and onto a
    ``grid`` x ``grid`` spatial layout, then a fully connected layer + ReLU (like CaffeNet's fc6).

    The first block halves H and W, every later block halves T, H and W (padded, so T=1 works).
    Keeping a coarse spatial layout, rather than a global pool, lets features say *where* things
    are, which frame-order tasks need. ``feature_dim`` is ``dim`` (256 by default); the feature
    grid is the last block's output, ``map_dim`` = ``widths[-1]`` channels, and ``pool`` is the
    layout pool and the fully connected layer.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), in_channels: int = 3, grid: int = 4,
                 dim: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            stride = (1, 2, 2) if index == 0 else (2, 2, 2)
            layers += [
                nn.Conv3d(channels, width, kernel_size=3, stride=stride, padding=1, bias=False),
                nn.BatchNorm3d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.layout = nn.AdaptiveAvgPool3d((1, grid, grid))
        self.fc = nn.Sequential(nn.Linear(widths[-1] * grid * grid, dim), nn.ReLU(inplace=True))
        self.in_channels = in_channels
        self.feature_dim = dim
        self.map_dim = widths[-1]

    def encode_map(self, x: Tensor) -> Tensor:
        return self.features(x)

    def pool(self, grid: Tensor) -> Tensor:
        return self.fc(self.layout(grid).flatten(1))
