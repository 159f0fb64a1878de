"""Cross-pixel optical-flow similarity: Mahendran, Thewlis, Vedaldi, "Cross Pixel Optical-Flow
Similarity for Self-Supervised Learning", ACCV 2018.

Window: a frame t (or, with `clip_len` > 1, a clip of `clip_len` frames every `stride` ending at t)
and the frame `gap` frames after t. Workers: the optical flow from t to t + gap at the decoded size
(OpenCV's Farneback on the grey frames: its cost is a few percent of the decode, measured by
tools/bench_flow.py, so it is computed here rather than stored), then `num_pixels` pixels, a
`moving_share` of them among the moving pixels (flow longer than `motion_threshold`) and the rest
among the static ones, so the static background, most of a frame, does not fill the sample. The
sample keeps the frames (t + gap last, which the encoder never sees), the pixels and their flow.

Device: brightness and contrast jitter only (a crop or flip would move the pixels away from their
flow); the encoder's feature grid of the frame (or clip), averaged over time, a 1x1-conv MLP to
`embed_dim`-d embeddings, read at every sampled pixel by bilinear interpolation (the paper's
hypercolumns of a VGG). Loss: `CrossPixelFlowLoss`, the cross-entropy between the column-normalised
flow kernel (Gaussian of the flow difference) and embedding kernel (scaled cosine) over the sampled
pixels of each image. Metric: the loss (lower is better); its trivial level log(num_pixels - 1), the
loss of constant embeddings (a uniform embedding kernel), whatever the flow. Logged beside it:
`neighbour_accuracy`, how often the pixel whose embedding is nearest to a pixel's moves like it (flow
kernel at least 1/2), and `neighbour_share`, the share of such pixels (a random pick's accuracy; a
spatially smooth embedding beats it without learning anything, as flow is smooth too).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, SHARE, Bound, Config
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import clip_span, random_clip
from mmssl.losses import CrossPixelFlowLoss
from mmssl.models import VideoEncoder
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask
from mmssl.transforms.video import VideoAugment, to_model_input

# Farneback's settings: OpenCV's documented example (pyramid scale 0.5, 3 levels, 3 iterations, 5 px
# polynomial neighbourhood with sigma 1.2) with a 7 px window for 64 px frames instead of 15: a moving
# shape's flow spreads about half a window onto the still pixels around it (6 px here, 10 at 15)
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 7, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2,
             "flags": 0}


@dataclass
class FlowSimilarityConfig:
    """Cross-pixel flow similarity (docs/methods.md#flow_similarity): pixel embeddings of a frame whose
    similarities match those of the pixels' optical flow."""

    gap: int = 4  # frames between the two frames of the flow
    clip_len: int = 1  # frames the encoder sees, ending at the flow's first frame (1: a frame, the paper's)
    stride: int = 1  # between the clip's frames
    num_pixels: int = 256  # sampled per image
    moving_share: float = 0.5  # of the sample drawn among the moving pixels
    motion_threshold: float = 0.5  # flow length (px at the decoded size) above which a pixel moves
    sigma: float = 1.0  # the flow kernel's width, px [unverified]
    scale: float = 10.0  # the embedding kernel's s [unverified]
    embed_dim: int = 16
    hidden_dim: int = 128

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "gap": AT_LEAST_1, "clip_len": AT_LEAST_1, "stride": AT_LEAST_1, "num_pixels": Bound(2),
        "moving_share": SHARE, "motion_threshold": NON_NEGATIVE, "sigma": POSITIVE, "scale": POSITIVE,
        "embed_dim": AT_LEAST_1, "hidden_dim": AT_LEAST_1}


def optical_flow(first: Tensor, second: Tensor) -> np.ndarray:
    """Farneback's dense flow from uint8 RGB frame `first` [H, W, 3] to `second`: float32 [H, W, 2],
    (dx, dy) in pixels per pixel of `first` (x right, y down)."""
    grey = [cv2.cvtColor(frame.numpy(), cv2.COLOR_RGB2GRAY) for frame in (first, second)]
    return cv2.calcOpticalFlowFarneback(*grey, None, **FARNEBACK)


def balanced_pixels(moving: np.ndarray, count: int, moving_share: float, rng: np.random.Generator) -> np.ndarray:
    """`count` flat indices into the bool mask `moving`: round(moving_share * count) of them among its
    moving pixels (drawn again where there are fewer; none where none moves), the rest among the
    static ones (likewise), without repeats where there are enough."""
    groups = [np.flatnonzero(moving), np.flatnonzero(~moving)]
    wanted = round(moving_share * count)
    if not len(groups[0]):
        wanted = 0
    elif not len(groups[1]):
        wanted = count
    picks = [rng.choice(group, size=size, replace=len(group) < size)
             for group, size in zip(groups, (wanted, count - wanted)) if size]
    return np.concatenate(picks)


