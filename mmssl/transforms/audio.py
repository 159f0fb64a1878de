"""Audio transforms on whole batches, on the device: log-mel spectrograms (torchaudio) and
SpecAugment masking. Waveforms cross the process boundary; spectrograms are made here."""
from __future__ import annotations

import torch
import torchaudio
from torch import nn


class LogMel(nn.Module):
    """float [B, samples] -> log-mel [B, 1, n_mels, frames] (log(mel power + 1e-6)).

    Defaults: 16 kHz, 25 ms windows (400 samples) every 10 ms (160), 512-point FFT, 64 mel bands:
    1 s of audio gives 101 frames. L3-Net used a 48 kHz log-spectrogram (257 x 199); this is the
    configurable 16 kHz log-mel counterpart (docs/methods.md#avc)."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, win_length: int = 400,
                 hop_length: int = 160, n_mels: int = 64) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft,
                                                        win_length=win_length, hop_length=hop_length,
                                                        n_mels=n_mels)

    # eager under torch.compile: one clean graph break instead of several inside torchaudio's spectrogram
    # (its normalisation check calls torch.jit.isinstance, which dynamo does not trace); FFTs gain nothing
    @torch.compiler.disable
    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        with torch.autocast(waveform.device.type, enabled=False):  # FFTs in float32
            return torch.log(self.mel(waveform.float()) + 1e-6).unsqueeze(1)


class SpecAugment(nn.Module):
    """SpecAugment (Park et al. 2019) frequency and time masks, drawn per example, in training only,
    filled with the batch's mean (SpecAugment masks mean-normalised features with 0; our log-mel is
    not normalised, and there 0 would be a loud band)."""

    def __init__(self, freq_mask: int = 8, time_mask: int = 20, num_masks: int = 2) -> None:
        super().__init__()
        self.masks = nn.Sequential(*[m for _ in range(num_masks) for m in (
            torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True),
            torchaudio.transforms.TimeMasking(time_mask, iid_masks=True))])

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return spectrogram
        fill = spectrogram.mean().detach()
        for mask in self.masks:
            spectrogram = mask(spectrogram, fill)
        return spectrogram
