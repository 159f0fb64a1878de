#!/usr/bin/env python
"""Pretraining samples/s streamed from tar shards against read from the files, per DataLoader worker count.

For each dataset (the SynthAV in --data/synthav, as `make demo` makes it, and a longer one at a real
video's resolution, --data/synthav_320px_10s: SynthAV at 320x320 px, 30 fps, 10 s a video; each made
there when missing, the long one with --long-videos videos), its pretraining videos are packed into
SHARDS_PER_WORKER shards per worker of the most in --workers, in --work (`pack_shards`, timed: the
one-off cost). Then --epochs epochs of configs/pretrain/order.yaml's samples (Shuffle and Learn: its
frame size, batch size and stored motion profiles; no model) per worker count in --workers, from the
files (the trainer's `RecoveringLoader` on the manifest, persistent workers) and from the shards
(`ShardLoader`, persistent workers too), each measured in this run: samples/s over the epochs and
shards over files. Both read a local disk here: what shards save on network storage (one sequential
read per shard instead of a random read and a metadata lookup per clip) is not measured; this is
their cost or gain on one machine.

  python tools/bench_shards.py [--workers 1 2] [--epochs 3] [--long-videos 48] [--out runs/bench_shards.json]
  python tools/bench_shards.py --quick      (SynthAV alone, tiny when made here, 1 worker: the tests)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from mmssl.config import load_config
from mmssl.data.loader import RecoveringLoader
from mmssl.data.manifest import read_manifest
from mmssl.data.shards import ShardDataset, ShardLoader, ShardSource, pack_shards
from mmssl.data.synthetic import SynthAVConfig, ensure_synthav
from mmssl.engine.data import pretraining_data
from mmssl.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/pretrain/order.yaml"
SHARDS_PER_WORKER = 4  # several, as a run wants: the short sets' shards are small


def datasets(long_videos: int) -> dict[str, tuple[str, SynthAVConfig]]:
    """name: (folder under --data, the SynthAV made there when it holds none)."""
    return {"synthav": ("synthav", SynthAVConfig()),
            "synthav_320px_10s": ("synthav_320px_10s", SynthAVConfig(
                size=320, fps=30.0, duration=10.0, num_pretrain=long_videos, train_per_class=0, test_per_class=0,
                short_share=0.0))}


QUICK = {"synthav": ("synthav", SynthAVConfig(size=32, fps=8.0, duration=3.0, num_pretrain=16, train_per_class=0,
                                              test_per_class=0, short_share=0.0))}


def rate(loader: RecoveringLoader | ShardLoader, epochs: int) -> dict:
    """Samples/s of `epochs` epochs of `loader`."""
    start, samples = time.perf_counter(), 0
    for epoch in range(epochs):
        for batch in loader.epoch(epoch):
            samples += len(batch["label"])
    seconds = time.perf_counter() - start
    return {"samples": samples, "seconds": seconds, "samples_per_s": samples / seconds}


def measure(manifest: Path, shards: Path, workers: int, epochs: int) -> dict[str, dict]:
    """`epochs` epochs of each way with `workers` DataLoader workers (a task each: each points its motion
    weightings at its own profiles)."""
    files_config = load_config(CONFIG, [f"data.manifest={manifest}", "data.split=pretrain"])
    dataset, sampler = pretraining_data(files_config, build_task(files_config))
    batch_size = files_config.data.batch_size
    files = RecoveringLoader(dataset, sampler, batch_size=batch_size, num_workers=workers, seed=0,
                             device=torch.device("cpu"))
    streamed = ShardDataset(ShardSource(str(shards)), build_task(files_config), files_config.data.frame_size, split="pretrain",
                            workers=workers, batch_size=batch_size)
    sharded = ShardLoader(streamed, batch_size=batch_size, num_workers=workers, device=torch.device("cpu"))
    result = {"files": rate(files, epochs), "shards": rate(sharded, epochs)}
    del files  # stops its workers
    return result


def report(data: dict) -> str:
    machine = data["machine"]
    lines = [(f"Shuffle and Learn's DataLoader, no model, {data['epochs']} epochs each: frame size {data['frame_size']}, batch "
              f"{data['batch_size']}; {machine['cpus_usable']} CPUs ({machine['cpu_model']}); local disk"),
             "",
             (f"{'dataset':<18} {'videos':>6} {'shards':>6} {'pack s':>6} {'workers':>7} {'files/s':>8} "
              f"{'shards/s':>8} {'shards/files':>12}")]
    for name, d in data["datasets"].items():
        head = [name, d["videos"], d["shards"], f"{d['pack_seconds']:.1f}"]
        for workers, m in d["runs"].items():
            lines.append(f"{head[0]:<18} {head[1]:>6} {head[2]:>6} {head[3]:>6} {workers:>7} "
                         f"{m['files']['samples_per_s']:>8.1f} {m['shards']['samples_per_s']:>8.1f} "
                         f"{m['shards']['samples_per_s'] / m['files']['samples_per_s']:>12.2f}")
            head = [""] * 4
    lines.append("pack s: packing the videos into shards, once")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"), help="where the datasets are (made when missing)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_shards"), help="the shards")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DataLoader worker counts")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--long-videos", type=int, default=48, help="videos of the long set, when made here")
    parser.add_argument("--quick", action="store_true", help="SynthAV alone (tiny when made here), 1 worker")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_shards.json"))
    args = parser.parse_args(argv)
    chosen = QUICK if args.quick else datasets(args.long_videos)
    worker_counts = [1] if args.quick else args.workers
    args.epochs = 1 if args.quick else args.epochs
    config = load_config(CONFIG)
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.machine())
    data = {"frame_size": config.data.frame_size, "batch_size": config.data.batch_size, "epochs": args.epochs,
            "machine": {"cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": cpu_model, "torch": torch.__version__},
            "datasets": {}}
    for name, (folder, synthav) in chosen.items():
        manifest = ensure_synthav(args.data / folder, None if (args.data / folder / "manifest.csv").exists() else synthav,
                                  max(worker_counts))
        files = sum(os.path.getsize(row.path) for row in read_manifest(manifest, "pretrain"))
        shard_bytes = files // (SHARDS_PER_WORKER * max(worker_counts)) + 1
        packed = pack_shards(manifest, args.work / name, shard_bytes, max(worker_counts), split="pretrain")
        runs = {workers: measure(manifest, args.work / name, workers, args.epochs) for workers in worker_counts}
        data["datasets"][name] = {"videos": len(packed.rows), "shards": len(packed.shards),
                                  "pack_seconds": packed.seconds, "runs": runs}
    print(report(data))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2))
    print(f"wrote {args.out}")
    return data


if __name__ == "__main__":
    main()
