"""DINO on clips, SVT-style: a student matches an EMA teacher's sharpened, centred outputs across views
of one video (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021;
on video: Ranasinghe, Naseer, Khan, Khan, Ryoo, "Self-supervised Video Transformer" (SVT), CVPR 2022).

One decode holds every view of a video, view after view: `global_views` clips of `global_frames`
frames spread evenly over a random share in [global_span, 1] of the video, and `local_views` short
clips of `local_frames` consecutive frames at a stride drawn from `local_strides` (another frame
rate each). On the device each view gets its own crop and colour: global views at data.frame_size
with crop area in `global_crop_scale`, local views at `local_size` px with area in `local_crop_scale`.
The teacher (a frozen copy of encoder and DINO head, following the student by EMA on BYOL's cosine
schedule from `momentum` to 1) sees the global views, the student every view; the loss is
mmssl.losses.DINOLoss (centre all-reduced, updated after the loss), the teacher's temperature raised
linearly from `teacher_temp_start` to `teacher_temp` over `teacher_warmup_epochs`; the head's last
layer is frozen for `freeze_last_layer_epochs`. An epoch here is total_steps / train.epochs steps.

Collapse: the loss dict logs the teacher's mean per-sample entropy, the entropy of its batch-mean
distribution and the teacher-student KL. After the temperature warm-up, `collapse_patience`
consecutive steps with the batch-mean entropy below `collapse_share` * log K (one output dominating)
or the per-sample entropy above (1 - `collapse_share`) * log K (uniform outputs) stop the run with
TeacherCollapseError (docs/methods.md#dino).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from mmssl.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, SHARE, SHARE_ABOVE_0, Bound, Config, ConfigError
from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.distributed import reduce_mean
from mmssl.errors import MmsslError
from mmssl.losses import DINOLoss
from mmssl.losses.dino import entropy
from mmssl.models import VideoEncoder
from mmssl.models.heads import DINOHead
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask
from mmssl.tasks.clip_contrastive import ClipContrastiveHead, Momentum
from mmssl.transforms.video import VideoAugment, colour_distortion, to_model_input, unnormalize


class TeacherCollapseError(MmsslError):
    """The teacher's outputs collapsed (one dimension dominating, or uniform): the run stops."""


@dataclass
class DINOConfig:
    """DINO on clips (docs/methods.md#dino). Defaults are DINO's where it has one, sized down."""

    global_views: int = 2
    global_frames: int = 8
    global_span: float = 0.8  # a global view spreads over a random share in [global_span, 1] of the video
    local_views: int = 4  # DINO: 8 (local crops of images); SVT: 8
    local_frames: int = 4
    local_strides: list[int] = field(default_factory=lambda: [1, 2])  # each local view's frame rate, drawn
    local_size: int = 32  # px (data.frame_size: the global views')
    global_crop_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])  # DINO's
    local_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])  # DINO's
    out_dim: int = 1024  # K (DINO: 65536)
    hidden_dim: int = 512  # DINO: 2048
    bottleneck_dim: int = 128  # DINO: 256
    head_bn: bool = False  # BatchNorm in the head's MLP (DINO's use_bn_in_head)
    student_temp: float = 0.1
    teacher_temp_start: float = 0.04
    teacher_temp: float = 0.04  # reached after the warm-up (DINO: 0.04 by default, up to 0.07)
    teacher_warmup_epochs: float = 30.0
    center_momentum: float = 0.9
    momentum: float = 0.996  # the teacher's EMA rate, cosine to 1
    freeze_last_layer_epochs: float = 1.0
    hue: float = 0.2  # colour distortion per view, as clip_contrastive's
    grayscale: float = 0.2
    collapse_share: float = 0.05  # of log K: the margin of both collapse thresholds
    collapse_patience: int = 5  # consecutive steps past a threshold before the run stops

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "global_views": Bound(2), "global_frames": AT_LEAST_1, "global_span": SHARE_ABOVE_0,
        "local_views": AT_LEAST_1, "local_frames": AT_LEAST_1, "local_strides": AT_LEAST_1, "local_size": AT_LEAST_1,
        "global_crop_scale": SHARE_ABOVE_0, "local_crop_scale": SHARE_ABOVE_0, "out_dim": Bound(2),
        "hidden_dim": AT_LEAST_1, "bottleneck_dim": AT_LEAST_1, "student_temp": POSITIVE,
        "teacher_temp_start": POSITIVE, "teacher_temp": POSITIVE, "teacher_warmup_epochs": NON_NEGATIVE,
        "center_momentum": SHARE, "momentum": SHARE, "freeze_last_layer_epochs": NON_NEGATIVE, "hue": Bound(0, 0.5),
        "grayscale": SHARE, "collapse_share": Bound(0, 0.5, strict=True), "collapse_patience": AT_LEAST_1}


