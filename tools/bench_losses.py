#!/usr/bin/env python
"""Loss benchmark: forward + backward time of every loss in mmssl.losses against its naive reference.

For each case of mmssl/losses/reference.py (every loss; the contrastive ones also with group labels,
the triplet loss with both minings), each batch size and device: the median time of forward +
backward of the vectorised module and of the slow, readable reference on the same random float32
inputs, their ratio naive / optimised (both measured in this run), and the relative difference of
the two loss values. CPU, and CUDA when available. Prints a table and writes JSON.

  python tools/bench_losses.py [--sizes 256 4096] [--dim 128] [--cases nt_xent moco ...]
                               [--devices cpu cuda] [--repeats 5] [--budget 20] [--threads N]
                               [--out FILE.json]
  python tools/bench_losses.py --quick      # seconds: batch 32, dim 16, CPU only

The references loop in Python over anchors (or feature pairs), so at batch 4096 one naive run takes
seconds: each measurement stops after --budget seconds (a single slow run is then its own sample).
MoCo's queue holds 4096 keys here (reference.QUEUE_SIZE), not the 65536 of the paper.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from mmssl.losses.reference import CASES


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(loss_fn: Callable[..., Tensor], inputs: dict[str, Tensor], device: torch.device,
             repeats: int, budget_s: float) -> tuple[float, float]:
    """(median seconds of forward + backward, loss of the first run) over up to 1 + `repeats` runs.

    The first run is a warm-up, kept only when the budget ran out before a second one.
    """
    times: list[float] = []
    first_loss = float("nan")
    start = time.perf_counter()
    while len(times) <= repeats and (not times or time.perf_counter() - start < budget_s):
        for value in inputs.values():
            value.grad = None
        begin = time.perf_counter()
        loss = loss_fn(**inputs)
        loss.backward()
        _sync(device)
        times.append(time.perf_counter() - begin)
        if len(times) == 1:
            first_loss = loss.item()
    return statistics.median(times[1:] or times), first_loss


def _inputs(name: str, size: int, dim: int, device: torch.device) -> dict[str, Tensor]:
    """The case's random inputs as float32 leaves that require grad (labels and masks as they are)."""
    raw = CASES[name].inputs(size, dim, torch.Generator().manual_seed(size))
    return {key: value.float().to(device).requires_grad_() if value.is_floating_point() else value.to(device)
            for key, value in raw.items()}


def bench(name: str, size: int, dim: int, device: torch.device, repeats: int, budget_s: float) -> dict:
    """One row: optimised and naive timings of case `name` at batch `size`, on `device`."""
    case = CASES[name]
    torch.manual_seed(0)
    module = case.build(dim).to(device)
    inputs = _inputs(name, size, dim, device)
    # the reference first: it reads MoCo's queue, which each forward of the module changes
    naive_s, naive_loss = _measure(partial(case.reference, module), inputs, device, repeats, budget_s)
    optimised_s, loss = _measure(module, inputs, device, repeats, budget_s)
    return {"optimised_ms": 1e3 * optimised_s, "naive_ms": 1e3 * naive_s, "ratio": naive_s / optimised_s,
            "loss": loss, "loss_rel_diff": abs(loss - naive_loss) / max(abs(naive_loss), 1e-12)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 4096],
                        help="batch sizes (default 256 4096)")
    parser.add_argument("--dim", type=int, default=128, help="feature dimension (default 128)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES), metavar="CASE",
                        help=f"which cases (default all: {' '.join(CASES)})")
    parser.add_argument("--devices", nargs="+", default=None, choices=["cpu", "cuda"],
                        help="default: cpu, and cuda when available")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after the warm-up (default 5)")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds after which a measurement stops repeating (default 20)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)")
    parser.add_argument("--out", default="runs/bench_losses.json", help="JSON report (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 32, dim 16, CPU, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.dim, args.devices, args.repeats, args.budget = [32], 16, ["cpu"], 1, 1.0
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices cuda: CUDA is not available")

    results: dict[str, dict[str, dict[str, dict]]] = {}
    print(f"{'case':<20} {'device':<6} {'batch':>6} {'optimised ms':>13} {'naive ms':>11} {'ratio':>8} "
          f"{'loss rel diff':>14}")
    for name in args.cases:
        for device_name in devices:
            for size in args.sizes:
                row = bench(name, size, args.dim, torch.device(device_name), args.repeats, args.budget)
                results.setdefault(name, {}).setdefault(device_name, {})[str(size)] = row
                print(f"{name:<20} {device_name:<6} {size:>6} {row['optimised_ms']:>13.2f} "
                      f"{row['naive_ms']:>11.1f} {row['ratio']:>7.1f}x {row['loss_rel_diff']:>14.1e}",
                      flush=True)
    report = {
        "dim": args.dim, "sizes": args.sizes, "dtype": "float32", "repeats": args.repeats,
        "budget_s": args.budget,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name() if "cuda" in devices else None},
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
