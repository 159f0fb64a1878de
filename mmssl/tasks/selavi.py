"""SeLaVi, self-labelling of videos (Asano, Patrick, Rupprecht, Vedaldi, "Labelling Unlabelled Videos
from Scratch with Multi-modal Self-supervision", NeurIPS 2020).

Each tower has `heads` linear heads of `clusters` outputs. A labelling pass (mmssl/engine/labelling.py)
takes, for every video's middle clip and the audio centred on it, the heads' softmax outputs of both
towers; for each head, the two modalities' distributions are multiplied (P = softmax(video head) *
softmax(audio head), in logs a sum), and the labels of the whole split are the optimal transport of
P^lambda onto equal-sized clusters, solved by Sinkhorn-Knopp in float64 (alternate scaling of rows
and columns until the row scaling changes by less than `sk_tolerance`, or `sk_iterations`
times). The labels are shared: head h of the video tower and head h of the audio tower learn the
same ones, and the loss is the mean of the cross-entropies over the heads and the two towers. The
passes come denser early: before epochs round(label_spacing * i^2), i = 0, 1, 2, ...
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmssl.config import AT_LEAST_1, POSITIVE, Bound
from mmssl.models import VideoEncoder
from mmssl.models.audio import AudioEncoder, build_audio_encoder
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric
from mmssl.tasks.pseudo_labels import AudioVisualLabelsConfig, AudioVisualPseudoLabelTask, pseudo_label_loss

log = logging.getLogger(__name__)


def sinkhorn_knopp(log_p: np.ndarray, lam: float, tolerance: float, max_iterations: int) -> tuple[np.ndarray, int]:
    """Labels [n] of the rows of `log_p` [n, k] (log-probabilities) in k clusters of equal size: the
    rows' argmax of diag(a) P^lam diag(b), whose rows sum to 1/n and columns to 1/k, found by
    Sinkhorn-Knopp in float64; and the iterations it took (`max_iterations` when it stopped there
    before the row scaling `a` changed by less than `tolerance`, relatively)."""
    log_q = lam * np.asarray(log_p, dtype=np.float64)
    q = np.exp(log_q - log_q.max(axis=1, keepdims=True))  # a row's scale is absorbed by a: no underflow
    n, k = q.shape
    a = np.full(n, 1.0 / n)
    for iteration in range(1, max_iterations + 1):
        b = (1.0 / k) / (a @ q)
        a_new = (1.0 / n) / (q @ b)
        change = float(np.max(np.abs(a / a_new - 1)))
        a = a_new
        if change < tolerance:
            break
    else:
        log.warning("Sinkhorn-Knopp stopped at %d iterations with a relative change %.3g > %.3g",
                    max_iterations, change, tolerance)
    b = (1.0 / k) / (a @ q)
    return (q * b).argmax(axis=1), iteration


@dataclass
class SeLaViConfig(AudioVisualLabelsConfig):
    """SeLaVi (docs/methods.md#selavi): equal-sized labels of several heads, shared by both modalities."""

    heads: int = 3  # 10 in SeLaVi
    clusters: int = 30  # per head, well above the number of classes (10 on SynthAV)
    lam: float = 20.0  # the power of P: SeLaVi's lambda
    sk_tolerance: float = 1e-6
    sk_iterations: int = 1000
    label_spacing: float = 1.0  # passes before epochs round(label_spacing * i^2): denser early

    BOUNDS: ClassVar[dict[str, Bound]] = {
        **AudioVisualLabelsConfig.BOUNDS, "heads": AT_LEAST_1, "clusters": Bound(2), "lam": POSITIVE,
        "sk_tolerance": POSITIVE, "sk_iterations": AT_LEAST_1, "label_spacing": POSITIVE}


class MultiHead(nn.Module):
    """The audio tower and each tower's heads."""

    def __init__(self, audio: AudioEncoder, video_dim: int, heads: int, clusters: int) -> None:
        super().__init__()
        self.audio = audio
        self.video_heads = nn.ModuleList(nn.Linear(video_dim, clusters) for _ in range(heads))
        self.audio_heads = nn.ModuleList(nn.Linear(audio.feature_dim, clusters) for _ in range(heads))


@register_task("selavi", label_family="object", encoder_input="rgb",
               metric=PretextMetric("video_accuracy", chance=lambda task, _: 1 / task.config.clusters))
class SeLaVi(AudioVisualPseudoLabelTask):
    config_class = SeLaViConfig
    smoke_overrides = ("task.selavi.clusters=4",)

    def labels_due(self, epoch: int) -> bool:
        spacing = self.config.label_spacing
        i = math.isqrt(int(epoch / spacing))
        return any(round(spacing * j * j) == epoch for j in range(max(i - 1, 0), i + 3))

    def label_features(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder,
                       head: nn.Module) -> dict[str, torch.Tensor]:
        video, audio = self.towers(batch, encoder, head, None)
        return {"video": torch.stack([F.log_softmax(h(video), -1) for h in head.video_heads], dim=1),
                "audio": torch.stack([F.log_softmax(h(audio), -1) for h in head.audio_heads], dim=1)}

    def assign(self, features: dict[str, np.ndarray], seed: int) -> np.ndarray:
        """Per head, the equal-sized labels of P = softmax(video) * softmax(audio) (deterministic: no seed)."""
        c = self.config
        joint = features["video"] + features["audio"]  # [n, heads, k] log-probabilities
        return np.stack([sinkhorn_knopp(joint[:, h], c.lam, c.sk_tolerance, c.sk_iterations)[0]
                         for h in range(c.heads)])

    def build_head(self, encoder: VideoEncoder) -> MultiHead:
        c = self.config
        return MultiHead(build_audio_encoder(self.audio_encoder), encoder.feature_dim, c.heads, c.clusters)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        labels = self.row_labels(batch["row"])  # [heads, B]: one set per head, for both towers
        video, audio = self.towers(batch, encoder, head, self.augment)
        video_out = [pseudo_label_loss(h(video), own) for h, own in zip(head.video_heads, labels, strict=True)]
        audio_out = [pseudo_label_loss(h(audio), own) for h, own in zip(head.audio_heads, labels, strict=True)]
        losses = [loss for loss, _ in video_out + audio_out]
        return {"loss": torch.stack(losses).mean(), "video_accuracy": video_out[0][1], "audio_accuracy": audio_out[0][1]}
