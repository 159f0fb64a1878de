"""Audio encoders: float waveforms [B, samples] (mono, 16 kHz) -> features [B, D]. The log-mel
front end runs inside the encoder, on the device. Build by name with `build_audio_encoder`."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mmssl.models.registry import Registry
from mmssl.transforms.audio import LogMel, SpecAugment


class AudioEncoder(nn.Module):
    """Interface: `forward(waveform: float [B, samples]) -> [B, feature_dim]`."""

    feature_dim: int


AUDIO_ENCODERS: Registry[AudioEncoder] = Registry("audio encoder")
register_audio_encoder = AUDIO_ENCODERS.register


def build_audio_encoder(name: str, **kwargs: object) -> AudioEncoder:
    return AUDIO_ENCODERS.build(name, **kwargs)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """[conv3x3, BN, ReLU] x 2 then a 2x2 max-pool: one block of L3-Net's towers."""
    layers: list[nn.Module] = []
    for channels in (in_channels, out_channels):
        layers += [nn.Conv2d(channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


@register_audio_encoder("logmel_cnn")
class LogMelCNN(AudioEncoder):
    """L3-Net's audio tower (Arandjelovic & Zisserman, "Look, Listen and Learn", ICCV 2017):
    4 blocks of [conv3x3, BN, ReLU] x 2 with 64/128/256/512 channels on a log-mel spectrogram,
    then a global max-pool: 512-d. `widths=(16, 32, 64, 128)` makes the CPU-sized "tiny_audio"."""

    def __init__(self, widths: Sequence[int] = (64, 128, 256, 512), n_mels: int = 64,
                 spec_augment: bool = False) -> None:
        super().__init__()
        self.logmel = LogMel(n_mels=n_mels)
        self.augment = SpecAugment() if spec_augment else nn.Identity()
        channels = [1, *widths]
        self.blocks = nn.Sequential(*[conv_block(a, b) for a, b in zip(channels, channels[1:])])
        self.feature_dim = widths[-1]

    def forward(self, waveform: Tensor) -> Tensor:
        spectrogram = self.augment(self.logmel(waveform))
        return self.blocks(spectrogram).amax(dim=(2, 3))


@register_audio_encoder("tiny_audio")
def tiny_audio(**kwargs: object) -> LogMelCNN:
    return LogMelCNN(widths=(16, 32, 64, 128), **kwargs)
