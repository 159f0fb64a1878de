"""Cross-modal InfoNCE between a clip and its audio (AVID: Morgado, Vasconcelos, Misra,
"Audio-Visual Instance Discrimination with Cross-Modal Agreement", CVPR 2021; CLIP-style symmetric
form): the shared contrastive head embeds both, the audio of the same clip is the positive and
the other audios of the (gathered, multi-GPU) batch are the negatives, in both directions.
The temperature is a config value (AVID's 0.07) or the shared head's learnable one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from mmssl.config import AT_LEAST_1, POSITIVE, Bound, Config
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import clip_and_audio, frames_for
from mmssl.losses import InfoNCELoss
from mmssl.models import VideoEncoder
from mmssl.models.audio import build_audio_encoder
from mmssl.models.heads import AudioVisualHead, ContrastiveHead
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask
from mmssl.transforms.video import VideoAugment, to_model_input


@dataclass
class AVContrastiveConfig:
    """Cross-modal InfoNCE between clips and their audio (AVID / CLIP-style; docs/methods.md#av_contrastive)."""

    clip_len: int = 8
    stride: int = 2
    audio_s: float = 1.0
    temperature: float = 0.07
    learn_temperature: bool = False  # true: the shared head's learnable temperature (CLIP)
    embed_dim: int = 128

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "clip_len": AT_LEAST_1, "stride": AT_LEAST_1, "audio_s": POSITIVE, "temperature": POSITIVE,
        "embed_dim": AT_LEAST_1}


@register_task("av_contrastive", label_family="object", encoder_input="rgb",
               metric=PretextMetric("v2a_top1_in_batch", chance=lambda _, batch_size: 1 / batch_size))
class AVContrastive(PretextTask):
    config_class = AVContrastiveConfig
    needs_audio = True

    def __init__(self, config: AVContrastiveConfig, audio_encoder: str, augment: VideoAugment | None = None,
                 sample_rate: int = 16000) -> None:
        self.config = config
        self.audio_encoder = audio_encoder
        self.augment = augment
        self.sample_rate = sample_rate
        self.info_nce = InfoNCELoss(config.temperature, gather_distributed=True)

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> AVContrastive:
        return cls(config.task.av_contrastive, config.model.audio_encoder, augment)

    def min_frames(self, fps: float) -> int:
        return frames_for(self.config.audio_s, fps)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """A clip and `audio_s` seconds of audio centred on it."""
        return clip_and_audio(row, self.config.clip_len, self.config.stride, self.config.audio_s, rng)

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return {"frames": clip.video, "audio": clip.audio}

    def build_head(self, encoder: VideoEncoder) -> AudioVisualHead:
        audio = build_audio_encoder(self.audio_encoder)
        shared = ContrastiveHead(encoder.feature_dim, audio.feature_dim, self.config.embed_dim,
                                 temperature=self.config.temperature,  # learnable: starts there
                                 learn_temperature=self.config.learn_temperature)
        return AudioVisualHead(audio, shared=shared)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        video = head.shared.embed_video(encoder(self.front_end(to_model_input(batch["frames"], self.augment))))
        audio = head.shared.embed_audio(head.audio(batch["audio"]))
        scale = head.shared.scale if self.config.learn_temperature else None
        loss = self.info_nce(video, audio, scale=scale)
        with torch.no_grad():
            accuracy = ((video @ audio.T).argmax(-1) == torch.arange(len(video), device=video.device)).float().mean()
        return {"loss": loss, "v2a_top1_in_batch": accuracy}
