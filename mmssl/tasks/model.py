"""A pretext task with its encoder as one model, built from a run's config or loaded from a checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mmssl.config import Config, ConfigError, from_dict
from mmssl.io.checkpoint import read_checkpoint
from mmssl.models import AudioEncoder, VideoEncoder, build_encoder
from mmssl.tasks import PretextTask, build_task, task_class


class TaskModel(nn.Module):
    """Encoder + task head, with the task's loss as forward (so DDP syncs their gradients)."""

    def __init__(self, task: PretextTask, encoder: VideoEncoder | AudioEncoder) -> None:
        super().__init__()
        self.task = task
        self.encoder = encoder
        self.head = task.build_head(encoder)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.task.loss(batch, self.encoder, self.head)


def encoder_name(config: Config) -> str:
    """The registry name of the encoder a run trains (and transfers), by the task's `encoder_kind`:
    model.video_encoder, or model.audio_encoder for tasks on audio alone (wav2vec 2.0)."""
    audio = task_class(config.task.name).encoder_kind == "audio"
    return config.model.audio_encoder if audio else config.model.video_encoder


def build_run_encoder(config: Config) -> VideoEncoder | AudioEncoder:
    """The encoder a run trains, at random init (`encoder_name`)."""
    return build_encoder(encoder_name(config))


def saved_entries(checkpoint: str | Path) -> dict:
    """A pretraining checkpoint's entries, memory-mapped: its tensors are not read (a CheckpointError
    in one line for a file that is not one)."""
    return read_checkpoint(checkpoint, mmap=True, needs=("config", "model"))


def checkpoint_config(checkpoint: str | Path, entries: dict | None = None) -> Config:
    """The pretraining config a checkpoint was saved with (read from its `entries`, when given); a
    ConfigError naming the file when this version cannot read it."""
    try:
        return from_dict((entries or saved_entries(checkpoint))["config"])
    except ConfigError as e:
        raise ConfigError(f"{checkpoint}: {e}") from None


def checkpoint_encoder_input(checkpoint: str | Path, default: str = "rgb") -> str:
    """The input front end a checkpoint's encoder trained on: its `encoder_input` entry, read without
    the task's module; `default` for a checkpoint without one (before the entry, every task was RGB)."""
    return saved_entries(checkpoint).get("encoder_input", default)


def load_task_model(checkpoint: str | Path) -> tuple[TaskModel, Config]:
    """The whole pretraining model of a checkpoint (encoder + task head, in eval mode) and its config."""
    state = read_checkpoint(checkpoint, needs=("config", "model"))
    config = checkpoint_config(checkpoint, state)
    model = TaskModel(build_task(config), build_run_encoder(config))
    model.load_state_dict(state["model"])
    return model.eval(), config
