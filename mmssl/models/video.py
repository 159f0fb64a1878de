"""Video encoders: float clips ``[B, C, T, H, W]`` (or single frames, T=1) -> features ``[B, D]``.

Input is float RGB (C=3, channels in R, G, B order), already scaled and normalised on the device
by ``mmssl.transforms``; encoders do no normalisation of their own. Build encoders by name with
``build_video_encoder``; other modules add theirs with ``@register_video_encoder("name")``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

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


class VideoEncoder(nn.Module):
    """Interface of every video encoder: ``forward(x: float [B, C, T, H, W]) -> [B, feature_dim]``.

    Inputs shorter than ``min_frames`` (single frames included) are stretched by ``repeat_frames``,
    so frame tasks and clip tasks share one encoder. Subclasses set ``feature_dim`` (and
    ``in_channels``, ``min_frames`` where they differ from 3 and 1) and implement ``encode``.
    """

    feature_dim: int
    in_channels: int = 3
    min_frames: int = 1

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``[B, feature_dim]`` of float ``[B, in_channels, T, H, W]`` input."""
        if x.ndim != 5 or x.shape[1] != self.in_channels or not x.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} expects float [B, {self.in_channels}, T, H, W], "
                f"got {x.dtype} {list(x.shape)}"
            )
        return self.encode(repeat_frames(x, self.min_frames))

    def encode(self, x: Tensor) -> Tensor:
        """Pooled features ``[B, feature_dim]`` of a clip with at least ``min_frames`` frames."""
        raise NotImplementedError


def build_video_encoder(name: str, **kwargs: object) -> VideoEncoder:
    """Build the video encoder registered under ``name``; unknown names raise ``UnknownNameError``."""
    return VIDEO_ENCODERS.build(name, **kwargs)


@dataclass(frozen=True)
class TorchvisionSpec:
    """How to turn one torchvision video classifier into an encoder."""

    builder: Callable[..., nn.Module]
    feature_dim: int
    min_frames: int
    removed: tuple[str, ...]  # attributes replaced by nn.Identity: the classifier (and s3d's pool)


TORCHVISION_SPECS: dict[str, TorchvisionSpec] = {
    "r3d_18": TorchvisionSpec(tv_video.r3d_18, 512, 1, ("fc",)),
    "mc3_18": TorchvisionSpec(tv_video.mc3_18, 512, 1, ("fc",)),
    "r2plus1d_18": TorchvisionSpec(tv_video.r2plus1d_18, 512, 1, ("fc",)),
    "s3d": TorchvisionSpec(tv_video.s3d, 1024, 5, ("avgpool", "classifier")),
}


class TorchvisionVideoEncoder(VideoEncoder):
    """A torchvision video network without its classifier, kept whole as ``self.model``.

    ``export_state_dict()`` holds exactly the torchvision model's keys less the classifier, so
    ``torchvision.models.video.<name>(num_classes=n).load_state_dict(sd, strict=False)`` reports
    only ``fc.*`` (``classifier.*`` for s3d) missing and nothing unexpected.

    Short clips and small frames:
      - r3d_18, mc3_18, r2plus1d_18: every temporal stride is padded, so T=1 and any H, W >= 1 run
        as they are (``min_frames`` 1); features end in torchvision's global average pool.
      - s3d: torchvision pools with a fixed (2, 7, 7) window and then averages what is left, which
        needs >= 13 frames at >= 209 px. Here that window is dropped, so torchvision's closing mean
        is a global average pool (the same number when the map is exactly 2x7x7). The remaining
        unpadded (2, 2, 2) max-pool still needs 5 frames and H, W >= 17: shorter clips, T=1
        included, are stretched to 5 frames by ``repeat_frames``.

    ``weights`` is passed to the torchvision builder (e.g. ``"KINETICS400_V1"``, which downloads).
    """

    def __init__(self, name: str, weights: str | None = None) -> None:
        super().__init__()
        if name not in TORCHVISION_SPECS:
            raise ValueError(f"unknown torchvision video net {name!r}; known: {', '.join(TORCHVISION_SPECS)}")
        spec = TORCHVISION_SPECS[name]
        self.name = name
        self.feature_dim = spec.feature_dim
        self.min_frames = spec.min_frames
        self.model = spec.builder(weights=weights)
        for attribute in spec.removed:
            setattr(self.model, attribute, nn.Identity())

    def encode(self, x: Tensor) -> Tensor:
        return self.model(x)

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
    are, which frame-order tasks need. ``feature_dim`` is ``dim`` (256 by default).
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
        self.pool = nn.AdaptiveAvgPool3d((1, grid, grid))
        self.fc = nn.Sequential(nn.Linear(widths[-1] * grid * grid, dim), nn.ReLU(inplace=True))
        self.in_channels = in_channels
        self.feature_dim = dim

    def encode(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))
