"""Audio-visual correspondence: L3-Net (Arandjelovic & Zisserman, "Look, Listen and Learn", ICCV
2017) with AVTS hard negatives (Korbar, Tran, Torresani, "Cooperative Learning of Audio and Video
Models from Self-Supervised Synchronization", NeurIPS 2018).

A sample is a clip (or, with clip_len 1, L3's single frame) and `audio_s` seconds of audio centred
on it. Positive (label 1): the clip with its own audio. Negatives (label 0), built on the device
from the batch at no extra decoding: easy, the audio of another sample of the batch (another
video); hard (AVTS), audio of the *same* video shifted by at least `min_offset_s` (>= audio_s, so
it never overlaps the positive window), decoded from the same sample's longer audio span.
Curriculum: easy negatives only for the first `curriculum_share` of training, then `hard_share`
of the negatives are hard. Loss: L3's fusion head (concatenated features -> Linear 128 -> ReLU ->
Linear 2, cross-entropy), or AVTS's margin contrastive loss on the shared head's embeddings:
y * d^2 + (1 - y) * max(margin - d, 0)^2 with d = ||v - a||.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmssl.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, SHARE, Bound, Config, ConfigError
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import clip_with_audio, frames_for
from mmssl.losses import MarginContrastiveLoss
from mmssl.models import VideoEncoder
from mmssl.models.audio import build_audio_encoder
from mmssl.models.heads import AudioVisualHead, ContrastiveHead, mlp
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric, PretextTask, majority_share
from mmssl.transforms.video import VideoAugment, to_model_input

NO_HARD = -1


@dataclass
class AVCConfig:
    """Audio-visual correspondence (L3) with AVTS hard negatives (docs/methods.md#avc)."""

    clip_len: int = 8  # 1: L3's single frame
    stride: int = 2
    audio_s: float = 1.0
    positive_share: float = 0.5
    hard_negatives: bool = True
    min_offset_s: float = 1.0  # a hard negative's shift: >= audio_s (checked), so it never overlaps the positive
    hard_share: float = 0.25  # of the negatives, once the curriculum allows hard ones
    curriculum_share: float = 0.3  # share of training with easy negatives only
    loss: str = "ce"  # ce (L3's fusion head) or margin (AVTS)
    margin: float = 1.0  # eta of the margin loss
    embed_dim: int = 128
    fusion_dim: int = 128

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "clip_len": AT_LEAST_1, "stride": AT_LEAST_1, "audio_s": POSITIVE, "positive_share": SHARE,
        "min_offset_s": NON_NEGATIVE, "hard_share": SHARE, "curriculum_share": SHARE, "margin": NON_NEGATIVE,
        "embed_dim": AT_LEAST_1, "fusion_dim": AT_LEAST_1}


@register_task("avc", label_family="object", encoder_input="rgb",
               metric=PretextMetric("accuracy", chance=lambda task, _: majority_share(task.config.positive_share)))
