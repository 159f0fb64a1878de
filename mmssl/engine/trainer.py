"""Pretraining loop (read top to bottom, like DINO's and MAE's main scripts).

One process per device under torchrun (DDP; nccl on GPU, gloo on CPU), or a single process.
Schedules are precomputed per optimizer step; a resumed run restores the named objects, the RNG
state and the position in the epoch, so it reaches the same weights as an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mmssl.config import Config, ConfigError, config_changes, from_dict, to_dict
from mmssl.data.dataset import EpochSampler, PretextDataset, SkipCounter
from mmssl.data.loader import RecoveringLoader
from mmssl.data.manifest import ManifestError, ManifestRow, read_manifest
from mmssl.data.synthetic import ensure_synthav
from mmssl.engine import distributed
from mmssl.engine.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from mmssl.models import VideoEncoder, build_video_encoder
from mmssl.models.audio import AUDIO_ENCODERS, AudioEncoder, build_audio_encoder
from mmssl.tasks import PretextTask, build_task, task_class

log = logging.getLogger(__name__)
REFERENCE_BATCH = 32  # optim.lr is the rate for this total batch; scaled linearly otherwise
# settings that change how a run executes or logs, not what it computes: free to change on resume
RESUME_FREE_KEYS = frozenset({"data.num_workers", "train.compile", "train.log_every", "train.checkpoint_every",
                              "train.keep_last"})
LOG_FILE_REDRAW_S = 60.0  # progress-bar redraws when stderr is a log file (nohup, batch jobs), not a terminal


class NonFiniteLossError(FloatingPointError):
    pass


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


def build_named_encoder(name: str) -> VideoEncoder | AudioEncoder:
    """The video or audio encoder registered under `name`, at random init."""
    return build_audio_encoder(name) if name in AUDIO_ENCODERS else build_video_encoder(name)


def build_encoder(config: Config) -> VideoEncoder | AudioEncoder:
    """The encoder a run trains, at random init (`encoder_name`)."""
    return build_named_encoder(encoder_name(config))


def checkpoint_config(checkpoint: str | Path) -> Config:
    """The pretraining config a checkpoint was saved with (memory-mapped: its tensors are not read)."""
    return from_dict(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["config"])


def load_task_model(checkpoint: str | Path) -> tuple[TaskModel, Config]:
    """The whole pretraining model of a checkpoint (encoder + task head, in eval mode) and its config."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = from_dict(state["config"])
    model = TaskModel(build_task(config), build_encoder(config))
    model.load_state_dict(state["model"])
    return model.eval(), config


def load_rows(config: Config) -> list[ManifestRow]:
    """The config's manifest split; SynthAV (made on first use, by rank 0) when none is named."""
    manifest = config.data.manifest
    if not manifest:
        if distributed.is_main_process():
            ensure_synthav(config.data.synthav_dir)
        distributed.barrier()
        manifest = str(Path(config.data.synthav_dir) / "manifest.csv")
    return read_manifest(manifest, split=config.data.split or None)


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int) -> np.ndarray:
    """Linear warmup from 0 to `base`, then cosine decay to `final`: one value per step."""
    warmup = np.linspace(0, base, warmup_steps, endpoint=False)
    steps = np.arange(total_steps - warmup_steps)
    decay = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / max(len(steps), 1)))
    return np.concatenate([warmup, decay])


NO_DECAY_SUFFIXES = ("mask_token", "pos_embed.table")  # MAE/VideoMAE's no_weight_decay(): tokens, position tables