def spread_clip(num_frames: int, length: int, span_share: float, rng: np.random.Generator) -> np.ndarray:
    """`length` frame numbers spread evenly over a random stretch of `span_share` of `num_frames` frames
    (at least `length` frames long)."""
    span = min(max(length, round(span_share * num_frames)), num_frames)
    start = rng.integers(0, num_frames - span + 1)
    return np.linspace(start, start + span - 1, length).round().astype(np.int64)


@register_task("dino", label_family="object", encoder_input="rgb",
               metric=PretextMetric("kl", higher_is_better=False))
class DINO(PretextTask):
    config_class = DINOConfig
    feature_mode = "clip"
    smoke_overrides = ("task.dino.out_dim=64", "task.dino.local_views=2", "task.dino.local_size=16")

    def __init__(self, config: DINOConfig, augment: VideoAugment | None = None, epochs: int = 1) -> None:
        if len(config.global_crop_scale) != 2 or len(config.local_crop_scale) != 2 or not config.local_strides:
            raise ConfigError("task.dino: global_crop_scale and local_crop_scale are [low, high] area shares, "
                              "local_strides a non-empty list of strides")
        self.config, self.epochs = config, epochs
        self.global_augment = self.local_augment = None  # None: no augmentation at all
        if augment is not None:
            self.global_augment = dataclasses.replace(augment, crop_scale=tuple(config.global_crop_scale))
            self.local_augment = dataclasses.replace(augment, crop_scale=tuple(config.local_crop_scale))
        self.step, self.total_steps, self.collapsed_steps = 0, 1, 0

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> DINO:
        return cls(config.task.dino, augment, config.train.epochs)

    def set_step(self, step: int, total_steps: int) -> None:
        self.step, self.total_steps = step, total_steps

    @property
    def epoch(self) -> float:
        """The run's progress in epochs of total_steps / train.epochs steps."""
        return self.step * self.epochs / self.total_steps

    @property
    def teacher_temp(self) -> float:
        c = self.config
        share = min(self.epoch / c.teacher_warmup_epochs, 1.0) if c.teacher_warmup_epochs else 1.0
        return c.teacher_temp_start + share * (c.teacher_temp - c.teacher_temp_start)

    @property
    def momentum(self) -> float:
        """The teacher's EMA rate for the update at this step's first forward."""
        return Momentum(self.config.momentum, "cosine").rate(self.step, self.total_steps)

    def min_frames(self, fps: float) -> int:
        c = self.config
        return max(c.global_frames, (c.local_frames - 1) * max(c.local_strides) + 1)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """The global views' frames, then the local views', in one window (one decode)."""
        c, n = self.config, row.num_frames
        views = [spread_clip(n, c.global_frames, rng.uniform(c.global_span, 1.0), rng) for _ in range(c.global_views)]
        for _ in range(c.local_views):
            stride = int(rng.choice(c.local_strides))
            start = rng.integers(0, n - (c.local_frames - 1) * stride)
            views.append(start + stride * np.arange(c.local_frames))
        return Window(frames=np.concatenate(views))

    def model_views(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 [B, T, H, W, 3] (the window's frames) -> the global views [G * B, C, Tg, S, S] and the
        local views [L * B, C, Tl, s, s] (view-major), each cropped and coloured on its own."""
        c = self.config
        split = c.global_views * c.global_frames
        g = rearrange(frames[:, :split], "b (v t) h w c -> (v b) t h w c", v=c.global_views)
        loc = rearrange(frames[:, split:], "b (v t) h w c -> (v b) t h w c", v=c.local_views)
        x_global = to_model_input(g, self.global_augment)
        x_local = to_model_input(loc, self.local_augment, out_size=c.local_size)
        if self.global_augment is not None:
            x_global, x_local = (colour_distortion(x, c.hue, c.grayscale) for x in (x_global, x_local))
        return x_global, x_local

    def views(self, sample: dict[str, Tensor]) -> list[tuple[str, Tensor]]:
        """Each view as the student gets it (cropped, coloured, resized): its frames side by side."""
        c = self.config
        x_global, x_local = self.model_views(sample["frames"][None])
        views = [(f"global {i + 1}", x) for i, x in enumerate(x_global)]
        views += [(f"local {i + 1} ({c.local_size} px)", x) for i, x in enumerate(x_local)]
        return [(caption, _strip(x)) for caption, x in views]

    def build_head(self, encoder: VideoEncoder) -> ClipContrastiveHead:
        c = self.config
        projector = DINOHead(encoder.feature_dim, c.hidden_dim, c.bottleneck_dim, c.out_dim, c.head_bn)
        return ClipContrastiveHead(projector, DINOLoss(c.out_dim, c.student_temp, c.center_momentum), encoder=encoder)

    def loss(self, batch: dict[str, Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, Tensor]:
        c = self.config
        x_global, x_local = (self.front_end(x) for x in self.model_views(batch["frames"]))
        head.follow(encoder, self.step, self.momentum)  # before the teacher's forward
        head.projector.last_layer_frozen = self.epoch < c.freeze_last_layer_epochs
        student = torch.cat([head.project(encoder(x_global)), head.project(encoder(x_local))])
        student_out = rearrange(student, "(v b) k -> v b k", b=len(batch["frames"]))
        teacher_out = rearrange(head.embed_target(x_global), "(v b) k -> v b k", v=c.global_views)
        out = teacher_stats(head.criterion.teacher_probs(teacher_out, self.teacher_temp))  # before the centre moves
        out["loss"] = head.criterion(student_out, teacher_out, self.teacher_temp)
        out["kl"] = out["loss"].detach() - out["teacher_entropy"]
        self.check_collapse(out)
        return out

    def check_collapse(self, out: dict[str, Tensor]) -> None:
        """After the temperature warm-up, stop the run after `collapse_patience` consecutive steps past
        a collapse threshold (on every rank alike: the entropies are means over the ranks)."""
        c = self.config
        if self.epoch < c.teacher_warmup_epochs:
            return
        log_k = math.log(c.out_dim)
        batch_entropy, teacher_entropy = float(out["batch_entropy"]), float(reduce_mean(out["teacher_entropy"]))
        collapsed = batch_entropy < c.collapse_share * log_k or teacher_entropy > (1 - c.collapse_share) * log_k
        self.collapsed_steps = self.collapsed_steps + 1 if collapsed else 0
        if self.collapsed_steps >= c.collapse_patience:
            dominated = batch_entropy < c.collapse_share * log_k
            kind, remedy = (("one output dominates", "raise task.dino.teacher_temp or lower center_momentum") if dominated
                            else ("its outputs are uniform", "lower task.dino.teacher_temp, out_dim or optim.lr"))
            raise TeacherCollapseError(
                f"dino: the teacher collapsed at step {self.step} ({kind} for {self.collapsed_steps} steps: "
                f"batch-mean entropy {batch_entropy:.3f}, per-sample entropy {teacher_entropy:.3f}, log K "
                f"{log_k:.3f}; thresholds {c.collapse_share:g} and {1 - c.collapse_share:g} of log K); stopping "
                f"the run: {remedy} (docs/methods.md#dino)")


@torch.no_grad()
def teacher_stats(probs: Tensor) -> dict[str, Tensor]:
    """The teacher's mean per-sample entropy on this rank, and the entropy of its mean distribution over
    the global batch (all-reduced), of its probabilities [Vt, B, K]."""
    return {"teacher_entropy": entropy(probs).mean(), "batch_entropy": entropy(reduce_mean(probs.mean(dim=(0, 1))))}


def _strip(x: Tensor) -> Tensor:
    """A view's model input [C, T, h, w] -> its frames side by side, uint8 [h, T * w, 3]."""
    pixels = unnormalize(x[None])[0].clamp(0, 1).mul(255).round().to(torch.uint8)
    return rearrange(pixels, "c t h w -> h (t w) c")
