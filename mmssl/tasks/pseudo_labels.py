"""Tasks that train on labels of the whole pretraining split, recomputed every few epochs: DeepCluster,
XDC, SeLaVi. The engine's labelling pass (mmssl/engine/labelling.py) runs the task's `label_features`
on every row's fixed `label_window` (eval mode, no augmentation), gathers them over the ranks, and
on rank 0 calls `assign`, which gives each row one label per head; every rank then holds them
(`set_labels`), and the loss reads each sample's labels by the row it decoded (`row_labels`).

Labels are [heads, rows] int64; -1 marks a row the pass could not decode (its samples are left out of
the loss). Each pass may re-initialise the task's `top_layers` (DeepCluster's fresh classifier) and
weight the sampler (`sample_weights`).
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmssl.cluster import kmeans, pca_whiten
from mmssl.config import AT_LEAST_1, POSITIVE, Bound, Config
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.sampling import audio_around, centre_clip, clip_and_audio, frames_for
from mmssl.models import VideoEncoder
from mmssl.tasks.base import PretextTask
from mmssl.transforms.video import VideoAugment, to_model_input

UNLABELLED = -1


class PseudoLabelTask(PretextTask):
    """The contract between a task trained on pseudo-labels and the engine's labelling pass."""

    pseudo_labelled = True
    labels: torch.Tensor | None = None  # [heads, rows] on the run's device, once a pass has run

    @abstractmethod
    def labels_due(self, epoch: int) -> bool:
        """Whether a labelling pass runs before epoch `epoch` (the run's first epoch always has one)."""

    @abstractmethod
    def label_window(self, row: ManifestRow) -> Window:
        """The fixed window of `row` that the labelling pass decodes (no randomness: the same every pass)."""

    @abstractmethod
    def label_features(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder,
                       head: nn.Module) -> dict[str, torch.Tensor]:
        """Named [B, ...] features of a batch of label windows, without augmentation (called in eval
        mode, without gradients)."""

    @abstractmethod
    def assign(self, features: dict[str, np.ndarray], seed: int) -> np.ndarray:
        """Labels [heads, n] int64 of the n rows whose `features` (each [n, ...]) are given; `seed`:
        this pass's own (rank 0 only)."""

    def top_layers(self, head: nn.Module) -> list[nn.Module]:
        """The layers each pass re-initialises (a fresh classifier for the new label ids)."""
        return []

    def sample_weights(self) -> np.ndarray | None:
        """Each row's chance of being drawn in the next epochs (None: every row once per epoch)."""
        return None

    def set_labels(self, labels: torch.Tensor) -> None:
        self.labels = labels

    def row_labels(self, rows: torch.Tensor) -> torch.Tensor:
        """The labels [heads, B] of a batch's rows (its "row" entry)."""
        if self.labels is None:
            raise RuntimeError(f"task {self.name!r} has no labels yet: the engine's labelling pass sets them "
                               "before the first step (mmssl.engine.labelling)")
        return self.labels[:, rows]


class TopLayer(nn.Linear):
    """A linear classifier of the pseudo-labels, initialised as DeepCluster's top layer: weights
    N(0, 0.01^2) and zero bias, so a fresh one predicts about the uniform distribution (loss ln k)
    instead of random logits that the few steps between passes must first unlearn."""

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.01)
        nn.init.zeros_(self.bias)


def cluster_features(x: np.ndarray, clusters: int, pca_dim: int, seed: int, iterations: int) -> np.ndarray:
    """DeepCluster's labels of the rows of `x`: PCA-whitened to `pca_dim`, L2-normalised, k-means
    into `clusters` (seeded by `seed`)."""
    whitened = pca_whiten(x, pca_dim)
    whitened /= np.linalg.norm(whitened, axis=1, keepdims=True).clip(min=1e-12)
    return kmeans(whitened, clusters, seed=seed, iterations=iterations).assignments


@dataclass
class AudioVisualLabelsConfig:
    """The sample of the audio-visual pseudo-label tasks: a clip and `audio_s` seconds of audio centred on it."""

    clip_len: int = 8
    stride: int = 2
    audio_s: float = 1.0

    BOUNDS: ClassVar[dict[str, Bound]] = {"clip_len": AT_LEAST_1, "stride": AT_LEAST_1, "audio_s": POSITIVE}


class AudioVisualPseudoLabelTask(PseudoLabelTask):
    """XDC's and SeLaVi's common half: a random clip with its audio to train on, the middle clip with
    its audio to label, and the features of both towers (the audio encoder in `head.audio`)."""

    needs_audio = True
    sample_rate: int = 16000

    def __init__(self, config: AudioVisualLabelsConfig, audio_encoder: str, augment: VideoAugment | None = None) -> None:
        self.config = config
        self.audio_encoder = audio_encoder  # the audio tower's registry name
        self.augment = augment

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> AudioVisualPseudoLabelTask:
        return cls(getattr(config.task, cls.name), config.model.audio_encoder, augment)

    def min_frames(self, fps: float) -> int:
        return frames_for(self.config.audio_s, fps)

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        return clip_and_audio(row, self.config.clip_len, self.config.stride, self.config.audio_s, rng)

    def label_window(self, row: ManifestRow) -> Window:
        c = self.config
        frames = centre_clip(row.num_frames, c.clip_len, c.stride)
        return Window(frames=frames, audio_start_s=audio_around(row, frames, c.audio_s), audio_duration_s=c.audio_s)

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return {"frames": clip.video, "audio": clip.audio[:round(self.config.audio_s * self.sample_rate)]}

    def towers(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module,
               augment: VideoAugment | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The video features (of the clips, under `augment`) and the audio features of a batch."""
        video = encoder(self.front_end(to_model_input(batch["frames"], augment)))
        return video, head.audio(batch["audio"])


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Row weights that draw every non-empty cluster of `labels` [rows] equally often, and the rows of
    a cluster equally (DeepCluster's `UnifLabelSampler`); unlabelled rows are never drawn."""
    labelled = labels != UNLABELLED
    sizes = np.bincount(labels[labelled])
    weights = np.zeros(len(labels))
    weights[labelled] = 1.0 / sizes[labels[labelled]]
    return weights / weights.sum()


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information of two labellings of the same rows, I(a; b) / mean(H(a), H(b))
    (scikit-learn's default normalisation): 1 for the same partition up to renaming, ~0 for unrelated."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.bincount(a * (b.max() + 1) + b, minlength=(a.max() + 1) * (b.max() + 1)).reshape(a.max() + 1, -1)
    p = joint / joint.sum()
    pa, pb = p.sum(1), p.sum(0)
    nonzero = p > 0
    mutual = float((p[nonzero] * np.log(p[nonzero] / np.outer(pa, pb)[nonzero])).sum())
    entropy = lambda q: float(-(q[q > 0] * np.log(q[q > 0])).sum())  # noqa: E731
    mean_entropy = (entropy(pa) + entropy(pb)) / 2
    return mutual / mean_entropy if mean_entropy > 0 else 1.0


def pseudo_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and (detached) accuracy of `logits` [B, k] on `labels` [B], unlabelled rows left out."""
    labelled = labels != UNLABELLED
    # a sum over the labelled rows, not a mean: a batch of none would give NaN (no branch: one compiled graph)
    count = labelled.sum().clamp(min=1)
    loss = F.cross_entropy(logits, labels, ignore_index=UNLABELLED, reduction="sum") / count
    accuracy = ((logits.argmax(-1) == labels) & labelled).sum() / count
    return loss, accuracy.detach()
