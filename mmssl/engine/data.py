"""A run's pretraining data: its manifest split (SynthAV when none is named), or its shards, as the task's
samples, and the loader of this rank's batches."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmssl.config import Config, ConfigError
from mmssl.data.dataset import EpochSampler, PretextDataset
from mmssl.data.loader import RecoveringLoader
from mmssl.data.manifest import ManifestError, ManifestRow, read_manifest
from mmssl.data.motion import use_stored_profiles
from mmssl.data.shards import ShardDataset, ShardLoader, ShardSource
from mmssl.data.synthetic import ensure_synthav
from mmssl.distributed import barrier, is_main_process
from mmssl.tasks import PretextTask


def manifest_path(config: Config) -> Path:
    """The config's manifest; SynthAV's (made on first use, by rank 0) when none is named."""
    if config.data.manifest:
        return Path(config.data.manifest)
    if is_main_process():
        ensure_synthav(config.data.synthav_dir)
    barrier()
    return Path(config.data.synthav_dir) / "manifest.csv"


def load_rows(config: Config) -> list[ManifestRow]:
    """The config's manifest split (`manifest_path`)."""
    return read_manifest(manifest_path(config), split=config.data.split or None)


def pretraining_data(config: Config, task: PretextTask, rank: int = 0,
                     world_size: int = 1) -> tuple[PretextDataset, EpochSampler]:
    """The config's split as the task's samples (a failed decode replaced by another row's sample,
    and counted) and the sampler of this rank's share of each epoch, in whole batches. The task's
    high-motion tuple choices read the manifest's stored motion profiles (said once when it has none)."""
    manifest = manifest_path(config)
    rows = read_manifest(manifest, split=config.data.split or None)
    missing_profiles = use_stored_profiles(task.motion_weightings(), manifest, rows)
    if missing_profiles and rank == 0:
        print(missing_profiles, flush=True)
    dataset = PretextDataset(rows, task, config.data.frame_size, config.data.backend,
                             seed=config.train.seed, replace_failed=True)
    report_excluded(config, task, dataset, rows, rank)
    return dataset, EpochSampler(len(dataset), config.train.seed, rank, world_size, batch_size=config.data.batch_size)


def pretraining_batches(config: Config, task: PretextTask, rank: int, world_size: int, device: torch.device,
                        shard_command: str | None = None,
                        ) -> tuple[PretextDataset | ShardDataset, RecoveringLoader | ShardLoader]:
    """The run's samples and the loader of this rank's batches: from `data.shards` when set (read through
    `shard_command`, given on the command line, when not None), else `pretraining_data`'s."""
    data = config.data
    if not data.shards:
        if shard_command:
            raise ConfigError("--shard-command reads shards: set data.shards to where they are")
        dataset, sampler = pretraining_data(config, task, rank, world_size)
        return dataset, RecoveringLoader(dataset, sampler, batch_size=data.batch_size, num_workers=data.num_workers,
                                         seed=config.train.seed, device=device)
    if data.manifest:
        raise ConfigError(f"data.manifest={data.manifest!r} and data.shards={data.shards!r}: name one of them")
    if task.pseudo_labelled:
        raise ConfigError(f"task {task.name!r} labels every video between epochs, which shards streamed in turn "
                          "cannot serve: train it from a manifest (data.manifest)")
    shards = ShardDataset(ShardSource(data.shards, shard_command), task, data.frame_size, data.backend,
                          config.train.seed, split=data.split or None, rank=rank, world_size=world_size,
                          workers=data.num_workers, batch_size=data.batch_size, buffer_size=data.shard_buffer)
    if shards.missing_profiles and rank == 0:
        print(shards.missing_profiles, flush=True)
    report_excluded(config, task, shards, shards.split_rows, rank)
    return shards, ShardLoader(shards, batch_size=data.batch_size, num_workers=data.num_workers, device=device)


def report_excluded(config: Config, task: PretextTask, dataset: PretextDataset | ShardDataset,
                    rows: list[ManifestRow], rank: int) -> None:
    """Say (on rank 0) which of the split's `rows` the task left out; no row left: a ManifestError."""
    if dataset.excluded:
        fps = float(np.median([r.fps for r in rows]))
        needs = f"{'an audio track and ' if task.needs_audio else ''}{task.min_frames(fps)} frames at {fps:.4g} fps"
        message = (f"left out of the {len(rows)} videos of split {config.data.split!r} before the run: "
                   f"{dict(dataset.excluded)} (task {task.name!r} needs {needs})")
        if not len(dataset):
            raise ManifestError(f"no video fits: {message}")
        if rank == 0:
            print(message, flush=True)
