"""Pretext tasks, one file each, registered by name (`@register_task`); `build_task` makes the one a
config names. Importing this package registers the built-in tasks; a task of your own registers the
same way from your own module (see docs/adding_a_task.md)."""
from __future__ import annotations

import importlib
from collections.abc import Iterable

from mmssl.config import Config, ConfigError
from mmssl.data.clip import DecodedClip, Window
from mmssl.registry import TASKS, register_task
from mmssl.tasks import (  # noqa: F401  (imported to register them)
    av_contrastive,
    avc,
    clip_contrastive,
    colorization,
    cubic_puzzle,
    deepcluster,
    dino,
    dpc,
    flow_similarity,
    inpainting,
    jigsaw,
    masked_video,
    multitask,
    opn,
    order,
    pace,
    relative_position,
    rotation,
    selavi,
    super_resolution,
    vcop,
    video_colorization,
    wav2vec2,
    xdc,
)
from mmssl.tasks.base import PretextTask
from mmssl.transforms.video import VideoAugment


def import_modules(names: Iterable[str]) -> None:
    """Import the user's own modules (the CLIs' `--import MODULE`): their tasks and losses register as
    they load. A module that cannot be imported is an error that names it."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ImportError(f"--import {name}: {error} (is its folder on PYTHONPATH?)") from error


def task_class(name: str) -> type[PretextTask]:
    """The task class registered as `name` (a ConfigError listing the known ones)."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(TASKS)} (a task of your own registers when "
                          "its module is imported: --import MODULE)")
    return TASKS.get(name)


def build_task(config: Config) -> PretextTask:
    """The task `config.task.name`, with its section of the config and the run's augmentation."""
    data = config.data
    augment = VideoAugment(crop_scale=tuple(data.crop_scale), crop_ratio=tuple(data.crop_ratio), flip=data.flip)
    return task_class(config.task.name).from_config(config, augment)


__all__ = ["TASKS", "DecodedClip", "PretextTask", "Window", "build_task", "import_modules", "register_task",
           "task_class"]
