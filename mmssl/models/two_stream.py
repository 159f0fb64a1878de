"""Two-stream model: a video encoder, an audio encoder and one shared contrastive head."""
from __future__ import annotations

from torch import Tensor, nn

from mmssl.models.audio import AudioEncoder
from mmssl.models.heads import ContrastiveHead
from mmssl.models.video import VideoEncoder


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
