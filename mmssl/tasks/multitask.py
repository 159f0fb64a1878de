"""Multi-task pretraining from one decode: several pretext tasks share one encoder and each sample.

Every task picks its own window of the sample's video (its own random stream); the union of their
frames and the span covering their audio are decoded once, and each task's sample is cut from that
decode as if it had decoded its window alone. Its keys enter the batch as "<task>/<key>". On the
device each task runs its own loss on the shared encoder with its own head; the total loss is the
weighted sum, and every task's loss and metrics are logged under its name. Its pretext metrics are
that sum and its tasks' own; its label family theirs where they agree (else the declared "action"); the tasks share
one encoder, so they must share its input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from mmssl.config import NON_NEGATIVE, Bound, Config, ConfigError
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.manifest import ManifestRow
from mmssl.data.motion import MotionWeighting
from mmssl.models import VideoEncoder
from mmssl.registry import TASKS, register_task
from mmssl.tasks.base import PretextMetric, PretextTask
from mmssl.transforms.video import VideoAugment


@dataclass
class MultiTaskConfig:
    """Several tasks from one decoded window per sample; each task's own section configures it."""

    tasks: list[str] = field(default_factory=lambda: ["order", "avc", "masked_video"])
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])  # of each task's loss

    BOUNDS: ClassVar[dict[str, Bound]] = {"weights": NON_NEGATIVE}


def task_entries(sample: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Task `name`'s entries of a multi-task sample or batch ("<task>/<key>"), under their own keys."""
    return {key.removeprefix(f"{name}/"): value for key, value in sample.items() if key.startswith(f"{name}/")}


@register_task("multitask", label_family="action", encoder_input="rgb",
               metric=PretextMetric("loss", higher_is_better=False))
class MultiTask(PretextTask):
    config_class = MultiTaskConfig

    def __init__(self, tasks: dict[str, PretextTask], weights: dict[str, float], sample_rate: int = 16000) -> None:
        if not tasks or set(tasks) != set(weights):
            raise ConfigError(f"multitask needs one weight per task, got tasks {list(tasks)} and weights {weights}")
        kinds = {task.encoder_kind for task in tasks.values()}
        if len(kinds) != 1:
            raise ConfigError(f"the tasks of a multi-task run share one encoder; got kinds {sorted(kinds)}")
        inputs = {task.encoder_input for task in tasks.values()}
        if len(inputs) != 1:
            raise ConfigError(f"the tasks of a multi-task run share one encoder, so one input; got {sorted(inputs)}")
        self.tasks = tasks
        self.weights = weights
        self.sample_rate = sample_rate
        self.encoder_kind = kinds.pop()
        self.encoder_input = inputs.pop()
        families = {task.label_family for task in tasks.values()}
        if len(families) == 1:
            self.label_family = families.pop()
        self.needs_audio = any(task.needs_audio for task in tasks.values())
        self.global_batchnorm = any(task.global_batchnorm for task in tasks.values())
        modes = {task.feature_mode for task in tasks.values()}
        self.feature_mode = modes.pop() if len(modes) == 1 else "clip"

    @classmethod
    def from_config(cls, config: Config, augment: VideoAugment) -> MultiTask:
        c: MultiTaskConfig = config.task.multitask
        if len(c.tasks) != len(c.weights) or len(set(c.tasks)) != len(c.tasks) or cls.name in c.tasks:
            raise ConfigError(f"task.multitask: give distinct tasks (not multitask) and one weight each, got {c}")
        tasks = {name: TASKS.get(name).from_config(config, augment) for name in c.tasks}
        return cls(tasks, dict(zip(c.tasks, c.weights)))

    def min_frames(self, fps: float) -> int:
        return max(task.min_frames(fps) for task in self.tasks.values())

    def set_step(self, step: int, total_steps: int) -> None:
        for task in self.tasks.values():
            task.set_step(step, total_steps)

    def motion_weightings(self) -> list[MotionWeighting]:
        return [weighting for task in self.tasks.values() for weighting in task.motion_weightings()]

    def pretext_metrics(self) -> dict[str, tuple[PretextMetric, PretextTask]]:
        """The weighted total loss, and each task's metrics under their keys in this loss dict ("<task>/<key>")."""
        return super().pretext_metrics() | {f"{name}/{key}": (metric.under(name), owner)
                                            for name, task in self.tasks.items()
                                            for key, (metric, owner) in task.pretext_metrics().items()}

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        """Each task's window (from its own child stream), and their union: the sorted distinct
        frames and the audio span covering every task's."""
        streams = rng.spawn(len(self.tasks))
        parts = {name: task.window(row, stream) for (name, task), stream in zip(self.tasks.items(), streams)}
        frames = np.unique(np.concatenate([w.frames for w in parts.values()]).astype(np.int64))
        spans = [(w.audio_start_s, w.audio_start_s + w.audio_duration_s)
                 for w in parts.values() if w.audio_start_s is not None]
        start = min(s for s, _ in spans) if spans else None
        duration = max(e for _, e in spans) - start if spans else 0.0
        return Window(frames=frames, audio_start_s=start, audio_duration_s=duration, parts=parts)

    def parts(self, clip: DecodedClip) -> dict[str, DecodedClip]:
        """Each task's clip cut from the decode of the union window: as if it had decoded its own."""
        union = clip.window
        parts = {}
        for name, part in union.parts.items():
            video = clip.video[torch.from_numpy(np.searchsorted(union.frames, part.frames))]
            audio = None
            if part.audio_start_s is not None:  # its own decode's length; the offset rounds within the union's
                length = round(part.audio_duration_s * self.sample_rate)
                offset = round((part.audio_start_s - union.audio_start_s) * self.sample_rate)
                offset = min(offset, len(clip.audio) - length)
                audio = clip.audio[offset:offset + length]
            parts[name] = DecodedClip(video, audio, part, clip.row)
        return parts

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        sample: dict[str, torch.Tensor] = {}
        parts = self.parts(clip)
        for (name, task), child in zip(self.tasks.items(), rng.spawn(len(self.tasks))):
            own = task.make_sample(parts[name], child)
            sample.update({f"{name}/{key}": value for key, value in own.items()})
        return sample

    def build_head(self, encoder: VideoEncoder) -> nn.Module:
        return nn.ModuleDict({name: task.build_head(encoder) for name, task in self.tasks.items()})

    def loss(self, batch: dict[str, torch.Tensor], encoder: VideoEncoder, head: nn.Module) -> dict[str, torch.Tensor]:
        """sum_k w_k * loss_k, with each task's loss dict logged as "<task>/<metric>"."""
        out: dict[str, torch.Tensor] = {}
        total = 0.0
        for name, task in self.tasks.items():
            own = task.loss(task_entries(batch, name), encoder, head[name])
            total = total + self.weights[name] * own["loss"]
            out.update({f"{name}/{key}": value.detach() for key, value in own.items()})
        out["loss"] = total
        return out
