#!/usr/bin/env python
"""Training-step throughput: precision/layout/compile variants against fp32 eager, and the input
pipeline against batches already on the device.

Part 1 (compute): one supervised training step (uint8 clips on the device -> float, normalise ->
encoder -> linear classifier -> cross-entropy -> AdamW) per variant: fp32 eager (the reference),
bf16 autocast, + channels_last_3d, + torch.compile. Reported: steps/s, clips/s, the ratio to fp32
eager measured in the same run, and MFU = counted FLOP/s over the device's peak (--peak-tflops; the
FLOPs of one step are counted by torch.utils.flop_counter, forward + backward).
Part 2 (end to end): the same step fed by the real PretextDataset DataLoader (decoding SynthAV in
worker processes, pinned memory, uint8 to the device) for several worker counts: data-wait share
and step time over the compute-only step time.

  python tools/bench_train.py [--encoder r2plus1d_18] [--frames 16] [--size 112] [--batch 32]
                              [--workers 0 2 4 8 16] [--compile] [--out runs/bench_train.json]
  python tools/bench_train.py --quick      (tiny3d, small clips: seconds on a CPU; what CI runs)
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from mmssl.data.dataset import PretextDataset, collate  # noqa: E402
from mmssl.data.manifest import class_names, read_manifest  # noqa: E402
from mmssl.data.synthetic import ensure_synthav  # noqa: E402
from mmssl.eval.transfer import LabeledClips  # noqa: E402
from mmssl.models import build_video_encoder  # noqa: E402
from mmssl.transforms.video import to_model_input  # noqa: E402

VARIANTS = {  # name: (bf16 autocast, channels_last_3d, torch.compile)
    "fp32 eager": (False, False, False),
    "bf16 autocast": (True, False, False),
    "bf16 + channels_last_3d": (True, True, False),
    "bf16 + channels_last_3d + compile": (True, True, True),
}
NUM_CLASSES = 10


class Classifier(nn.Module):
    def __init__(self, encoder_name: str) -> None:
        super().__init__()
        self.encoder = build_video_encoder(encoder_name)
        self.fc = nn.Linear(self.encoder.feature_dim, NUM_CLASSES)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(clips))


def make_step(encoder: str, device: torch.device, bf16: bool, channels_last: bool, compile_: bool):
    """A training-step function on uint8 [B, T, H, W, C] clips and labels."""
    torch.manual_seed(0)
    model = Classifier(encoder).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compile_ else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def step(frames: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = to_model_input(frames)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast:
            loss = F.cross_entropy(forward(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, batches: list[tuple[torch.Tensor, torch.Tensor]], warmup: int, steps: int,
               device: torch.device) -> float:
    """Seconds per step over `steps` steps after `warmup` (cycling through `batches`)."""
    for i in range(warmup):
        step(*batches[i % len(batches)])
    synchronize(device)
    start = time.perf_counter()
    for i in range(steps):
        step(*batches[i % len(batches)])
    synchronize(device)
    return (time.perf_counter() - start) / steps


def count_flops(encoder: str, device: torch.device, frames: torch.Tensor, labels: torch.Tensor) -> int:
    """FLOPs of one fp32 training step (forward + backward), counted by PyTorch's FLOP counter."""
    step = make_step(encoder, device, bf16=False, channels_last=False, compile_=False)
    with FlopCounterMode(display=False) as counter:
        step(frames, labels)
    return counter.get_total_flops()


def compute_part(args: argparse.Namespace, device: torch.device) -> dict:
    shape = (args.batch, args.frames, args.size, args.size, 3)
    batches = [(torch.randint(0, 256, shape, dtype=torch.uint8, device=device),
                torch.randint(0, NUM_CLASSES, (args.batch,), device=device)) for _ in range(2)]
    flops = count_flops(args.encoder, device, *batches[0])
    results = {}
    for name, (bf16, channels_last, compile_) in VARIANTS.items():
        if compile_ and not args.compile:
            continue
        seconds = time_steps(make_step(args.encoder, device, bf16, channels_last, compile_), batches,
                             args.warmup, args.steps, device)
        results[name] = {"step_s": seconds, "steps_per_s": 1 / seconds, "clips_per_s": args.batch / seconds,
                         "tflops": flops / seconds / 1e12}
    reference = results["fp32 eager"]["step_s"]
    for r in results.values():
        r["speedup_vs_fp32_eager"] = reference / r["step_s"]
        r["mfu"] = r["tflops"] / args.peak_tflops if args.peak_tflops else None
    return {"flops_per_step": flops, "variants": results}


def end_to_end_part(args: argparse.Namespace, device: torch.device, variant: str) -> dict:
    bf16, channels_last, compile_ = VARIANTS[variant]
    step = make_step(args.encoder, device, bf16, channels_last, compile_)
    manifest = ensure_synthav(args.synthav_dir)
    rows = [r for r in read_manifest(manifest) if r.label]
    clips = LabeledClips(class_names(rows), args.frames, args.stride, 1, random=True)
    dataset = PretextDataset(rows, clips, args.size)

    def to_device(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return (batch["frames"][:, 0].to(device, non_blocking=True),
                batch["label"].to(device, non_blocking=True))

    resident = [to_device(collate([dataset[i] for i in range(args.batch)]))]
    compute_s = time_steps(step, resident, args.warmup, args.steps, device)
    results = {"variant": variant, "compute_only_step_s": compute_s, "workers": {}}
    for workers in args.workers:
        loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, collate_fn=collate, drop_last=True,
                            num_workers=workers, pin_memory=device.type == "cuda",
                            prefetch_factor=4 if workers else None, persistent_workers=workers > 0)
        wait = total = 0.0
        done = 0
        while done < args.warmup + args.steps:
            start = time.perf_counter()
            for batch in loader:
                got = time.perf_counter()
                if "frames" in batch:
                    step(*to_device(batch))
                    synchronize(device)
                if done >= args.warmup:
                    wait += got - start
                    total += time.perf_counter() - start
                done += 1
                if done >= args.warmup + args.steps:
                    break
                start = time.perf_counter()
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
    parser.add_argument("--synthav-dir", default="data/synthav")
    parser.add_argument("--quick", action="store_true", help="tiny3d, 8x32x32 clips, batch 4, 2 steps")
    parser.add_argument("--out", default="runs/bench_train.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.encoder, args.frames, args.size, args.batch, args.steps, args.warmup = "tiny3d", 8, 32, 4, 2, 1
        args.workers = [0, 1]
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
    print(f"\nend to end ({fastest}), SynthAV at {args.size}px: compute-only step "
          f"{pipeline['compute_only_step_s'] * 1e3:.1f} ms")
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
