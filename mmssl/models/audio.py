"""Audio encoders: float waveforms [B, samples] (mono, 16 kHz) -> features [B, D]. The log-mel
front end runs inside the encoder, on the device; wav2vec 2.0 encoders take the waveform itself.
Build by name with `build_audio_encoder`."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise

import torch
import torchaudio
from torch import Tensor, nn
from torchaudio.models.wav2vec2 import components

from mmssl.registry import AUDIO_ENCODERS, register_audio_encoder
from mmssl.transforms.audio import LogMel, SpecAugment


class AudioEncoder(nn.Module):
    """Interface: `forward(waveform: float [B, samples]) -> [B, feature_dim]`."""

    feature_dim: int


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
        self.blocks = nn.Sequential(*[conv_block(a, b) for a, b in pairwise(channels)])
        self.feature_dim = widths[-1]

    def forward(self, waveform: Tensor) -> Tensor:
        spectrogram = self.augment(self.logmel(waveform))
        return self.blocks(spectrogram).amax(dim=(2, 3))


@register_audio_encoder("tiny_audio")
def tiny_audio(**kwargs: object) -> LogMelCNN:
    return LogMelCNN(widths=(16, 32, 64, 128), **kwargs)


# ----------------------------------------------------------------------------- wav2vec 2.0
PAPER_CONV_LAYERS = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2  # (channels, kernel, stride)


def feature_frames(num_samples: int, conv_layers: Sequence[tuple[int, int, int]]) -> int:
    """Frames out of a stack of unpadded 1D convs: out = floor((L - kernel) / stride) + 1 per layer
    (0 when the input is shorter than a kernel). The paper's stack: 16000 samples -> 49 frames."""
    for _, kernel, stride in conv_layers:
        num_samples = max((num_samples - kernel) // stride + 1, 0)
    return num_samples


@dataclass(frozen=True)
class Wav2Vec2Spec:
    """Sizes of a wav2vec 2.0 encoder (the arguments of torchaudio's `wav2vec2_model`)."""

    conv_layers: tuple[tuple[int, int, int], ...]
    embed_dim: int
    num_layers: int
    num_heads: int
    ff_dim: int
    pos_conv_kernel: int
    pos_conv_groups: int
    dropout: float = 0.1  # input projection, attention, block outputs
    layer_drop: float = 0.0  # > 0 leaves parameters unused in a step: DDP then needs find_unused_parameters


WAV2VEC2_SPECS: dict[str, Wav2Vec2Spec] = {
    # BASE (paper, Sec. 4.2): 12 blocks of width 768, FFN 3072, LayerDrop 0.05, positional conv of kernel 128
    # in 16 groups. The paper says 8 attention heads; fairseq's released BASE (and torchaudio's) has 12.
    "wav2vec2_base": Wav2Vec2Spec(PAPER_CONV_LAYERS, 768, 12, 12, 3072, 128, 16, layer_drop=0.05),
    # CPU-sized: the paper's kernels and strides (49 frames per second) with 64 channels, 2 blocks of width 64.
    "wav2vec2_tiny": Wav2Vec2Spec(tuple((64, k, s) for _, k, s in PAPER_CONV_LAYERS), 64, 2, 4, 256, 16, 4),
}


class Wav2Vec2Encoder(AudioEncoder):
    """wav2vec 2.0's encoder (Baevski et al., NeurIPS 2020) from torchaudio's components: the
    convolutional feature encoder (group norm after the first conv, GELU), layer norm and linear
    projection to the model width, one learned mask embedding, and the Transformer context network
    with a convolutional positional embedding. `model` is a torchaudio `Wav2Vec2Model`, so its
    weights load into one built with the same sizes.

    forward (probes): waveform [B, samples] -> the context network's output averaged over time
    [B, D]. Pretraining uses the steps: `extract` -> `normalize` (the quantiser's input) ->
    `project` -> `context` with a mask."""

    def __init__(self, name: str) -> None:
        super().__init__()
        spec = WAV2VEC2_SPECS[name]
        self.model = torchaudio.models.wav2vec2_model(
            extractor_mode="group_norm", extractor_conv_layer_config=list(spec.conv_layers),
            extractor_conv_bias=False, encoder_embed_dim=spec.embed_dim, encoder_projection_dropout=spec.dropout,
            encoder_pos_conv_kernel=spec.pos_conv_kernel, encoder_pos_conv_groups=spec.pos_conv_groups,
            encoder_num_layers=spec.num_layers, encoder_num_heads=spec.num_heads,
            encoder_attention_dropout=spec.dropout, encoder_ff_interm_features=spec.ff_dim,
            encoder_ff_interm_dropout=0.0, encoder_dropout=spec.dropout, encoder_layer_norm_first=False,
            encoder_layer_drop=spec.layer_drop, aux_num_out=None)
        for block in self.model.feature_extractor.conv_layers:  # fairseq's init: torch's default shrinks the
            nn.init.kaiming_normal_(block.conv.weight)  # output ~3x per layer, below the layer norm's eps
        self.model.encoder.transformer.apply(components._init_transformer_params)  # fairseq's init_bert_params
        self.mask_embedding = nn.Parameter(torch.rand(spec.embed_dim))  # fairseq: U(0, 1)
        self.conv_layers = spec.conv_layers
        self.conv_dim = spec.conv_layers[-1][0]
        self.feature_dim = spec.embed_dim

    def extract(self, waveform: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Feature encoder: waveform [B, samples] -> features [B, T, C] and valid frames per example."""
        return self.model.feature_extractor(waveform, lengths)

    def normalize(self, features: Tensor) -> Tensor:
        """Layer norm of the features [B, T, C]: the quantiser's input (the unmasked targets)."""
        return self.model.encoder.feature_projection.layer_norm(features)

    def project(self, normalized: Tensor) -> Tensor:
        """[B, T, C] -> the context network's input [B, T, D] (linear projection, dropout)."""
        projection = self.model.encoder.feature_projection
        return projection.dropout(projection.projection(normalized))

    def context(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Transformer on [B, T, D], the steps where bool `mask` [B, T] is set replaced by the mask
        embedding: [B, T, D]."""
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
        return self.model.encoder.transformer(x)

    def forward(self, waveform: Tensor) -> Tensor:
        features, _ = self.extract(waveform)
        return self.context(self.project(self.normalize(features))).mean(1)


for _name in WAV2VEC2_SPECS:
    register_audio_encoder(_name)(partial(Wav2Vec2Encoder, _name))
