"""Pretraining loop (read top to bottom, like DINO's and MAE's main scripts).

One process per device under torchrun (DDP; nccl on GPU, gloo on CPU), or a single process.
Schedules are precomputed per optimizer step; a resumed run restores the named objects, the RNG
state and the position in the epoch, so it reaches the same weights as an uninterrupted run.
`pretrain` sets the run up, resumes it and loops over the epochs; `train_one_epoch` trains one.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mmssl import distributed
from mmssl.config import Config, ConfigError, config_changes, from_dict, run_tree, to_dict
from mmssl.data.dataset import SkipCounter
from mmssl.data.loader import RecoveringLoader
from mmssl.data.shards import ShardLoader
from mmssl.engine.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    loadable_checkpoint,
    prune_checkpoints,
    remove_partial_writes,
    restore_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from mmssl.engine.data import pretraining_batches
from mmssl.engine.distributed import DistInfo, global_batchnorm, init_distributed, wrap_ddp
from mmssl.engine.labelling import Labeller
from mmssl.engine.lock import RunLock
from mmssl.engine.monitor import MONITOR_KEYS, KnnMonitor, monitor_transfer
from mmssl.engine.optim import build_optimizer, cosine_schedule, set_lr
from mmssl.engine.precision import mixed_precision, to_channels_last_3d
from mmssl.errors import CheckpointError, MmsslError
from mmssl.io.checkpoint import read_checkpoint
from mmssl.tasks import build_task
from mmssl.tasks.model import TaskModel, build_run_encoder

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)
REFERENCE_BATCH = 32  # optim.lr is the rate for this total batch; scaled linearly otherwise
# settings that change how a run executes or logs, not what it computes: free to change on resume
RESUME_FREE_KEYS = frozenset({"data.num_workers", "train.compile", "train.log_every", "train.checkpoint_every",
                              "train.keep_last"}) | MONITOR_KEYS
RESUMED = ("config", "step", "rng", "model", "optimizer")  # the entries a resumed run reads
LOG_FILE_REDRAW_S = 60.0  # progress-bar redraws when stderr is a log file (nohup, batch jobs), not a terminal
T = TypeVar("T")


class NonFiniteLossError(MmsslError, FloatingPointError):
    """A run's loss is no longer finite: it stops, naming the step."""


def pretrain(config: Config, out_dir: str | Path, resume: str | None = None, shard_command: str | None = None) -> Path:
    """Train `config`'s task; write checkpoints and metrics.jsonl under `out_dir`; return the final
    checkpoint's path. `resume`: "auto" (the newest checkpoint in out_dir, if any) or a path; None
    (a fresh run) refuses an out_dir that holds checkpoints already: pruning would delete this run's.
    `shard_command`: the shell command that reads data.shards (from the command line only)."""
    out_dir = Path(out_dir)
    dist = init_distributed()
    lock = on_main(lambda: RunLock(out_dir).acquire(), dist.is_main)  # rank 0 owns the folder for the whole run
    try:
        return _train(config, out_dir, resume, dist, shard_command)
    finally:
        if lock is not None:
            lock.release()


def on_main(build: Callable[[], T], is_main: bool) -> T | None:
    """`build()` on rank 0, None on the others; a ConfigError it raises stops every rank, with its message."""
    built, refused = None, None
    if is_main:
        try:
            built = build()
        except ConfigError as e:
            refused = str(e)
    refused = distributed.broadcast_from_main(refused)
    if refused is not None:
        raise ConfigError(refused)
    return built


