#!/usr/bin/env python
"""flow_similarity's worker cost: the optical flow of a sample against the decode of its window.

For --videos pretraining videos of SynthAV (--synthav-dir; made there when missing) and each
--frame-sizes size, one window each as configs/pretrain/flow_similarity.yaml draws it: the decode of
its frames (`decode_window`, the reference), the Farneback flow between its last two frames
(`optical_flow`), and the rest of `make_sample` (the balanced pixel sampling), each the median over
the videos, in this process (as one DataLoader worker). SynthAV is 64 px: a larger size scales the
decoded frames up, so it shows how the flow's cost grows with its pixels rather than a real decode. flow / decode says whether the flow belongs
in the workers (a small share of a sample's cost) or should be computed once per video and stored.

  python tools/bench_flow.py [--videos 100] [--frame-sizes 64 128] [--out runs/bench_flow.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from mmssl.config import load_config
from mmssl.data.dataset import decode_window
from mmssl.data.manifest import read_manifest
from mmssl.data.synthetic import ensure_synthav
from mmssl.tasks import build_task
from mmssl.tasks.flow_similarity import optical_flow

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/pretrain/flow_similarity.yaml"
T = TypeVar("T")


def timed(call: Callable[..., T], *args: object) -> tuple[T, float]:
    start = time.perf_counter()
    out = call(*args)
    return out, time.perf_counter() - start


def measure(rows: list, frame_size: int, seed: int) -> dict:
    """Median ms per sample of the decode, the flow and the whole `make_sample` at `frame_size` px."""
    task = build_task(load_config(CONFIG, [f"data.frame_size={frame_size}"]))
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {"decode": [], "flow": [], "make_sample": []}
    for row in (row for row in rows if row.num_frames >= task.min_frames(row.fps)):
        clip, decode = timed(decode_window, row, task.window(row, rng), frame_size)
        _, flow = timed(optical_flow, clip.video[-2], clip.video[-1])
        _, sample = timed(task.make_sample, clip, rng)
        for key, seconds in zip(times, (decode, flow, sample)):
            times[key].append(seconds)
    ms = {f"{key}_ms": 1000 * float(np.median(values)) for key, values in times.items()}
    return {"frame_size": frame_size, **ms, "flow_over_decode": ms["flow_ms"] / ms["decode_ms"],
            "make_sample_over_decode": ms["make_sample_ms"] / ms["decode_ms"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthav-dir", default="data/synthav")
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--frame-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_flow.json")
    args = parser.parse_args(argv)
    manifest = ensure_synthav(args.synthav_dir)
    rows = read_manifest(manifest, "pretrain")[:args.videos]
    results = [measure(rows, size, args.seed) for size in args.frame_sizes]
    print(f"{len(rows)} videos of {manifest}, median per sample, one process, OpenCV {cv2.__version__}")
    print("| frame px | decode ms | flow ms | make_sample ms | flow / decode | make_sample / decode |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['frame_size']} | {r['decode_ms']:.2f} | {r['flow_ms']:.2f} | {r['make_sample_ms']:.2f} | "
              f"{r['flow_over_decode']:.3f} | {r['make_sample_over_decode']:.3f} |")
    report = {"manifest": str(manifest), "videos": len(rows), "opencv": cv2.__version__,
              "machine": platform.processor() or platform.machine(), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
