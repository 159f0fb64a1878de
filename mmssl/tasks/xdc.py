"""XDC, cross-modal deep clustering (Alwassel, Mahajan, Korbar, Torresani, Ghanem, Tran,
"Self-Supervised Learning by Cross-Modal Audio-Video Clustering", NeurIPS 2020).

DeepCluster (mmssl/tasks/deepcluster.py) across the two towers: before every `every_epochs`-th epoch,
the labelling pass takes the video encoder's features of every video's middle clip and the audio
encoder's features of the audio centred on it (eval mode, no augmentation); each modality's features
are PCA-whitened to `pca_dim`, L2-normalised and clustered by k-means into `clusters` groups (a fresh
seed each pass). The audio clusters label the video tower and the video clusters label the audio
tower: each tower has a fresh linear top layer per pass, and the loss is the mean of the two
cross-entropies. As in DeepCluster, the sampler draws every non-empty cluster equally often (those
of the labels the video tower learns, the audio clusters).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from mmssl.config import AT_LEAST_1, Bound
from mmssl.models import VideoEncoder
from mmssl.models.audio import AudioEncoder, build_audio_encoder
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric
from mmssl.tasks.pseudo_labels import (
    AudioVisualLabelsConfig,
    AudioVisualPseudoLabelTask,
    TopLayer,
    balanced_weights,
    cluster_features,
    pseudo_label_loss,
)

VIDEO_LEARNS, AUDIO_LEARNS = 0, 1  # the rows of the labels: the audio clusters, the video clusters


@dataclass
class XDCConfig(AudioVisualLabelsConfig):
    """XDC (docs/methods.md#xdc): each modality's k-means clusters label the other's tower."""

    clusters: int = 30  # k of each modality, well above the number of classes (10 on SynthAV)
    pca_dim: int = 32  # whitened dimensions kept, below the rank of either tower's features
    every_epochs: int = 4
    kmeans_iterations: int = 20

    BOUNDS: ClassVar[dict[str, Bound]] = {
        **AudioVisualLabelsConfig.BOUNDS, "clusters": Bound(2), "pca_dim": AT_LEAST_1, "every_epochs": AT_LEAST_1,
        "kmeans_iterations": AT_LEAST_1}


class CrossModalHead(nn.Module):
    """The audio tower and each tower's top layer."""

    def __init__(self, audio: AudioEncoder, video_dim: int, clusters: int) -> None:
        super().__init__()
        self.audio = audio
        self.video_top = TopLayer(video_dim, clusters)
        self.audio_top = TopLayer(audio.feature_dim, clusters)


@register_task("xdc", label_family="object", encoder_input="rgb",
               metric=PretextMetric("video_accuracy", chance=lambda task, _: 1 / task.config.clusters))
class XDC(AudioVisualPseudoLabelTask):
    config_class = XDCConfig
    smoke_overrides = ("task.xdc.clusters=4", "task.xdc.pca_dim=3")  # 4 videos suffice

    def labels_due(self, epoch: int) -> bool:
        return epoch % self.config.every_epochs == 0

    def label_features(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder,
                       head: nn.Module) -> dict[str, torch.Tensor]:
        video, audio = self.towers(batch, encoder, head, None)
        return {"video": video, "audio": audio}

    def assign(self, features: dict[str, np.ndarray], seed: int) -> np.ndarray:
        c = self.config
        cluster = lambda x, offset: cluster_features(x, c.clusters, c.pca_dim, seed + offset,  # noqa: E731
                                                     c.kmeans_iterations)
        return np.stack([cluster(features["audio"], 0), cluster(features["video"], 1)])  # VIDEO_LEARNS, AUDIO_LEARNS

    def top_layers(self, head: nn.Module) -> list[nn.Module]:
        return [head.video_top, head.audio_top]

    def sample_weights(self) -> np.ndarray:
        return balanced_weights(self.labels[VIDEO_LEARNS].cpu().numpy())

    def build_head(self, encoder: VideoEncoder) -> CrossModalHead:
        return CrossModalHead(build_audio_encoder(self.audio_encoder), encoder.feature_dim, self.config.clusters)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        labels = self.row_labels(batch["row"])
        video, audio = self.towers(batch, encoder, head, self.augment)
        video_loss, video_accuracy = pseudo_label_loss(head.video_top(video), labels[VIDEO_LEARNS])
        audio_loss, audio_accuracy = pseudo_label_loss(head.audio_top(audio), labels[AUDIO_LEARNS])
        return {"loss": (video_loss + audio_loss) / 2, "video_accuracy": video_accuracy,
                "audio_accuracy": audio_accuracy}