def _train(config: Config, out_dir: Path, resume: str | None, dist: DistInfo, shard_command: str | None) -> Path:
    """`pretrain` in the run's folder, once it owns it."""
    if dist.is_main and (partial := remove_partial_writes(out_dir)):
        print(f"removed {len(partial)} checkpoint file(s) a killed run left half written", flush=True)
    if resume is None and (found := latest_checkpoint(out_dir)) is not None:
        raise ConfigError(f"{out_dir} holds the checkpoints of another run ({found.name}): pass --resume auto "
                          "to continue it, or choose a new --out")
    torch.manual_seed(config.train.seed + dist.rank)
    np.random.seed(config.train.seed + dist.rank)

    task = build_task(config)
    dataset, batches = pretraining_batches(config, task, dist.rank, dist.world_size, dist.device, shard_command)
    model = TaskModel(task, build_run_encoder(config)).to(dist.device)
    if task.global_batchnorm:
        model = global_batchnorm(model, dist.device)
    if config.train.channels_last:
        to_channels_last_3d(model)
    optimizer = build_optimizer(model, config.optim)
    ddp = wrap_ddp(model, dist.device) if dist.world_size > 1 else model
    forward = torch.compile(ddp) if config.train.compile else ddp

    accumulate = config.optim.accumulate
    micro_per_epoch = batches.samples_per_epoch() // config.data.batch_size  # whole batches (both pad)
    if accumulate > micro_per_epoch:
        raise ConfigError(f"optim.accumulate={accumulate} is more than the {micro_per_epoch} batches of "
                          f"data.batch_size={config.data.batch_size} in an epoch of each of {dist.world_size} "
                          f"ranks ({len(dataset)} videos): no optimizer step would complete")
    steps_per_epoch = micro_per_epoch // accumulate
    total_steps = config.train.max_steps or config.train.epochs * steps_per_epoch
    total_batch = config.data.batch_size * accumulate * dist.world_size
    base_lr = config.optim.lr * total_batch / REFERENCE_BATCH
    lr_schedule = cosine_schedule(base_lr, config.optim.min_lr, total_steps,
                                  min(round(config.optim.warmup_epochs * steps_per_epoch), total_steps // 2))

    labeller = Labeller(config, model, dataset, dist.rank, dist.world_size, dist.device) if task.pseudo_labelled else None
    step, skip_state = 0, None
    if (resumed := _resume_checkpoint(out_dir, resume, dist)) is not None:
        resume_from, state = resumed
        _check_resumed_config(state["config"], config, resume_from, implicit=resume == "auto", warn=dist.is_main)
        step, skip_state = int(state["step"]), state.get("skips")  # older checkpoints have none
        if step > total_steps:
            raise ConfigError(f"--resume: {resume_from} is at step {step}, past this run's {total_steps} steps: "
                              "raise train.max_steps or train.epochs to train on from it")
        settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
        restore_checkpoint(state, resume_from, model=model, optimizer=optimizer)
        if labeller is not None:
            labeller.restore(state.get("pseudo_labels"), batches.sampler)
        if step == total_steps:  # nothing to train (once its weights are known to fit): it holds the run's end
            if dist.is_main:
                print(f"--resume: {resume_from} is at step {step}, this run's last: nothing left to train")
            return resume_from
        for group, own in zip(optimizer.param_groups, settings, strict=True):
            group.update(own)  # this config's hyperparameters (weight decay, betas, ...), not the checkpoint's
        rng_states = state["rng"]
        restore_rng_state(rng_states[dist.rank] if dist.rank < len(rng_states) else rng_states[0])
        if dist.is_main:
            print(f"resumed from {resume_from} at step {step}")

    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2))
    skips = SkipCounter(config.data.max_skip_share, len(dataset), dataset.excluded)
    if skip_state is not None:
        skips.restore(skip_state, {row.path for row in dataset.rows}, dist.is_main)
    monitor = KnnMonitor(config.monitor.every, on_main(lambda: monitor_transfer(config, dist.device),
                                                       dist.is_main and config.monitor.every > 0))
    run_log = RunLog(out_dir, dist.is_main, f"pretrain {task.name}", total_steps, step)
    window = LogWindow()
    if step == 0:  # the encoder at random init: the level its training starts from
        monitor(model, step, total_steps, 0, run_log, window)
    while step < total_steps:
        if labeller is not None and labeller.due(*divmod(step, steps_per_epoch)):
            start = time.perf_counter()
            labeller.run(step // steps_per_epoch, step, optimizer, batches.sampler, run_log)
            window.start += time.perf_counter() - start  # kept out of the log window's throughput
        step = train_one_epoch(model, ddp, forward, optimizer, batches, step, lr_schedule=lr_schedule,
                               steps_per_epoch=steps_per_epoch, config=config, dist=dist, skips=skips,
                               window=window, run_log=run_log, out_dir=out_dir, monitor=monitor,
                               labeller=labeller)
    run_log.close()
    distributed.barrier()
    return checkpoint_path(out_dir, total_steps)


def _resume_checkpoint(out_dir: Path, resume: str | None, dist: DistInfo) -> tuple[Path, dict] | None:
    """The checkpoint to resume from and its entries, read on every rank: "auto": the newest in `out_dir`
    that loads (rank 0 chooses, setting damaged newer ones aside), None when there is none; a path: that
    file, where one that does not load is a ConfigError in one line."""
    if resume is None:
        return None
    found = loadable_checkpoint(out_dir, dist.device, RESUMED) if resume == "auto" and dist.is_main else None
    path = distributed.broadcast_from_main(found and found[0]) if resume == "auto" else Path(resume)
    if path is None:
        return None
    try:
        return path, found[1] if found else read_checkpoint(path, dist.device, needs=RESUMED)
    except CheckpointError as e:
        raise ConfigError(f"--resume: {e}, or choose a new --out") from None


def train_one_epoch(model: TaskModel, ddp: nn.Module, forward: Callable[[dict], dict[str, torch.Tensor]],
                    optimizer: torch.optim.Optimizer, batches: RecoveringLoader | ShardLoader, step: int, *,
                    lr_schedule: np.ndarray, steps_per_epoch: int, config: Config, dist: DistInfo,
                    skips: SkipCounter, window: LogWindow, run_log: RunLog, out_dir: Path, monitor: KnnMonitor,
                    labeller: Labeller | None = None) -> int:
    """Train the epoch that optimizer step `step` falls in, from that step to the epoch's end (or the
    run's, at `len(lr_schedule)` steps); return the step reached. Each step accumulates the gradient
    of `optim.accumulate` micro-batches (DDP syncs on the last one only); `model` is what `ddp` wraps
    and `forward` runs (compiled or not). Logs every `train.log_every` steps, runs `monitor` at its
    steps, checkpoints every `train.checkpoint_every` and at the run's end (with the `labeller`'s labels,
    for a task trained on pseudo-labels), and reports the epoch's skipped samples."""
    total_steps, accumulate, batch_size = len(lr_schedule), config.optim.accumulate, config.data.batch_size
    epoch, step_in_epoch = divmod(step, steps_per_epoch)
    autocast = mixed_precision(dist.device, config.train.amp)
    skips.start_epoch()
    wait_start = time.perf_counter()
    for micro, batch in enumerate(batches.epoch(epoch, start=step_in_epoch * accumulate * batch_size)):
        window.data_wait += time.perf_counter() - wait_start
        skipped = batch.pop("skipped")  # failed decodes, each replaced by another row's sample
        size = len(next(iter(batch.values()), []))  # short only if a sample gave up: the update then stops the run
        skips.update(skipped, unreplaced=batch_size - size)
        batch = {k: v.to(dist.device, non_blocking=True) for k, v in batch.items()}
        set_lr(optimizer, float(lr_schedule[step]))
        model.task.set_step(step, total_steps)
        last_micro = (micro + 1) % accumulate == 0
        sync = nullcontext() if last_micro or dist.world_size == 1 else ddp.no_sync()
        with sync, autocast:
            out = forward(batch)
            loss = out["loss"]
            check_finite_loss(loss, step, epoch)
            (loss / accumulate).backward()
        for name, value in out.items():
            window.values[name].append(float(value.detach()))
        window.samples += size * dist.world_size
        if last_micro:
            if config.optim.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            run_log.bar.update(1)
            if step % config.train.log_every == 0 or step == total_steps:
                log_window(run_log, window, step, epoch, float(lr_schedule[step - 1]), dist.device)
            monitor(model, step, total_steps, epoch, run_log, window)
            if step % config.train.checkpoint_every == 0 or step == total_steps:
                _save(out_dir, step, model, optimizer, config, skips, dist.is_main, labeller)
            if step == total_steps or step % steps_per_epoch == 0:
                break
        wait_start = time.perf_counter()
    log_skips(run_log, skips, epoch)
    return step


class LogWindow:
    """What the micro-batches since the last log record add up to (a window may span epochs)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.values: dict[str, list[float]] = defaultdict(list)  # each of the forward's outputs, per micro-batch
        self.start, self.data_wait, self.samples = time.perf_counter(), 0.0, 0


class RunLog:
    """Where a run reports: its progress bar (shown on rank 0 only), and on rank 0 metrics.jsonl
    (appended to) and TensorBoard (when its package is installed)."""

    def __init__(self, out_dir: Path, is_main: bool, desc: str, total_steps: int, step: int) -> None:
        self.is_main = is_main
        self.postfix: dict[str, str] = {}  # what the progress bar shows after its count
        self.metrics = out_dir / "metrics.jsonl" if is_main else None
        if self.metrics:
            drop_replayed(self.metrics, step)
        self.tensorboard: SummaryWriter | None = _tensorboard(out_dir) if is_main else None
        self.bar = tqdm(total=total_steps, initial=step, disable=not is_main, dynamic_ncols=True, desc=desc,
                        mininterval=0.1 if sys.stderr.isatty() else LOG_FILE_REDRAW_S)

    def write(self, record: dict) -> None:
        """One line of metrics.jsonl, flushed (on rank 0; nothing elsewhere)."""
        if self.metrics:
            with open(self.metrics, "a") as f:  # a line at a time: a killed run leaves whole records
                f.write(json.dumps(record) + "\n")

    def report(self, record: dict) -> None:
        """`write` a record of `step`, and its other values as TensorBoard scalars `pretrain/<key>`."""
        self.write(record)
        if self.tensorboard:
            for key, value in record.items():
                if key != "step":
                    self.tensorboard.add_scalar(f"pretrain/{key}", value, record["step"])

    def show(self, **values: str) -> None:
        """Set these values on the progress bar (drawn at its next redraw), keeping the others."""
        self.postfix |= values
        self.bar.set_postfix(self.postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()
        if self.tensorboard:
            self.tensorboard.close()


def drop_replayed(metrics: Path, step: int) -> None:
    """Keep the records of `metrics` (a metrics.jsonl) before the first one past `step`, where the run
    starts: a killed run's records after its checkpoint are logged again, so each step stays logged once
    (a fresh run, step 0: none kept). The file is replaced atomically."""
    lines = metrics.read_text().splitlines(keepends=True) if step and metrics.exists() else []
    end = next((i for i, line in enumerate(lines) if _record_step(line) > step), len(lines))
    partial = metrics.with_name(f".{metrics.name}.tmp")
    partial.write_text("".join(lines[:end]))
    partial.replace(metrics)


def _record_step(line: str) -> float:
    """A metrics.jsonl line's step: -1 for a record of none (an epoch's skips), infinity for a line a
    kill cut short."""
    try:
        return json.loads(line).get("step", -1)
    except ValueError:
        return float("inf")


def log_window(run_log: RunLog, window: LogWindow, step: int, epoch: int, lr: float, device: torch.device) -> None:
    """Report the window that ends at `step` (means over its micro-batches and the ranks, samples per
    second, the share of time spent waiting for data) and start the next one. Every rank calls this."""
    elapsed = time.perf_counter() - window.start
    record = {"step": step, "epoch": epoch, "lr": lr, **window_means(window.values, device),
              "samples_per_s": window.samples / elapsed, "data_wait_share": window.data_wait / elapsed}
    run_log.show(loss=f"{record['loss']:.4f}", sps=f"{record['samples_per_s']:.0f}",
                 wait=f"{record['data_wait_share']:.0%}")
    run_log.report(record)
    window.reset()


def log_skips(run_log: RunLog, skips: SkipCounter, epoch: int) -> None:
    """Report the failed decodes of `epoch`, summed over the ranks (each decodes its own share; every
    rank calls this), the run's distinct bad files, and the rows left out before the run."""
    attempts = distributed.sum_counters(skips.epoch_attempts)
    if attempts and run_log.is_main:
        run_log.bar.write(f"epoch {epoch}: failed decodes: {skips.summary(attempts)}")
    run_log.write({"epoch": epoch, "skipped": dict(attempts), "bad_files": dict(skips.bad_kinds()),
                   "excluded": dict(skips.excluded)})


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
    RESUME_FREE_KEYS aside) is refused; a checkpoint named on purpose resumes, with the changes printed.
    The saved config is read as this version reads it (`from_dict`: renamed keys moved, settings added
    since at their defaults), and only the sections the run uses are compared."""
    free = RESUME_FREE_KEYS - ({"data.num_workers"} if config.data.shards else set())  # shards: workers split them
    changes = {key: change for key, change in config_changes(run_tree(to_dict(from_dict(saved))),
                                                             run_tree(to_dict(config))).items() if key not in free}
    if not changes:
        return
    listing = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
    if implicit:
        raise ConfigError(f"--resume auto: {checkpoint} was written with other settings ({listing}). Run with "
                          f"its settings, choose a new --out, or name the checkpoint to resume from it anyway")
    if warn:
        print(f"resuming {checkpoint} with changed settings: {listing}", flush=True)


def _save(out_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
          config: Config, skips: SkipCounter, is_main: bool, labeller: Labeller | None = None) -> None:
    """Rank 0 writes the checkpoint, with every rank's RNG state so each resumes its own stream, the
    run's bad files and failed decodes, so a resumed run counts them still, and the `labeller`'s labels."""
    skip_state = skips.state()
    rng_states = [capture_rng_state()]
    if distributed.is_distributed():
        rng_states = [None] * distributed.get_world_size()
        torch.distributed.all_gather_object(rng_states, capture_rng_state())
    if is_main:
        save_checkpoint(checkpoint_path(out_dir, step), model=model, optimizer=optimizer, step=step,
                        config=to_dict(config), rng=rng_states, encoder_input=model.task.encoder_input,
                        skips=skip_state, **({"pseudo_labels": labeller.state()} if labeller else {}))
        prune_checkpoints(out_dir, config.train.keep_last)
    distributed.barrier()


def _tensorboard(out_dir: Path) -> SummaryWriter | None:
    """A SummaryWriter when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(out_dir / "tensorboard")