class FlowEmbeddingHead(nn.Module):
    """1x1-conv MLP from the feature grid to pixel embeddings, and the loss."""

    def __init__(self, map_dim: int, config: FlowSimilarityConfig) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Conv2d(map_dim, config.hidden_dim, 1), nn.ReLU(inplace=True),
                                   nn.Conv2d(config.hidden_dim, config.embed_dim, 1))
        self.criterion = CrossPixelFlowLoss(config.scale, config.sigma)

    def forward(self, grid: Tensor, pixels: Tensor, size: tuple[int, int]) -> Tensor:
        """grid [B, D, h, w], flat pixel indices [B, n] into frames of `size` (H, W) -> embeddings [B, n, E]."""
        height, width = size
        xy = torch.stack([pixels % width, pixels // width], dim=-1).to(grid.dtype)
        where = (xy + 0.5) / xy.new_tensor([width, height]) * 2 - 1  # pixel centres, as align_corners=False
        read = F.grid_sample(self.embed(grid), where[:, :, None], mode="bilinear", align_corners=False)
        return read.squeeze(-1).transpose(1, 2)


@register_task("flow_similarity", label_family="action", encoder_input="rgb",
               metric=PretextMetric("loss", higher_is_better=False,
                                    chance=lambda task, _: math.log(task.config.num_pixels - 1)))
class FlowSimilarity(PretextTask):
    config_class = FlowSimilarityConfig
    feature_mode = "frames"

    def __init__(self, config: FlowSimilarityConfig, augment: VideoAugment | None = None) -> None:
        self.config = config
        self.augment = augment and dataclasses.replace(augment, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
                                                       flip=False)
        if config.clip_len > 1:
            self.feature_mode = "clip"

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> FlowSimilarity:
        return cls(config.task.flow_similarity, augment)

    def min_frames(self, fps: float) -> int:
        return clip_span(self.config.clip_len, self.config.stride) + self.config.gap

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """The clip (or frame) ending at a random t, then frame t + gap."""
        c = self.config
        clip = random_clip(row.num_frames - c.gap, c.clip_len, c.stride, rng)
        return Window(frames=np.append(clip, clip[-1] + c.gap))

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """frames [clip_len + 1, H, W, 3] (t + gap last), pixels [n] (flat indices), flow [n, 2] (float32)."""
        c = self.config
        flow = optical_flow(clip.video[-2], clip.video[-1]).reshape(-1, 2)
        pixels = balanced_pixels(np.linalg.norm(flow, axis=1) > c.motion_threshold, c.num_pixels, c.moving_share, rng)
        return {"frames": clip.video, "pixels": torch.from_numpy(pixels), "flow": torch.from_numpy(flow[pixels])}

    def views(self, sample: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """The frame the encoder sees with the sampled pixels marked (moving red, static blue), and the
        flow field as colours (hue: direction, brightness: length)."""
        frames, pixels = sample["frames"], sample["pixels"]
        flow = optical_flow(frames[-2], frames[-1])
        marked = frames[-2].clone().reshape(-1, 3)
        moving = sample["flow"].norm(dim=1) > self.config.motion_threshold
        marked[pixels] = torch.where(moving[:, None], torch.tensor([255, 0, 0], dtype=torch.uint8),
                                     torch.tensor([0, 0, 255], dtype=torch.uint8))
        return [(f"{int(moving.sum())} moving / {len(pixels)} pixels", marked.reshape(frames.shape[1:])),
                (f"flow to +{self.config.gap} (longest {np.linalg.norm(flow, axis=-1).max():.1f} px)",
                 torch.from_numpy(flow_colours(flow)))]

    def predicted_views(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder,
                        head: nn.Module) -> list[list[tuple[str, torch.Tensor]]]:
        """Per sample: the frame the encoder sees, its flow as colours, and the embedding of every pixel
        (read as the loss reads the sampled ones) by its 3 principal components as RGB: pixels that the
        model expects to move alike share a colour."""
        frames = batch["frames"]
        size = tuple(frames.shape[2:4])
        x = to_model_input(frames[:, :-1])
        pixels = torch.arange(size[0] * size[1]).expand(len(frames), -1)
        embeddings = head(encoder.feature_map(self.front_end(x)).mean(dim=2), pixels, size).float()
        views = []
        for frame, following, embedding in zip(frames[:, -2], frames[:, -1], embeddings):
            centred = embedding - embedding.mean(0)
            _, values, directions = torch.linalg.svd(centred, full_matrices=False)
            components = F.pad(centred @ directions[:3].T, (0, max(0, 3 - len(directions))))  # [H W, 3]
            low, high = components.quantile(0.02, dim=0), components.quantile(0.98, dim=0)
            colours = ((components - low) / (high - low).clamp(min=1e-12)).clamp(0, 1).mul(255).round()
            explained = float((values[:3] ** 2).sum() / (values ** 2).sum().clamp(min=1e-12))
            views.append([("frame", frame), (f"flow to +{self.config.gap}", torch.from_numpy(flow_colours(
                optical_flow(frame, following)))), (f"embedding: 3 components\n({explained:.0%} of its variance)",
                                                    colours.to(torch.uint8).reshape(*size, 3))])
        return views

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return FlowEmbeddingHead(encoder.map_dim, self.config)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        frames = batch["frames"][:, :-1]  # never the flow's second frame
        x = to_model_input(frames, self.augment)
        grid = encoder.feature_map(self.front_end(x)).mean(dim=2)
        embeddings = head(grid, batch["pixels"], tuple(frames.shape[2:4])).float()
        flow = batch["flow"].float()  # the target in float32, also under bf16 autocast
        log_phi, target = head.criterion.kernels(embeddings, flow)
        return {"loss": head.criterion.cross_entropy(log_phi, target), **head.criterion.metrics(log_phi, flow)}


def flow_colours(flow: np.ndarray) -> np.ndarray:
    """float [H, W, 2] flow -> uint8 [H, W, 3] RGB: hue the direction, value the length (longest: full)."""
    length, angle = cv2.cartToPolar(flow[..., 0], flow[..., 1], angleInDegrees=True)
    hsv = np.stack([angle / 2, np.full_like(length, 255), 255 * length / max(float(length.max()), 1e-6)], axis=-1)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
