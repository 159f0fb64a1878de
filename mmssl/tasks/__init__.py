"""Pretext tasks, one file each; `build_task` makes the one a config names."""
from __future__ import annotations

from mmssl.config import Config
from mmssl.data.clip import DecodedClip, Window
from mmssl.tasks.av_contrastive import AudioVisualContrastive
from mmssl.tasks.avc import AudioVisualCorrespondence
from mmssl.tasks.base import PretextTask
from mmssl.tasks.clip_contrastive import ClipContrastive
from mmssl.tasks.clip_order import ClipOrderPrediction
from mmssl.tasks.masked_video import MaskedVideo
from mmssl.tasks.multitask import MultiTask
from mmssl.tasks.order import OrderVerification
from mmssl.tasks.sorting import SequenceSorting
from mmssl.tasks.wav2vec2 import Wav2Vec2
from mmssl.transforms.video import VideoAugment

TASKS: dict[str, type[PretextTask]] = {"order": OrderVerification, "opn": SequenceSorting,
                                      "vcop": ClipOrderPrediction, "avc": AudioVisualCorrespondence,
                                      "clip_contrastive": ClipContrastive,
                                      "av_contrastive": AudioVisualContrastive, "masked_video": MaskedVideo,
                                      "wav2vec2": Wav2Vec2, "multitask": MultiTask}


def task_class(name: str) -> type[PretextTask]:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def build_task(config: Config) -> PretextTask:
    data = config.data
    augment = VideoAugment(crop_scale=tuple(data.crop_scale), crop_ratio=tuple(data.crop_ratio), flip=data.flip)
    return task_class(config.task.name).from_config(config, augment)


__all__ = ["TASKS", "DecodedClip", "PretextTask", "Window", "build_task", "task_class"]
