#!/usr/bin/env python
"""Shuffle and Learn's input pipeline with and without stored motion profiles, and a worker's memory.

For each dataset (the SynthAV in --data/synthav, as `make demo` makes it, and a longer one at a real
video's resolution, --data/synthav_320px_10s: SynthAV at 320x320 px, 30 fps, 10 s a video, 200
videos; each made there when missing), two manifests of its pretraining videos in --work: `plain`,
without profiles (every DataLoader worker decodes each video it meets in full at motion.size px,
then caches its profile), and `stored`, whose profiles `store_profiles` computes first (timed: the
one-off cost, in --workers processes) for the workers to memory-map. Each is read for --epochs epochs by the trainer's
DataLoader (--workers persistent workers; configs/pretrain/order.yaml's frame size, batch size and
motion settings; no model): samples/s per epoch, and stored over plain, both measured in this run.

Then a worker's memory as it meets --videos distinct videos (profiles of 10 s at 30 fps, random:
no decode), each way in a process forked for it: `plain` fills the worker's bounded cache
(CACHE_VIDEOS), `stored` reads a memory-mapped sidecar. Reported: growth of the resident memory
(VmRSS) and of its anonymous part (RssAnon: the process's own, not the file pages a map shares).

  python tools/bench_motion.py [--epochs 3] [--workers 2] [--out runs/bench_motion.json]
  python tools/bench_motion.py --quick      (SynthAV alone, tiny when made here, 2 epochs, 1 worker: the tests)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from mmssl.config import load_config
from mmssl.data.loader import build_loader
from mmssl.data.manifest import ManifestRow, read_manifest, write_manifest
from mmssl.data.motion import (
    CACHE_VIDEOS,
    MOTION_COLUMN,
    MotionWeighting,
    store_profiles,
    use_stored_profiles,
    write_profiles,
)
from mmssl.data.synthetic import SynthAVConfig, ensure_synthav
from mmssl.engine.data import pretraining_data
from mmssl.io import probe
from mmssl.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/pretrain/order.yaml"
DATASETS = {  # name: (folder under --data, the SynthAV made there when it holds none)
    "synthav": ("synthav", SynthAVConfig()),
    "synthav_320px_10s": ("synthav_320px_10s", SynthAVConfig(size=320, fps=30.0, duration=10.0, num_pretrain=200,
                                                              train_per_class=0, test_per_class=0, short_share=0.0)),
}
QUICK = {"synthav": ("synthav", SynthAVConfig(size=32, fps=8.0, duration=3.0, num_pretrain=16, train_per_class=0,
                                              test_per_class=0, short_share=0.0))}
PROFILE_FRAMES = 300  # the memory part's videos: 10 s at 30 fps


def manifests(name: str, folder: Path, config: SynthAVConfig, work: Path, workers: int) -> tuple[Path, Path, float]:
    """The `plain` and `stored` manifests of the pretraining videos of the SynthAV in `folder` (made
    with `config` when there is none; one there is kept whatever its settings) in `work`, and the
    seconds `store_profiles` took for the stored one."""
    made = ensure_synthav(folder, None if (folder / "manifest.csv").exists() else config, workers)
    rows = read_manifest(made, split="pretrain")
    plain = write_manifest([replace(row, extra={k: v for k, v in row.extra.items() if k != MOTION_COLUMN})
                            for row in rows], work / name / "plain.csv")
    stored = store_profiles(rows, work / name / "stored.csv", workers=workers)
    return plain, write_manifest(stored.rows, work / name / "stored.csv"), stored.seconds


def epochs_per_s(manifest: Path, epochs: int, workers: int) -> tuple[int, list[dict]]:
    """The videos Shuffle and Learn uses of `manifest`, and the samples/s of each epoch of its
    DataLoader (persistent workers: their caches live on from epoch to epoch)."""
    config = load_config(CONFIG, [f"data.manifest={manifest}", "data.split=pretrain"])
    task = build_task(config)
    dataset, sampler = pretraining_data(config, task)
    loader = build_loader(dataset, sampler, batch_size=config.data.batch_size, num_workers=workers,
                          seed=config.train.seed, device=torch.device("cpu"))
    results = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        start, samples = time.perf_counter(), 0
        for batch in loader:
            samples += len(batch["label"])
        seconds = time.perf_counter() - start
        results.append({"epoch": epoch + 1, "samples": samples, "seconds": seconds, "samples_per_s": samples / seconds})
    del loader  # stops its workers
    return len(dataset), results


def rss_mb() -> dict[str, float]:
    """VmRSS and RssAnon of this process in MB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(status[key].split()[0]) / 1024 for key in ("VmRSS", "RssAnon")}