def param_groups(named_parameters: Iterable[tuple[str, nn.Parameter]],
                 lr_scale: Callable[[str], float] = lambda name: 1.0) -> list[dict]:
    """Optimizer groups: no weight decay on biases, normalisation parameters, mask tokens and learned
    position tables; each group's "lr_scale" (from `lr_scale(name)`, e.g. layer-wise decay) multiplies
    the scheduled lr. One group per (decay, scale): the decayed ones first, each side by rising scale."""
    groups: dict[tuple[bool, float], dict] = {}
    for name, p in named_parameters:
        if p.requires_grad:
            decay = p.ndim > 1 and not name.endswith(NO_DECAY_SUFFIXES)
            key = (decay, float(lr_scale(name)))
            groups.setdefault(key, {"params": [], "lr_scale": key[1], **({} if decay else {"weight_decay": 0.0})})
            groups[key]["params"].append(p)
    return [groups[key] for key in sorted(groups, key=lambda key: (not key[0], key[1]))]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to `lr` times its "lr_scale" (1 where unset)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def build_optimizer(config: Config, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD on `param_groups(model)`."""
    groups = param_groups(model.named_parameters())
    opt = config.optim
    if opt.name == "adamw":
        return torch.optim.AdamW(groups, lr=opt.lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay)
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    raise ValueError(f"unknown optimizer {opt.name!r}; choose adamw or sgd")


def mixed_precision(device: torch.device, amp: str = "auto") -> AbstractContextManager:
    """bf16 autocast on a CUDA device when `amp` is "auto"; otherwise (CPU, or "off") full precision."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and amp == "auto" else nullcontext()


def to_channels_last_3d(model: nn.Module) -> nn.Module:
    """`model` with its Conv3d weights in channels_last_3d (NDHWC) layout, in place; 2D and 1D convs
    (an audio tower's) keep theirs: `model.to(memory_format=torch.channels_last_3d)` stops at the
    first 4-D weight ("required rank 5 tensor")."""
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            module.to(memory_format=torch.channels_last_3d)
    return model


def pretraining_data(config: Config, task: PretextTask, rank: int = 0,
                     world_size: int = 1) -> tuple[PretextDataset, EpochSampler]:
    """The config's split as the task's samples (a failed decode replaced by another row's sample,
    and counted) and the sampler of this rank's share of each epoch, in whole batches."""
    rows = load_rows(config)
    dataset = PretextDataset(rows, task, config.data.frame_size, config.data.backend,
                             seed=config.train.seed, replace_failed=True)
    if dataset.excluded:
        fps = float(np.median([r.fps for r in rows]))
        needs = f"{'an audio track and ' if task.needs_audio else ''}{task.min_frames(fps)} frames at {fps:.4g} fps"
        message = (f"left out of the {len(rows)} videos of split {config.data.split!r} before the run: "
                   f"{dict(dataset.excluded)} (task {task.name!r} needs {needs})")
        if not len(dataset):
            raise ManifestError(f"no video fits: {message}")
        if rank == 0:
            print(message, flush=True)
    return dataset, EpochSampler(len(dataset), config.train.seed, rank, world_size, batch_size=config.data.batch_size)


def pretrain(config: Config, out_dir: str | Path, resume: str | None = None) -> Path:
    """Train `config`'s task; write checkpoints and metrics.jsonl under `out_dir`; return the final
    checkpoint's path. `resume`: "auto" (the newest checkpoint in out_dir, if any) or a path; None
    (a fresh run) refuses an out_dir that holds checkpoints already: pruning would delete this run's."""
    out_dir = Path(out_dir)
    if resume is None and (found := latest_checkpoint(out_dir)) is not None:
        raise ConfigError(f"{out_dir} holds the checkpoints of another run ({found.name}): pass --resume auto "
                          "to continue it, or choose a new --out")
    dist = distributed.init_distributed()
    torch.manual_seed(config.train.seed + dist.rank)
    np.random.seed(config.train.seed + dist.rank)

    task = build_task(config)
    dataset, sampler = pretraining_data(config, task, dist.rank, dist.world_size)
    batches = RecoveringLoader(dataset, sampler, config, dist.device)
    model = TaskModel(task, build_encoder(config)).to(dist.device)
    if task.global_batchnorm:
        model = distributed.global_batchnorm(model, dist.device)
    if config.train.channels_last:
        to_channels_last_3d(model)
    optimizer = build_optimizer(config, model)
    ddp = distributed.wrap_ddp(model, dist.device) if dist.world_size > 1 else model
    forward = torch.compile(ddp) if config.train.compile else ddp
    autocast = mixed_precision(dist.device, config.train.amp)

    accumulate = config.optim.accumulate
    micro_per_epoch = len(sampler) // config.data.batch_size  # whole batches (EpochSampler pads)
    if accumulate > micro_per_epoch:
        raise ValueError(f"optim.accumulate={accumulate} is more than the {micro_per_epoch} batches of "
                         f"data.batch_size={config.data.batch_size} in an epoch of each of {dist.world_size} "
                         f"ranks ({len(dataset)} videos): no optimizer step would complete")
    steps_per_epoch = micro_per_epoch // accumulate
    total_steps = config.train.max_steps or config.train.epochs * steps_per_epoch
    total_batch = config.data.batch_size * accumulate * dist.world_size
    base_lr = config.optim.lr * total_batch / REFERENCE_BATCH
    lr_schedule = cosine_schedule(base_lr, config.optim.min_lr, total_steps,
                                  min(round(config.optim.warmup_epochs * steps_per_epoch), total_steps // 2))

    step = 0
    resume_from = latest_checkpoint(out_dir) if resume == "auto" else (Path(resume) if resume else None)
    if resume_from is not None:
        settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
        state = load_checkpoint(resume_from, map_location=dist.device, model=model, optimizer=optimizer)
        for group, own in zip(optimizer.param_groups, settings, strict=True):
            group.update(own)  # this config's hyperparameters (weight decay, betas, ...), not the checkpoint's
        _check_resumed_config(state["config"], config, resume_from, implicit=resume == "auto",
                              warn=dist.is_main)
        step = int(state["step"])
        rng_states = state["rng"]
        restore_rng_state(rng_states[dist.rank] if dist.rank < len(rng_states) else rng_states[0])
        if dist.is_main:
            print(f"resumed from {resume_from} at step {step}")

    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2))
    skips = SkipCounter(config.data.max_skip_share, dataset.excluded)
    metrics = out_dir / "metrics.jsonl" if dist.is_main else None
    tensorboard = _tensorboard(out_dir) if dist.is_main else None
    bar = tqdm(total=total_steps, initial=step, disable=not dist.is_main, dynamic_ncols=True,
               desc=f"pretrain {task.name}", mininterval=0.1 if sys.stderr.isatty() else LOG_FILE_REDRAW_S)
    running: dict[str, list[float]] = defaultdict(list)
    window_start, data_wait, samples = time.perf_counter(), 0.0, 0
    while step < total_steps:
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        skips.reset()
        wait_start = time.perf_counter()
        for micro, batch in enumerate(batches.epoch(epoch, start=step_in_epoch * accumulate * config.data.batch_size)):
            data_wait += time.perf_counter() - wait_start
            skipped = batch.pop("skipped")  # failed decodes, each replaced by another row's sample
            batch_size = len(next(iter(batch.values())))
            skips.update(batch_size, skipped)
            batch = {k: v.to(dist.device, non_blocking=True) for k, v in batch.items()}
            set_lr(optimizer, float(lr_schedule[step]))
            task.set_step(step, total_steps)
            last_micro = (micro + 1) % accumulate == 0
            sync = nullcontext() if last_micro or dist.world_size == 1 else ddp.no_sync()
            with sync, autocast:
                out = forward(batch)
                loss = out["loss"]
                check_finite_loss(loss, step, epoch)
                (loss / accumulate).backward()
            for name, value in out.items():
                running[name].append(float(value.detach()))
            samples += batch_size * dist.world_size
            if last_micro:
                if config.optim.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                if step % config.train.log_every == 0 or step == total_steps:
                    elapsed = time.perf_counter() - window_start
                    record = {"step": step, "epoch": epoch, "lr": float(lr_schedule[step - 1]),
                              **window_means(running, dist.device),
                              "samples_per_s": samples / elapsed, "data_wait_share": data_wait / elapsed}
                    bar.set_postfix(loss=f"{record['loss']:.4f}", sps=f"{record['samples_per_s']:.0f}",
                                    wait=f"{record['data_wait_share']:.0%}", refresh=False)
                    if metrics:
                        _append_json_line(metrics, record)
                    if tensorboard:
                        for key, value in record.items():
                            tensorboard.add_scalar(f"pretrain/{key}", value, step)
                    running.clear()
                    window_start, data_wait, samples = time.perf_counter(), 0.0, 0
                if step % config.train.checkpoint_every == 0 or step == total_steps:
                    _save(out_dir, step, model, optimizer, config, dist.is_main)
                if step == total_steps or step % steps_per_epoch == 0:
                    break
            wait_start = time.perf_counter()
        skips.skipped = distributed.sum_counters(skips.skipped)  # each rank decodes its own share
        if dist.is_main:
            summary = {"epoch": epoch, "skipped": dict(skips.skipped), "excluded": dict(skips.excluded)}
            if skips.skipped:
                bar.write(f"epoch {epoch}: skipped samples: {skips.summary()}")
            _append_json_line(metrics, summary)
    bar.close()
    if tensorboard:
        tensorboard.close()
    distributed.barrier()
    return checkpoint_path(out_dir, total_steps)


def window_means(running: dict[str, list[float]], device: torch.device) -> dict[str, float]:
    """Each logged value's mean over a log window's micro-batches, then over ranks (every rank must
    call this: it is a collective under DDP)."""
    means = torch.tensor([np.mean(v) for v in running.values()], dtype=torch.float64, device=device)
    return dict(zip(running, distributed.reduce_mean(means).tolist()))


def check_finite_loss(loss: torch.Tensor, step: int, epoch: int) -> None:
    """Stop on a non-finite loss: NonFiniteLossError on every rank when any rank's loss is not
    finite (their mean is not), as a rank stopping alone would leave the others waiting in DDP."""
    mean = distributed.reduce_mean(loss)
    if not torch.isfinite(mean):
        raise NonFiniteLossError(f"non-finite loss {mean.item()} at step {step} (epoch {epoch}"
                                 f"{', mean over ranks' if distributed.is_distributed() else ''}); stopping the run")


def _check_resumed_config(saved: dict, config: Config, checkpoint: Path, implicit: bool, warn: bool) -> None:
    """`--resume auto` continues the same run, so a checkpoint written with other settings (those in
    RESUME_FREE_KEYS aside) is refused; a checkpoint named on purpose resumes, with the changes printed."""
    changes = {key: change for key, change in config_changes(saved, to_dict(config)).items()
               if key not in RESUME_FREE_KEYS}
    if not changes:
        return
    listing = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
    if implicit:
        raise ConfigError(f"--resume auto: {checkpoint} was written with other settings ({listing}). Run with "
                          f"its settings, choose a new --out, or name the checkpoint to resume from it anyway")
    if warn:
        print(f"resuming {checkpoint} with changed settings: {listing}", flush=True)


def _save(out_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
          config: Config, is_main: bool) -> None:
    """Rank 0 writes the checkpoint, with every rank's RNG state so each resumes its own stream."""
    rng_states = [capture_rng_state()]
    if distributed.is_distributed():
        rng_states = [None] * distributed.get_world_size()
        torch.distributed.all_gather_object(rng_states, capture_rng_state())
    if is_main:
        save_checkpoint(checkpoint_path(out_dir, step), model=model, optimizer=optimizer, step=step,
                        config=to_dict(config), rng=rng_states)
        prune_checkpoints(out_dir, config.train.keep_last)
    distributed.barrier()


def _append_json_line(path: Path, record: dict) -> None:
    with path.open("a") as f:  # opened per record: a crashed run leaves nothing unwritten or open
        f.write(json.dumps(record) + "\n")


def _tensorboard(out_dir: Path):
    """A SummaryWriter when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(out_dir / "tensorboard")
