"""Playback pace prediction (Wang, Jiao, Liu, "Self-supervised Video Representation Learning by Pace
Prediction", ECCV 2020) and its binary form, SpeedNet (Benaim, Ephrat, Lang, Mosseri, Freeman, Rubinstein,
Irani, Dekel, "SpeedNet: Learning the Speediness in Videos", CVPR 2020).

A clip of `clip_len` frames taken every p frames, p one of `paces` (1..4 in Wang et al.; SpeedNet's
normal vs twice the speed: [1, 2]); the label is p's index in `paces`. Window: a span of the fastest
pace's length, (clip_len - 1) * max(paces) + 1 frames, at a uniformly random start, and the clip centred
in it: no clip runs past the video's end (the reference loader wraps to the first frame there, a cut
that only fast clips show), and every pace's clip has the same distribution of places in the video
(drawing each pace's start over its own range would put slow clips later on average, so the place
would hint at the label). A video shorter than the fastest span is left out (too_short), as a video
too short for the other tasks' windows.

`every_pace`: each sample gives one clip per pace, centred alike (SpeedNet's normal and sped-up
versions of one video in the same batch), labels exactly balanced. Augmentation on the device: each
clip its own crop (a random spatial rescale: the displacement per frame in pixels varies with it, so
it alone cannot tell the pace; SpeedNet widens it), and with `frame_jitter` brightness and contrast
drawn per frame as in Wang et al.'s code. Head: one linear layer on the pooled features, cross-entropy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from einops import rearrange
from torch import nn

from mmssl.config import AT_LEAST_1, Bound, Config, ConfigError
from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import clip_span
from mmssl.io import TooShortError
from mmssl.models import VideoEncoder
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask, classification_loss
from mmssl.transforms.video import VideoAugment, to_model_input


@dataclass
class PaceConfig:
    """Pace prediction (docs/methods.md#pace): a clip at one of `paces` frame steps, len(paces) classes."""

    clip_len: int = 16
    paces: list[int] = field(default_factory=lambda: [1, 2, 3, 4])  # frame steps; SpeedNet: [1, 2]
    every_pace: bool = False  # each sample a clip at every pace (SpeedNet); else one pace drawn per sample
    frame_jitter: bool = True  # brightness and contrast drawn per frame (Wang et al.'s code)

    BOUNDS: ClassVar[dict[str, Bound]] = {"clip_len": Bound(2), "paces": AT_LEAST_1}


@register_task("pace", label_family="action", encoder_input="rgb",
               metric=PretextMetric("accuracy", chance=lambda task, _: 1 / len(task.config.paces)))
class Pace(PretextTask):
    config_class = PaceConfig
    smoke_overrides = ("task.pace.clip_len=6",)  # 6 frames at pace 4 span 21 of the 24-frame test videos
    feature_mode = "clip"

    def __init__(self, config: PaceConfig, augment: VideoAugment | None = None) -> None:
        if len(config.paces) < 2 or len(set(config.paces)) != len(config.paces):
            raise ConfigError(f"pace needs at least two distinct paces, got {config.paces}")
        self.config = config
        self.augment = augment and dataclasses.replace(augment, jitter_per_frame=config.frame_jitter)

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> Pace:
        return cls(config.task.pace, augment)

    @property
    def span(self) -> int:
        """Frames the fastest pace's clip covers: the window every clip is centred in."""
        return clip_span(self.config.clip_len, max(self.config.paces))

    def min_frames(self, fps: float) -> int:
        return self.span

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """A span of the fastest clip's length at a random start; the clip of the drawn pace (of every
        pace: one after another) centred in it; label: the pace's index in `paces`."""
        c = self.config
        if row.num_frames < self.span:
            raise TooShortError(row.path, f"{row.num_frames} frames cannot hold {c.clip_len} frames at pace "
                                          f"{max(c.paces)} ({self.span} frames)")
        start = int(rng.integers(row.num_frames - self.span + 1))
        labels = range(len(c.paces)) if c.every_pace else [int(rng.integers(len(c.paces)))]
        clips = [start + (self.span - clip_span(c.clip_len, c.paces[k])) // 2 + c.paces[k] * np.arange(c.clip_len)
                 for k in labels]
        return Window(frames=np.concatenate(clips), targets={} if c.every_pace else {"label": labels[0]})

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return nn.Linear(encoder.feature_dim, len(self.config.paces))

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        frames, labels = batch["frames"], batch.get("label")
        if self.config.every_pace:  # clip k of sample i at k * B + i, as its label
            paces = len(self.config.paces)
            frames = rearrange(frames, "b (k t) h w c -> (k b) t h w c", k=paces)
            labels = torch.arange(paces, device=frames.device).repeat_interleave(len(batch["frames"]))
        x = to_model_input(frames, self.augment)  # each clip its own crop
        return classification_loss(head(encoder(self.front_end(x))), labels)
