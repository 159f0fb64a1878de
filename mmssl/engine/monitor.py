"""The online kNN monitor (as solo-learn's and lightly's online kNN accuracy): every `monitor.every`
optimizer steps, the weighted-kNN video top-1 of the encoder being trained on a labeled manifest's
train/test splits, with transfer's own features and vote (`Transfer.features`, `knn_classify`), so
the last measurement is what `transfer --protocol knn` reports with the same clips."""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import torch

from mmssl import distributed
from mmssl.config import Config, ConfigError, MonitorConfig, TransferConfig
from mmssl.eval.transfer import Transfer, knn_classify
from mmssl.models import AudioEncoder, VideoEncoder
from mmssl.tasks.model import TaskModel

if TYPE_CHECKING:
    from mmssl.engine.trainer import LogWindow, RunLog

# they change what a run logs, not the weights it reaches: free to change on resume
MONITOR_KEYS = frozenset(f"monitor.{f.name}" for f in dataclasses.fields(MonitorConfig))


def monitor_transfer_config(config: Config) -> TransferConfig:
    """Transfer's kNN protocol with the monitor's settings, the run's frame size and decoding workers."""
    m = config.monitor
    return TransferConfig(protocol="knn", manifest=m.manifest, synthav_dir=config.data.synthav_dir,
                          train_split=m.train_split, test_split=m.test_split, label_column=m.label_column,
                          clip_len=m.clip_len, stride=m.stride, num_clips=m.num_clips,
                          frame_size=config.data.frame_size, num_workers=config.data.num_workers,
                          knn_k=m.k, knn_temperature=m.temperature)


def monitor_transfer(config: Config, device: torch.device) -> Transfer:
    """The monitor's labeled videos (SynthAV is made on first use); a manifest without the splits or
    the labels asked for is a ConfigError naming the monitor."""
    try:
        return Transfer(monitor_transfer_config(config), device)
    except ValueError as e:
        raise ConfigError(f"monitor: {e}") from None


class KnnMonitor:
    """Measures at the due steps on rank 0, which holds `transfer` (None elsewhere, or when off);
    every rank calls it, and the others wait at a barrier."""

    def __init__(self, every: int, transfer: Transfer | None) -> None:
        self.every, self.transfer = every, transfer

    def due(self, step: int, total_steps: int) -> bool:
        """Step 0 (before training), every `every` steps, and the run's last."""
        return self.every > 0 and (step % self.every == 0 or step == total_steps)

    def top1(self, encoder: VideoEncoder | AudioEncoder, mode: str, encoder_input: str) -> float:
        """Video-level kNN top-1 (%) of `encoder` (`mode`: the task's feature mode, "audio" for an
        audio encoder; `encoder_input`: the task's front end), in eval mode and without gradients;
        the modes of its modules and the training's RNG streams are left as they were."""
        t, modes = self.transfer, {module: module.training for module in encoder.modules()}
        with torch.random.fork_rng(devices=[t.device] if t.device.type == "cuda" else []):
            train_x, train_y, _ = t.features(encoder, t.train_rows, mode, encoder_input)
            test_x, test_y, _ = t.features(encoder, t.test_rows, mode, encoder_input)
        for module, training in modes.items():
            module.training = training
        logits = knn_classify(train_x, train_y, test_x, len(t.classes), t.config.knn_k, t.config.knn_temperature)
        return t.scores(logits, test_y)["video_top1"]

    def __call__(self, model: TaskModel, step: int, total_steps: int, epoch: int, run_log: RunLog,
                 window: LogWindow) -> None:
        """At a due step, log `knn_top1` and the seconds it took (`knn_s`) and show it on the progress
        bar; the time is kept out of the log window's throughput."""
        if not self.due(step, total_steps):
            return
        start = time.perf_counter()
        if self.transfer is not None:
            top1 = self.top1(model.encoder, model.task.feature_mode, model.task.encoder_input)
            run_log.report({"step": step, "epoch": epoch, "knn_top1": top1, "knn_s": time.perf_counter() - start})
            run_log.show(knn=f"{top1:.1f}%")
        distributed.barrier()
        window.start += time.perf_counter() - start