class AVC(PretextTask):
    config_class = AVCConfig
    needs_audio = True

    def __init__(self, config: AVCConfig, audio_encoder: str, augment: VideoAugment | None = None,
                 sample_rate: int = 16000) -> None:
        if config.hard_negatives and config.min_offset_s < config.audio_s:
            raise ConfigError(f"task.avc.min_offset_s={config.min_offset_s} is shorter than audio_s={config.audio_s}: "
                             "a hard negative would overlap its positive (AVTS)")
        self.config = config
        self.audio_encoder = audio_encoder
        self.augment = augment
        self.sample_rate = sample_rate
        self.hard_share = 0.0  # set by the curriculum in set_step
        self.feature_mode = "frames" if config.clip_len == 1 else "clip"
        self.margin_loss = MarginContrastiveLoss(config.margin, scale=1.0)  # AVTS's form

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> AVC:
        return cls(config.task.avc, config.model.audio_encoder, augment)

    def set_step(self, step: int, total_steps: int) -> None:
        past_curriculum = step >= self.config.curriculum_share * total_steps
        self.hard_share = self.config.hard_share if self.config.hard_negatives and past_curriculum else 0.0

    def min_frames(self, fps: float) -> int:
        return frames_for(self.config.audio_s, fps)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """The clip, the positive audio centred on it and (with hard negatives on, when the video is
        long enough) a hard negative shifted by >= min_offset_s; one audio span covering both is decoded."""
        c = self.config
        duration = row.num_frames / row.fps
        frames, positive = clip_with_audio(row, c.clip_len, c.stride, c.audio_s, rng)
        sides = (-1, 1) if c.hard_negatives else ()
        shifts = [s for s in (self._shift(positive, duration, side, rng) for side in sides) if s is not None]
        hard = positive + shifts[rng.integers(len(shifts))] if shifts else None
        start = min(positive, hard) if hard is not None else positive
        end = max(positive, hard) + c.audio_s if hard is not None else positive + c.audio_s
        offset = lambda t: round((t - start) * self.sample_rate)  # noqa: E731
        return Window(frames=frames, audio_start_s=start, audio_duration_s=end - start,
                      targets={"positive_offset": offset(positive),
                               "hard_offset": offset(hard) if hard is not None else NO_HARD})

    def _shift(self, positive: float, duration: float, side: int, rng: np.random.Generator) -> float | None:
        """A shift on `side` (-1 earlier, +1 later) of at least min_offset_s that stays in the video."""
        c = self.config
        room = positive if side < 0 else duration - c.audio_s - positive
        if room < c.min_offset_s:
            return None
        return side * float(rng.uniform(c.min_offset_s, room))

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        length = round(self.config.audio_s * self.sample_rate)
        targets = clip.window.targets
        hard = targets["hard_offset"]
        return {
            "frames": clip.video,
            "audio": clip.audio[targets["positive_offset"]:][:length],
            "hard_audio": clip.audio[hard:][:length] if hard != NO_HARD else torch.zeros(length),
            "has_hard": torch.tensor(hard != NO_HARD),
        }

    def build_head(self, encoder: VideoEncoder) -> AudioVisualHead:
        """The audio tower, and L3's fusion classifier (loss "ce") or the shared contrastive head
        whose embeddings the margin loss compares (loss "margin")."""
        audio = build_audio_encoder(self.audio_encoder)
        if self.config.loss == "margin":
            shared = ContrastiveHead(encoder.feature_dim, audio.feature_dim, self.config.embed_dim,
                                     learn_temperature=False)
            return AudioVisualHead(audio, shared=shared)
        fusion = mlp(encoder.feature_dim + audio.feature_dim, self.config.fusion_dim, 2)
        return AudioVisualHead(audio, fusion=fusion)

    def pairs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """On the device: each clip's audio input, its label (1 = its own audio) and whether a
        negative is hard. Easy negatives take the audio of sample (i - k) mod B, k in 1..B-1, so a
        clip is never paired with its own audio."""
        audio, hard_audio, has_hard = batch["audio"], batch["hard_audio"], batch["has_hard"]
        size = len(audio)
        device = audio.device
        positive = torch.rand(size, device=device) < self.config.positive_share
        if size == 1:
            positive = torch.ones_like(positive)  # no other sample to draw an easy negative from
        hard = ~positive & has_hard & (torch.rand(size, device=device) < self.hard_share)
        # k stays on the device (an index, not a Python int): no sync, and one compiled graph for every k
        shift = torch.randint(1, size, (), device=device) if size > 1 else 0
        easy = audio[(torch.arange(size, device=device) - shift) % size]
        chosen = torch.where(positive[:, None], audio, torch.where(hard[:, None], hard_audio, easy))
        return chosen, positive.long(), hard

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        waveforms, labels, hard = self.pairs(batch)
        video = encoder(self.front_end(to_model_input(batch["frames"], self.augment)))
        audio = head.audio(waveforms)
        if self.config.loss == "margin":
            v, a = head.shared.embed_video(video), head.shared.embed_audio(audio)
            loss = self.margin_loss(v, a, labels.bool())
            predicted = ((v - a).norm(dim=-1) < self.config.margin / 2).long()
        else:
            logits = head.fusion(torch.cat([video, audio], dim=-1))
            loss = F.cross_entropy(logits, labels)
            predicted = logits.argmax(-1)
        return {"loss": loss, "accuracy": (predicted == labels).float().mean().detach(),
                "hard_share": hard.float().mean().detach()}
