"""The pretext-task interface: both halves of a task in one place.

CPU half (DataLoader workers): `window` says which frames (and audio span) of a video to decode,
`make_sample` turns the decoded clip into small uint8 tensors and integer targets.
Device half: `build_head` and `loss` (batched augmentation, encoder, head, loss dict with "loss").
Declared where the task registers (`@register_task`): its pretext metric with its chance level, the
label family its signal targets and the input front end its encoder sees.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmssl.data.clip import DecodedClip, Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.motion import MotionWeighting
from mmssl.models import VideoEncoder
from mmssl.transforms.inputs import front_end
from mmssl.transforms.video import VideoAugment

if TYPE_CHECKING:
    from mmssl.config import Config


def unknown_level(task: Any, batch_size: int) -> float | None:
    """No closed-form chance level."""
    return None


@dataclass(frozen=True)
class PretextMetric:
    """A task's pretext metric: the entry `key` of its loss dict (a detached per-batch mean), whether
    higher is better, and its chance level: what a model that learned nothing reaches (chance, or the
    trivial predictor's error). `chance(task, batch_size)` gives it from the task's settings and the
    batch size (None: unknown); where it depends on the data instead, `chance_key` names the loss-dict
    entry that measures it on the same batch."""

    key: str
    higher_is_better: bool = True
    chance: Callable[[Any, int], float | None] = unknown_level
    chance_key: str | None = None

    def under(self, prefix: str) -> PretextMetric:
        """The same metric in a loss dict that holds its task's entries as "<prefix>/<key>" (multitask)."""
        return dataclasses.replace(self, key=f"{prefix}/{self.key}",
                                   chance_key=self.chance_key and f"{prefix}/{self.chance_key}")

    def level(self, task: PretextTask, batch_size: int, out: dict[str, torch.Tensor]) -> float | None:
        """The chance level of a batch of `batch_size` whose loss dict is `out`."""
        return float(out[self.chance_key]) if self.chance_key else self.chance(task, batch_size)


def majority_share(positive_share: float) -> float:
    """The accuracy of always answering the more frequent of two classes."""
    return max(positive_share, 1 - positive_share)


class PretextTask(ABC):
    name: str  # its registry key, set by @register_task
    # declared by @register_task (these defaults serve a task that declares nothing)
    metric: PretextMetric = PretextMetric("loss", higher_is_better=False)
    label_family: str = "action"  # "action" or "object": which labels the benchmark probes the encoder on
    encoder_input: str = "rgb"  # the front end (mmssl.transforms.inputs) between the model input and the encoder
    needs_audio: bool = False
    # trains on labels of the pretraining split's rows, set by the engine's labelling pass
    # (mmssl/tasks/pseudo_labels.py): each sample then carries the index of the row it decoded
    pseudo_labelled: bool = False
    encoder_kind: str = "video"  # the encoder the run trains and transfers: model.video_encoder or model.audio_encoder
    feature_mode: str = "clip"  # how transfer feeds the encoder: "clip", "frames" (T=1 each) or "audio"
    # on several GPUs, BatchNorm over the global batch (SyncBatchNorm), as the reference code of the
    # batch-contrastive and redundancy-reduction methods has it (SimCLR, BYOL, SimSiam, Barlow Twins, VICReg)
    global_batchnorm: bool = False
    config_class: type | None = None  # its settings dataclass: the run config's section task.<name>
    renamed_keys: ClassVar[dict[str, str]] = {}  # keys of that section renamed since a release, old -> new
    # overrides that fit the task's window into short videos (3 s at 8 fps): the shipped-config smoke tests
    smoke_overrides: tuple[str, ...] = ()

    @classmethod
    def upgrade_section(cls, section: dict) -> dict:
        """A saved config's `task.<name>` section, written by an older version, in this version's keys
        (for changes a plain rename in `renamed_keys` cannot express)."""
        return section

    @classmethod
    @abstractmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> PretextTask:
        """The task with its section of the run's config."""

    def min_frames(self, fps: float) -> int:
        """Frames a video at `fps` needs to hold this task's window: shorter videos are left out
        before the run and counted (as too_short), not skipped sample by sample."""
        return 1

    def set_step(self, step: int, total_steps: int) -> None:
        """Called by the trainer before each optimizer step (curricula, schedules)."""

    def motion_weightings(self) -> list[MotionWeighting]:
        """The high-motion tuple choices its windows use: pointed at the manifest's stored motion
        profiles before the run (`use_stored_profiles`)."""
        return []

    def pretext_metrics(self) -> dict[str, tuple[PretextMetric, PretextTask]]:
        """Loss-dict key -> the declared metric under that key and the task whose settings its chance
        level reads: this task's one metric (a multi-task run: each subtask's, under its prefixed key)."""
        return {self.metric.key: (self.metric, self)}

    def front_end(self, x: torch.Tensor) -> torch.Tensor:
        """The model input `x` as this task's encoder sees it: its declared `encoder_input` applied
        (every task calls it right before its encoder)."""
        return front_end(self.encoder_input)(x)

    @abstractmethod
    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """Choose what to decode from `row` (raise mmssl.io.TooShortError if it cannot fit)."""

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Default: the frames and the window's integer targets."""
        return {"frames": clip.video, **{k: torch.tensor(v) for k, v in clip.window.targets.items()}}

    def views(self, sample: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]] | None:
        """What the model is shown of one sample where that is not its decoded frames in window order
        (turned copies, puzzle pieces), for `mmssl visualize`: (caption, uint8 [H, W, 3] image) each,
        the caption giving the label; None: the frames."""
        return None

    def predicted_views(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder,
                        head: nn.Module) -> list[list[tuple[str, torch.Tensor]]] | None:
        """What the model makes of a batch of samples (no augmentation, eval mode, no gradients), for
        `mmssl visualize --checkpoint`: per sample, (caption, uint8 [H, W, 3] image) each; None: nothing
        beyond `views`."""
        return None

    @abstractmethod
    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        ...

    @abstractmethod
    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        """Loss dict with a scalar "loss" key (plus detached metrics)."""


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy and (detached) accuracy: the loss dict of the classification pretext tasks."""
    return {"loss": F.cross_entropy(logits, labels),
            "accuracy": (logits.argmax(-1) == labels).float().mean().detach()}