def memory_probe(way: str, videos: int, work: Path) -> list[dict]:
    """Run in a process of its own: RSS as one MotionWeighting meets `videos` distinct videos, `way` "plain"
    (their profiles handed to its cache, as a worker's decodes would) or "stored" (read from a
    memory-mapped sidecar)."""
    profiles = np.random.default_rng(0).random((videos, PROFILE_FRAMES - 1), dtype=np.float32).astype(np.float16)
    rows = [ManifestRow(f"video{i}.mp4", fps=30.0, num_frames=PROFILE_FRAMES) for i in range(videos)]
    weighting = MotionWeighting()
    if way == "stored":
        manifest = work / "memory" / "stored.csv"
        rows = write_profiles(rows, list(profiles), manifest)
        use_stored_profiles([weighting], manifest, rows)
        profiles = None  # the worker has only the sidecar
    readings = []
    for i, row in enumerate(rows):
        if i % max(videos // 4, 1) == 0:
            readings.append({"videos": i, **rss_mb()})
        if profiles is not None:
            weighting.cache.get(row.path, lambda i=i: profiles[i].copy())
        weighting.profile(row)
    return [*readings, {"videos": videos, **rss_mb(), "cached": len(weighting.cache)}]


def measure_memory(videos: int, work: Path) -> dict[str, dict]:
    """`memory_probe` each way, each in a process of its own forked from this one, as DataLoader workers
    are (called first, while this process holds little)."""
    readings = {}
    for way in ("plain", "stored"):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            readings[way] = pool.submit(memory_probe, way, videos, work).result()
    return {way: {"readings": r, "cached": r[-1]["cached"], "rss_growth_mb": r[-1]["VmRSS"] - r[0]["VmRSS"],
                  "anon_growth_mb": r[-1]["RssAnon"] - r[0]["RssAnon"]} for way, r in readings.items()}


def report(data: dict) -> str:
    settings, machine = data["settings"], data["machine"]
    lines = [(f"Shuffle and Learn's DataLoader, no model: {settings['workers']} workers, frame size "
              f"{settings['frame_size']}, batch {settings['batch_size']}; {machine['cpus_usable']} CPUs "
              f"({machine['cpu_model']})"),
             "",
             (f"{'dataset':<18} {'videos':>6} {'frames':>6} {'size':>7} {'profiles s':>10} {'epoch':>5} "
              f"{'plain/s':>8} {'stored/s':>8} {'stored/plain':>12}")]
    for name, d in data["datasets"].items():
        head = [name, d["videos"], d["frames_per_video"], d["size"], f"{d['store_seconds']:.1f}"]
        for plain, stored in zip(d["plain"], d["stored"]):
            lines.append(f"{head[0]:<18} {head[1]:>6} {head[2]:>6} {head[3]:>7} {head[4]:>10} {plain['epoch']:>5} "
                         f"{plain['samples_per_s']:>8.1f} {stored['samples_per_s']:>8.1f} "
                         f"{stored['samples_per_s'] / plain['samples_per_s']:>12.2f}")
            head = [""] * 5
    lines += ["profiles s: storing every video's profile, once, in as many processes as workers",
              "",
              (f"a worker meeting {settings['videos']:,} distinct videos of {PROFILE_FRAMES} frames (cache bound "
               f"{CACHE_VIDEOS:,} videos), a forked process each way:"),
              f"{'way':<7} {'RSS growth MB':>13} {'RssAnon growth MB':>17} {'cached':>7}"]
    lines += [f"{way:<7} {m['rss_growth_mb']:>13.1f} {m['anon_growth_mb']:>17.1f} {m['cached']:>7}"
              for way, m in data["memory"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"),
                        help="folder of the datasets: synthav/ and synthav_320px_10s/ (each made when missing)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_motion"), help="the manifests and profiles")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, and the processes storing profiles")
    parser.add_argument("--videos", type=int, default=2 * CACHE_VIDEOS, help="distinct videos of the memory part")
    parser.add_argument("--quick", action="store_true",
                        help="SynthAV alone (16 tiny videos when made here), 2 epochs, 1 worker, 2,000 videos")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_motion.json"))
    args = parser.parse_args(argv)
    datasets = QUICK if args.quick else DATASETS
    if args.quick:
        args.epochs, args.workers, args.videos = 2, 1, 2000
    torch.set_num_threads(1)
    memory = measure_memory(args.videos, args.work)
    config = load_config(CONFIG)
    results = {}
    for name, (folder, synthav) in datasets.items():
        plain, stored, seconds = manifests(name, args.data / folder, synthav, args.work, args.workers)
        rows = read_manifest(plain)
        info = probe(rows[0].path)
        results[name] = {"frames_per_video": int(np.median([r.num_frames for r in rows])),
                         "size": f"{info.width}x{info.height}", "store_seconds": seconds}
        for way, manifest in (("plain", plain), ("stored", stored)):
            results[name]["videos"], results[name][way] = epochs_per_s(manifest, args.epochs, args.workers)
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    machine = {"cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": cpu_model, "torch": torch.__version__}
    data = {"machine": machine,
            "settings": {"epochs": args.epochs, "workers": args.workers, "videos": args.videos,
                         "frame_size": config.data.frame_size, "batch_size": config.data.batch_size,
                         "motion": asdict(config.task.order.motion)},
            "datasets": results, "memory": memory}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(report(data))
    print(f"\nwrote {args.out}")
    return data


if __name__ == "__main__":
    main()
