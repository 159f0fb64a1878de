"""Two-stream model: a video encoder, an audio encoder and one shared contrastive head."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.models.audio import AudioEncoder
from mmssl.models.heads import projection_mlp
from mmssl.models.video import VideoEncoder


class ContrastiveHead(nn.Module):
    """One projection per modality into a shared embedding space, L2-normalised, and a learnable
    temperature (CLIP's parameterisation: logit scale = exp(t), initialised to 1/0.07, capped at 100).
    The audio-visual tasks and the clip-contrastive tasks all use this head."""

    def __init__(self, video_dim: int, audio_dim: int | None, embed_dim: int = 128, hidden_dim: int = 512,
                 temperature: float = 0.07, learn_temperature: bool = True) -> None:
        super().__init__()
        self.video = projection_mlp(video_dim, hidden_dim, embed_dim)
        self.audio = projection_mlp(audio_dim, hidden_dim, embed_dim) if audio_dim else None
        log_scale = torch.tensor(math.log(1 / temperature))
        if learn_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:  # a buffer: no parameter without gradient for DDP to wait on
            self.register_buffer("log_scale", log_scale)

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp().clamp(max=100.0)

    def embed_video(self, features: Tensor) -> Tensor:
        return F.normalize(self.video(features), dim=-1)

    def embed_audio(self, features: Tensor) -> Tensor:
        if self.audio is None:
            raise ValueError("this head has no audio projection")
        return F.normalize(self.audio(features), dim=-1)


class AudioStream(nn.Module):
    """What an audio-visual task adds to the run's video encoder: the audio encoder, the shared
    contrastive head when the task's loss uses embeddings (`embed_dim`; None: no head, so DDP sees
    no unused parameters) and any task head the task sets."""

    def __init__(self, video_dim: int, audio: AudioEncoder, embed_dim: int | None = 128,
                 temperature: float = 0.07, learn_temperature: bool = False) -> None:
        super().__init__()
        self.audio = audio
        self.shared = (ContrastiveHead(video_dim, audio.feature_dim, embed_dim, temperature=temperature,
                                       learn_temperature=learn_temperature) if embed_dim else None)


class TwoStream(nn.Module):
    """`video` ([B, C, T, H, W] -> [B, Dv]), `audio` ([B, samples] -> [B, Da]) and their shared
    contrastive `head`. Built from a trained run's modules (no copies) for retrieval and export."""

    def __init__(self, video: VideoEncoder, audio: AudioEncoder, head: ContrastiveHead) -> None:
        super().__init__()
        self.video = video
        self.audio = audio
        self.head = head

    def forward(self, clips: Tensor, waveforms: Tensor) -> tuple[Tensor, Tensor]:
        """L2-normalised video and audio embeddings [B, embed_dim] each."""
        return self.head.embed_video(self.video(clips)), self.head.embed_audio(self.audio(waveforms))
