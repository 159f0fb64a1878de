"""DeepCluster on clips (Caron, Bojanowski, Joulin, Douze, "Deep Clustering for Unsupervised Learning
of Visual Features", ECCV 2018).

Before every `every_epochs`-th epoch, the engine's labelling pass takes the encoder's features of
every video's middle clip (eval mode, no augmentation); they are PCA-whitened to `pca_dim`,
L2-normalised and clustered by k-means into `clusters` groups (a fresh seed each pass; faiss, through
mmssl.cluster). The cluster ids are the labels of the next epochs: a freshly initialised linear top
layer classifies each augmented random clip of a video into its video's cluster (cross-entropy), and
the sampler draws every non-empty cluster equally often, so that a large cluster cannot win by size.
Optionally (`sobel`) the encoder sees DeepCluster's fixed Sobel edge filter of the luma instead of
colour. The pass logs the non-empty clusters, the largest cluster's share and the NMI with the
previous pass's labels (mmssl/engine/labelling.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from mmssl.config import AT_LEAST_1, Bound, Config
from mmssl.data.clip import Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import centre_clip, random_clip
from mmssl.models import VideoEncoder
from mmssl.registry import register_task
from mmssl.tasks.base import PretextMetric
from mmssl.tasks.pseudo_labels import (
    PseudoLabelTask,
    TopLayer,
    balanced_weights,
    cluster_features,
    pseudo_label_loss,
)
from mmssl.transforms.video import VideoAugment, to_model_input


@dataclass
class DeepClusterConfig:
    """DeepCluster (docs/methods.md#deepcluster): k-means labels of the split, a fresh top layer each pass."""

    clip_len: int = 8
    stride: int = 2
    clusters: int = 30  # k, well above the number of classes (10 on SynthAV)
    pca_dim: int = 32  # whitened dimensions kept: 256 for wide features; fewer than the features' rank
    every_epochs: int = 1  # a labelling pass before every this many epochs
    kmeans_iterations: int = 20
    sobel: bool = False  # the encoder sees the Sobel edges of the luma (DeepCluster's front end)

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "clip_len": AT_LEAST_1, "stride": AT_LEAST_1, "clusters": Bound(2), "pca_dim": AT_LEAST_1,
        "every_epochs": AT_LEAST_1, "kmeans_iterations": AT_LEAST_1}


@register_task("deepcluster", label_family="object", encoder_input="rgb",
               metric=PretextMetric("accuracy", chance=lambda task, _: 1 / task.config.clusters))
class DeepCluster(PseudoLabelTask):
    config_class = DeepClusterConfig
    smoke_overrides = ("task.deepcluster.clusters=4", "task.deepcluster.pca_dim=3")  # 4 videos suffice

    def __init__(self, config: DeepClusterConfig, augment: VideoAugment | None = None) -> None:
        self.config = config
        self.augment = augment
        self.encoder_input = "sobel" if config.sobel else "rgb"

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> DeepCluster:
        return cls(config.task.deepcluster, augment)

    def labels_due(self, epoch: int) -> bool:
        return epoch % self.config.every_epochs == 0

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        return Window(frames=random_clip(row.num_frames, self.config.clip_len, self.config.stride, rng))

    def label_window(self, row: ManifestRow) -> Window:
        return Window(frames=centre_clip(row.num_frames, self.config.clip_len, self.config.stride))

    def label_features(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder,
                       head: nn.Module) -> dict[str, torch.Tensor]:
        return {"video": encoder(self.front_end(to_model_input(batch["frames"])))}

    def assign(self, features: dict[str, np.ndarray], seed: int) -> np.ndarray:
        c = self.config
        return cluster_features(features["video"], c.clusters, c.pca_dim, seed, c.kmeans_iterations)[None]

    def top_layers(self, head: nn.Module) -> list[nn.Module]:
        return [head]

    def sample_weights(self) -> np.ndarray:
        return balanced_weights(self.labels[0].cpu().numpy())

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return TopLayer(encoder.feature_dim, self.config.clusters)

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        labels = self.row_labels(batch["row"])[0]
        logits = head(encoder(self.front_end(to_model_input(batch["frames"], self.augment))))
        loss, accuracy = pseudo_label_loss(logits, labels)
        return {"loss": loss, "accuracy": accuracy}
