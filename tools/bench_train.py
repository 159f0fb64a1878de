#!/usr/bin/env python
"""Training-step throughput: precision/layout/compile variants against fp32 eager, and the input
pipeline against batches already on the device.

Part 1 (compute): one supervised training step (uint8 clips on the device -> float, normalise ->
encoder -> linear classifier -> cross-entropy -> AdamW) per variant: fp32 eager (the reference),
bf16 autocast, + channels_last_3d, + torch.compile. Reported: steps/s, clips/s, the ratio to fp32
eager measured in the same run, and MFU = counted FLOP/s over the device's peak (--peak-tflops; the
FLOPs of one step are counted by torch.utils.flop_counter, forward + backward).
Part 2 (end to end): a pretraining step (the trainer's TaskModel and DataLoader for
--pretrain-config, AVTS by default: video clip + audio window decoded in the workers; augmentation,
log-mel and the loss on the device), in the fastest variant of part 1, fed by the loader for several
worker counts (pinned memory, uint8 to the device) against the same step on one batch resident on
the device: data-wait share and step time over the compute-only step time; and one process's
decode rate (samples/s of the dataset alone), so the workers the step needs. SynthAV is made at
--size px (data/synthav_<size>px) so that the workers decode frames of the trained size.

  python tools/bench_train.py [--encoder r2plus1d_18] [--frames 16] [--size 112] [--batch 32]
                              [--workers 0 2 4 8 16] [--compile] [--pretrain-config FILE]
                              [--out runs/bench_train.json]
  python tools/bench_train.py --quick      (tiny3d, small clips: seconds on a CPU; what CI runs)
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mmssl.config import Config, load_config
from mmssl.data.dataset import collate
from mmssl.data.loader import build_loader
from mmssl.data.synthetic import SynthAVConfig, ensure_synthav
from mmssl.engine.data import pretraining_data
from mmssl.engine.optim import build_optimizer
from mmssl.engine.precision import to_channels_last_3d
from mmssl.models import build_video_encoder
from mmssl.tasks import build_task
from mmssl.tasks.model import TaskModel, build_run_encoder
from mmssl.transforms.video import to_model_input

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: (bf16 autocast, channels_last_3d, torch.compile)
    "fp32 eager": (False, False, False),
    "bf16 autocast": (True, False, False),
    "bf16 + channels_last_3d": (True, True, False),
    "bf16 + channels_last_3d + compile": (True, True, True),
}
NUM_CLASSES = 10


class Classifier(nn.Module):
    """Supervised action recognition with the trainer's interface: forward(batch) -> {"loss": ...}
    on uint8 [B, T, H, W, C] "frames" and "label"."""

    def __init__(self, encoder_name: str) -> None:
        super().__init__()
        self.encoder = build_video_encoder(encoder_name)
        self.fc = nn.Linear(self.encoder.feature_dim, NUM_CLASSES)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.fc(self.encoder(to_model_input(batch["frames"])))
        return {"loss": F.cross_entropy(logits, batch["label"])}


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, bf16: bool, channels_last: bool,
              compile_: bool) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """One optimizer step of `model` (forward(batch) -> {"loss": ...}, as the trainer's TaskModel)
    on a batch dict already on the device, in a variant of VARIANTS."""
    if channels_last:
        to_channels_last_3d(model)
    forward = torch.compile(model) if compile_ else model
    autocast = torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast:
            loss = forward(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def classifier_step(encoder: str, device: torch.device, *variant: bool) -> Callable[[dict], torch.Tensor]:
    """The supervised step of part 1 on a fresh seeded Classifier."""
    torch.manual_seed(0)
    model = Classifier(encoder).to(device)
    return make_step(model, torch.optim.AdamW(model.parameters(), lr=1e-4), *variant)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(run: Callable[[], object], warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per call of `run` (a training step, or a sample's decode) over `steps` calls after `warmup`."""
    for _ in range(warmup):
        run()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        run()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def count_flops(encoder: str, device: torch.device, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one fp32 training step (forward + backward), counted by PyTorch's FLOP counter."""
    step = classifier_step(encoder, device, False, False, False)
    with FlopCounterMode(display=False) as counter:
        step(batch)
    return counter.get_total_flops()


def compute_part(args: argparse.Namespace, device: torch.device) -> dict:
    shape = (args.batch, args.frames, args.size, args.size, 3)
    batches = [{"frames": torch.randint(0, 256, shape, dtype=torch.uint8, device=device),
                "label": torch.randint(0, NUM_CLASSES, (args.batch,), device=device)} for _ in range(2)]
    flops = count_flops(args.encoder, device, batches[0])
    results = {}
    for name, (bf16, channels_last, compile_) in VARIANTS.items():
        if compile_ and not args.compile:
            continue
        step, cycle = classifier_step(args.encoder, device, bf16, channels_last, compile_), itertools.cycle(batches)
        seconds = time_steps(lambda step=step, cycle=cycle: step(next(cycle)), args.warmup, args.steps, device)
        results[name] = {"step_s": seconds, "steps_per_s": 1 / seconds, "clips_per_s": args.batch / seconds,
                         "tflops": flops / seconds / 1e12}
    reference = results["fp32 eager"]["step_s"]
    for r in results.values():
        r["speedup_vs_fp32_eager"] = reference / r["step_s"]
        r["mfu"] = r["tflops"] / args.peak_tflops if args.peak_tflops else None
    return {"flops_per_step": flops, "variants": results}


def pretrain_config(args: argparse.Namespace) -> Config:
    """`args.pretrain_config` at the benchmark's encoder, clip length, stride, frame size and batch,
    on the SynthAV folder of `args.synthav_dir` (made at `args.size` px when missing)."""
    config = load_config(args.pretrain_config, [f"model.video_encoder={args.encoder}", f"data.frame_size={args.size}",
                                                f"data.batch_size={args.batch}", f"data.synthav_dir={args.synthav_dir}",
                                                "data.manifest=''", "data.split=pretrain"])
    clips = getattr(config.task, config.task.name)
    for key, value in (("clip_len", args.frames), ("stride", args.stride)):
        if hasattr(clips, key):
            setattr(clips, key, value)
    ensure_synthav(args.synthav_dir, None if Path(args.synthav_dir, "manifest.csv").exists()
                   else SynthAVConfig(size=args.size))
    return config


def end_to_end_part(args: argparse.Namespace, device: torch.device, variant: str) -> dict:
    """The pretraining step of `args.pretrain_config` fed by the trainer's DataLoader (decoding SynthAV
    in worker processes, pinned memory, uint8 to the device) for each worker count, against the same
    step on one batch resident on the device."""
    config = pretrain_config(args)
    torch.manual_seed(0)
    model = TaskModel(build_task(config), build_run_encoder(config)).to(device)
    task, step = model.task, make_step(model, build_optimizer(model, config.optim), *VARIANTS[variant])
    dataset, sampler = pretraining_data(config, task)

    def to_device(batch: dict) -> dict[str, torch.Tensor]:
        batch.pop("skipped")
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    resident = to_device(collate([dataset[(0, i)] for i in range(args.batch)]))
    compute_s = time_steps(lambda: step(resident), args.warmup, args.steps, device)
    unseen = itertools.count(args.batch)  # samples not decoded yet (the resident batch is)
    decode_s = time_steps(lambda: dataset[(0, next(unseen) % len(dataset))], args.warmup, 4 * args.batch, device)
    results = {"variant": variant, "task": task.name, "config": args.pretrain_config,
               "compute_only_step_s": compute_s, "decode_samples_per_s": 1 / decode_s,
               "workers_to_feed_compute": math.ceil(args.batch / compute_s * decode_s), "workers": {}}
    for workers in args.workers:
        loader = build_loader(dataset, sampler, batch_size=config.data.batch_size, num_workers=workers,
                              seed=config.train.seed, device=device)
        wait = total = 0.0
        done = epoch = 0
        while done < args.warmup + args.steps:
            sampler.set_epoch(epoch)
            epoch += 1
            start = time.perf_counter()
            for batch in loader:
                got = time.perf_counter()
                step(to_device(batch))  # whole batches: a failed decode is replaced (pretraining_data)
                synchronize(device)
                if done >= args.warmup:
                    wait += got - start
                    total += time.perf_counter() - start
                done += 1
                if done >= args.warmup + args.steps:
                    break
                start = time.perf_counter()
        del loader  # stops its persistent workers before the next count starts its own
        step_s = total / args.steps
        results["workers"][str(workers)] = {"step_s": step_s, "data_wait_share": wait / total,
                                            "end_to_end_over_compute": step_s / compute_s,
                                            "clips_per_s": args.batch / step_s}
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="r2plus1d_18")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--stride", type=int, default=2, help="frame stride of the end-to-end clips")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4, 8, 16])
    parser.add_argument("--compile", action="store_true", help="include the torch.compile variant")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak for MFU (bf16 dense; e.g. an H100 SXM's 989)")
    parser.add_argument("--pretrain-config", default=str(ROOT / "configs/pretrain/avts.yaml"),
                        help="the pretext task of the end-to-end part (its clip_len and stride become "
                             "--frames and --stride)")
    parser.add_argument("--synthav-dir", default=None,
                        help="SynthAV folder of the end-to-end part (default: data/synthav, or "
                             "data/synthav_<size>px made at --size px)")
    parser.add_argument("--quick", action="store_true", help="tiny3d, 8x32x32 clips, batch 4, 2 steps")
    parser.add_argument("--out", default="runs/bench_train.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.encoder, args.frames, args.size, args.batch, args.steps, args.warmup = "tiny3d", 8, 32, 4, 2, 1
        args.workers = [0, 1]
    if args.synthav_dir is None:
        args.synthav_dir = "data/synthav" if args.size == SynthAVConfig.size else f"data/synthav_{args.size}px"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    compute = compute_part(args, device)
    fastest = min(compute["variants"], key=lambda name: compute["variants"][name]["step_s"])
    pipeline = end_to_end_part(args, device, fastest)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"\n{args.encoder}, batch {args.batch} x {args.frames}x{args.size}x{args.size}, on {device_name}; "
          f"{compute['flops_per_step'] / 1e9:.1f} GFLOP per step (forward + backward, counted)")
    print(f"{'variant':<36} {'steps/s':>8} {'clips/s':>8} {'x fp32 eager':>12} {'TFLOP/s':>8} {'MFU':>6}")
    for name, r in compute["variants"].items():
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        print(f"{name:<36} {r['steps_per_s']:>8.2f} {r['clips_per_s']:>8.1f} {r['speedup_vs_fp32_eager']:>12.2f} "
              f"{r['tflops']:>8.2f} {mfu:>6}")
    print(f"\nend to end: {pipeline['task']} pretraining ({Path(args.pretrain_config).name}, {fastest}), "
          f"SynthAV at {args.size}px: compute-only step "
          f"{pipeline['compute_only_step_s'] * 1e3:.1f} ms")
    print(f"one process decodes {pipeline['decode_samples_per_s']:.0f} samples/s (the task's window, "
          f"made into a sample): >= {pipeline['workers_to_feed_compute']} workers keep the compute-only step fed")
    print(f"{'workers':>7} {'step ms':>8} {'clips/s':>8} {'data wait':>9} {'e2e / compute':>13}")
    for workers, r in pipeline["workers"].items():
        print(f"{workers:>7} {r['step_s'] * 1e3:>8.1f} {r['clips_per_s']:>8.1f} {r['data_wait_share']:>9.0%} "
              f"{r['end_to_end_over_compute']:>13.2f}")
    report = {"device": device_name, "torch": torch.__version__, "args": vars(args), "compute": compute,
              "end_to_end": pipeline}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
