#!/usr/bin/env python
"""Benchmark the video decoding backends of mmssl.io: correctness first, then speed and memory.

For each generated file (a SynthAV video, a 720p long-GOP file, a short-GOP 320x240 file, a cut
of it with an mp4 edit list, and a DVD-size MPEG-2 program stream with open GOPs that starts inside a
GOP, as a split VOB does) and each access pattern (16 consecutive frames, 16 frames at stride 4,
4 scattered frames, one frame in the first and one in the last tenth of the file), every backend reads the same random samples, the backends taking turns read
by read, each read through a fresh `VideoReader` (a DataLoader worker opens a file per sample)
with one decoder thread, resized in the decoder to the file's read size. Reported per cell:
clips/s, frames/s and their ratio to a sequential single-thread decode of the same file at the
same size measured in the same run; and the share of reads whose frames equal the sequential
reference decode byte for byte (checked on a second pass of the same reads at native size, since
each backend resizes with its own filter; a read that raises counts as not exact, by its error's
kind). The two single-frame patterns show whether a read's cost is bounded by the GOP or grows with
the frame's place in the file. Also: the time of a 1 s audio window read from a fresh
open, and the resident memory of each backend after many reads, each in a fresh process.

The default backend is chosen from the numbers: a backend must be frame-exact on every file and
keep its memory flat; the fastest of those wins. Timings vary by 15-25% between runs, more on a
busy machine; the exactness counts do not.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from mmssl.data.synthetic import GENERATOR_VERSION, SynthAVConfig, plan, render_video, video_rng
from mmssl.io import BACKENDS, MediaError, VideoReader, load_audio, probe, write_media
from mmssl.io.container import FrameIndex, media_errors, open_container, video_stream
from mmssl.io.video import Size, frame_to_array
from mmssl.io.writer import cut_without_reencoding, split_stream

OTHER_DECODERS = ("torchcodec",)  # libraries worth benchmarking that mmssl has no backend for
LEAK_LIMIT_MB = 100.0  # more RSS growth than this over the memory reads disqualifies a backend
AUDIO_WINDOW_S = 1.0
AUDIO_RATE = 16000
SCENE_AUDIO_RATE = 44100  # the generated scenes carry stereo AAC at this rate, like most web video
ENCODER_OPTIONS = {"preset": "superfast", "x264-params": "scenecut=0"}  # B-frames, GOP kept exact
MPEG2_OPTIONS = {"bf": "2", "b": "6000000"}  # as DVDs: 2 B-frames, open GOPs (no +cgop), 6 Mbit/s
COUNTS = {"reads": (30, 3), "mem_reads": (2000, 30), "audio_reads": (20, 3)}  # (default, --quick)
SEQUENTIAL_MIN_SECONDS = (0.5, 0.1)  # (default, --quick): repeat the sequential decode this long


@dataclass(frozen=True)
class Pattern:
    """Which frames one read asks for: `length` frames `stride` apart at a random start (clamped
    to the last frame when the video is shorter, as samplers pad), or with `stride=None`
    `length` distinct random frames in increasing order. `within`: the share of the file (from, to)
    the start is drawn from."""

    name: str
    length: int
    stride: int | None
    within: tuple[float, float] = (0.0, 1.0)

    def sample(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        if self.stride is None:
            return np.sort(rng.choice(num_frames, size=min(self.length, num_frames), replace=False))
        span = (self.length - 1) * self.stride + 1
        last = max(num_frames - span, 0)
        low, high = (round(share * last) for share in self.within)
        start = rng.integers(low, max(high, low + 1))
        return np.minimum(start + self.stride * np.arange(self.length), num_frames - 1)


PATTERNS = (Pattern("clip16", 16, 1), Pattern("clip16_stride4", 16, 4), Pattern("scattered4", 4, None),
            Pattern("frame_first10pct", 1, 1, (0.0, 0.1)), Pattern("frame_last10pct", 1, 1, (0.9, 1.0)))
MEMORY_PATTERN = PATTERNS[0]


@dataclass(frozen=True)
class Scene:
    """A generated moving scene: drifting colour gradients with two moving shapes, H.264 + AAC."""

    width: int
    height: int
    fps: int
    seconds: float
    gop: int

    def description(self) -> str:
        return f"moving scene, {self.fps} fps, GOP {self.gop}, H.264 (B-frames) + AAC"

    def file_name(self) -> str:
        return f"scene_{self.width}x{self.height}_{self.fps}fps_{self.seconds:g}s_gop{self.gop}.mp4"

    def write(self, path: Path) -> None:
        """Encode the scene (all frames are held in memory: 830 MB at 720p for 10 s)."""
        num_frames = round(self.seconds * self.fps)
        write_media(path, self.frames(num_frames), self.fps, self.audio(), SCENE_AUDIO_RATE,
                    gop=self.gop, options=ENCODER_OPTIONS)

    def write_split_program_stream(self, path: Path) -> None:
        """Encode the scene as MPEG-2 in a program stream, and keep it from a third of its bytes on
        (`split_stream`): it starts inside a GOP, as a DVD's second VOB file or a capture does. Without
        audio: an MP2 track split so starts with a partial packet that does not decode."""
        whole = path.with_name(f"whole_{path.name}")
        write_media(whole, self.frames(round(self.seconds * self.fps)), self.fps, video_codec="mpeg2video",
                    gop=self.gop, options=MPEG2_OPTIONS)
        split_stream(whole, path, whole.stat().st_size // 3)
        whole.unlink()

    def frames(self, num_frames: int) -> np.ndarray:
        """uint8 [T, H, W, 3]: every frame differs from the others (needed to tell frames apart)."""
        h, w = self.height, self.width
        gx = (np.arange(w) * 256 // w).astype(np.uint8)[None, :]
        gy = (np.arange(h) * 256 // h).astype(np.uint8)[:, None]
        side = max(h // 6, 4)
        yy, xx = np.ogrid[:side, :side]
        disk = (2 * yy - side + 1) ** 2 + (2 * xx - side + 1) ** 2 < side ** 2
        frames = np.empty((num_frames, h, w, 3), dtype=np.uint8)
        for i in range(num_frames):
            progress = i / num_frames
            frames[i, ..., 0] = gx + gy // 2 + np.uint8(2 * i % 256)  # uint8 wraps: moving bands
            frames[i, ..., 1] = gy - gx // 3 + np.uint8(3 * i % 256)
            frames[i, ..., 2] = 96
            top = int((h - side) * (0.5 + 0.4 * math.sin(6 * math.pi * progress)))
            left = int((w - side) * progress)
            frames[i, top:top + side, left:left + side][disk] = (250, 250, 40)
            left = int((w - side) * (1 - progress))
            frames[i, h - 2 * side:h - side, left:left + side] = (20, 20, 200)
        return frames

    def audio(self) -> np.ndarray:
        """Stereo float32 [2, samples]: a tone with a slow tremolo."""
        t = np.arange(round(self.seconds * SCENE_AUDIO_RATE)) / SCENE_AUDIO_RATE
        tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
        return np.stack([tone, tone]).astype(np.float32)


@dataclass(frozen=True)
class MediaFile:
    """One benchmark input, generated into the work folder when missing."""

    name: str
    description: str
    path: Path
    read_size: Size | None  # decoder output size of the timed reads; None = native
    make: Callable[[Path], object]

    def ensure(self) -> Path:
        """The file, written first (atomically) when the work folder lacks it."""
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f"partial_{self.path.name}")
            self.make(partial)
            os.replace(partial, self.path)
        return self.path


def write_synthav_video(path: Path) -> None:
    """The first full-length SynthAV video with audio of the default dataset (same frames and
    audio as its file in `make demo`'s dataset)."""
    config = SynthAVConfig()
    spec = next(s for s in plan(config) if s.has_audio and not s.short)
    frames, audio, _ = render_video(config, spec.action, video_rng(config, spec.index))
    write_media(path, frames, config.fps, audio, config.sample_rate)


def media_files(work: Path, quick: bool) -> list[MediaFile]:
    """The inputs, in the order they must be made (a cut needs its source)."""
    if quick:
        long_gop, short_gop, cut_s = Scene(192, 108, 30, 2, 250), Scene(128, 96, 30, 2, 15), 0.9
        dvd, long_size, short_size = Scene(176, 144, 25, 3, 12), (64, 64), (64, 86)
    else:
        long_gop, short_gop, cut_s = Scene(1280, 720, 30, 10, 250), Scene(320, 240, 30, 10, 30), 2.5
        dvd, long_size, short_size = Scene(720, 576, 25, 15, 12), (112, 112), (128, 171)
    short_path = work / short_gop.file_name()
    synthav = SynthAVConfig()
    return [
        MediaFile("synthav", f"SynthAV video, {synthav.fps:g} fps, H.264 + AAC",
                  work / f"synthav_v{GENERATOR_VERSION}.mp4", None, write_synthav_video),
        MediaFile("long_gop", long_gop.description(), work / long_gop.file_name(), long_size,
                  long_gop.write),
        MediaFile("short_gop", short_gop.description(), short_path, short_size, short_gop.write),
        MediaFile("short_gop_cut", f"short_gop cut at {cut_s:g} s, -c copy: mp4 edit list",
                  short_path.with_name(f"{short_path.stem}_cut{cut_s:g}s.mp4"), short_size,
                  lambda dst: cut_without_reencoding(short_path, dst, cut_s)),
        MediaFile("mpeg2_ps_split", f"MPEG-2 program stream, {dvd.fps} fps, 2 B-frames, open GOPs of "
                  f"{dvd.gop}, starting inside a GOP (a split VOB)",
                  work / f"mpeg2_{dvd.width}x{dvd.height}_{dvd.seconds:g}s_gop{dvd.gop}_split.mpg", short_size,
                  dvd.write_split_program_stream),
    ]


def sequential_frames(path: Path) -> Iterator[av.VideoFrame]:
    """Every displayed frame, in order, from one single-threaded sequential decode: the reference
    (as `read_all_frames`, but streamed, and with the decoder pinned to one thread)."""
    with open_container(path) as container:
        stream = video_stream(path, container)
        stream.codec_context.thread_count = 1
        with media_errors(path):
            yield from container.decode(stream)


def sequential_fps(path: Path, min_seconds: float, convert: bool, size: Size | None = None) -> float:
    """Frames/s of sequential decodes of the whole file, repeated for at least `min_seconds`;
    with `convert`, every frame is also turned into an RGB array of `size` (as readers return)."""
    frames, start, reformatter = 0, perf_counter(), VideoReformatter()
    while True:
        for frame in sequential_frames(path):
            if convert:
                frame_to_array(frame, size, reformatter)
            frames += 1
        elapsed = perf_counter() - start
        if elapsed >= min_seconds:
            return frames / elapsed


def frame_hash(frame: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16).digest()


def read_frames(path: Path, size: Size | None, backend: str, indices: np.ndarray) -> torch.Tensor:
    """One sample as a DataLoader worker reads it: open, decode the frames, close."""
    with VideoReader(path, size=size, backend=backend, threads=1) as reader:
        return reader.get_frames(indices)


def try_read(path: Path, size: Size | None, backend: str, indices: np.ndarray) -> torch.Tensor | MediaError:
    """`read_frames`, or the `MediaError` it raised (the file's frames stay the same to a dataset: a
    sample that fails is skipped, and the bench counts it)."""
    try:
        return read_frames(path, size, backend, indices)
    except MediaError as e:
        return e


def time_reads(path: Path, size: Size | None, backends: list[str], samples: list[np.ndarray],
               ) -> dict[str, np.ndarray]:
    """Seconds each read of each backend takes, after one untimed warm-up read each (imports,
    caches). The backends take turns on every sample, in alternating order, so that a load
    change on the machine affects them alike."""
    for backend in backends:
        try_read(path, size, backend, samples[0])
    seconds: dict[str, list[float]] = {backend: [] for backend in backends}
    for k, indices in enumerate(samples):
        for backend in backends if k % 2 == 0 else backends[::-1]:
            start = perf_counter()
            try_read(path, size, backend, indices)
            seconds[backend].append(perf_counter() - start)
    return {backend: np.asarray(times) for backend, times in seconds.items()}


def check_reads(path: Path, backend: str, samples: list[np.ndarray], reference: list[bytes]) -> dict:
    """Read the samples at native size and compare every frame with the reference decode.
    `wrong_frames` counts the wrong frames by what they are instead: "+k" when a frame equals
    reference frame i + k, "no match" when it equals none, the error's kind for a read that raised."""
    number_of = {digest: i for i, digest in enumerate(reference)}
    exact_reads = 0
    wrong: Counter[str] = Counter()
    for indices in samples:
        frames = try_read(path, None, backend, indices)
        if isinstance(frames, MediaError):
            wrong[frames.kind] += len(indices)
            continue
        hashes = [frame_hash(frame) for frame in frames.numpy()]
        expected = [reference[i] if i < len(reference) else None for i in indices]
        exact_reads += expected == hashes
        for i, h, e in zip(indices, hashes, expected):
            if e != h:
                found = number_of.get(h)
                wrong["no match" if found is None else f"{found - int(i):+d}"] += 1
    return {"exact_reads": exact_reads, "checked_reads": len(samples),
            "exact_share": exact_reads / len(samples), "wrong_frames": dict(wrong)}


def run_up_frames(index: FrameIndex, indices: np.ndarray) -> int:
    """The frames from the keyframe before each wanted frame to it (an edit list's hidden pre-roll not
    counted): what a decoder decodes for one read when it decodes every frame on the way."""
    key_frames = np.searchsorted(index.pts, index.keyframe_pts)  # frame number at each keyframe
    keys = np.searchsorted(index.keyframe_pts, index.pts[indices], side="right") - 1
    needed = np.zeros(index.num_frames, dtype=bool)
    for first, last in zip(key_frames[keys], indices):
        needed[first:last + 1] = True
    return int(needed.sum())


def audio_window_ms(path: Path, duration_s: float, reads: int, rng: np.random.Generator) -> float:
    """Mean milliseconds to load a 1 s window at a random start, the file opened afresh."""
    starts = rng.uniform(0, max(duration_s - AUDIO_WINDOW_S, 0), reads)
    load_audio(path, 0.0, AUDIO_WINDOW_S, AUDIO_RATE)  # warm-up
    start = perf_counter()
    for start_s in starts:
        load_audio(path, float(start_s), AUDIO_WINDOW_S, AUDIO_RATE)
    return (perf_counter() - start) / reads * 1000


def rss_mb() -> dict[str, float]:
    """Resident (VmRSS) and peak resident (VmHWM) memory of this process in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # reported in kB
    return fields


def memory_probe(path: Path, size: Size | None, backend: str, reads: int, seed: int) -> dict:
    """Run in a fresh process: RSS after a warm-up read and after `reads` more reads of
    MEMORY_PATTERN, each through a fresh reader."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    num_frames = probe(path).num_frames
    read_frames(path, size, backend, MEMORY_PATTERN.sample(num_frames, rng))
    before = rss_mb()
    for _ in range(reads):
        read_frames(path, size, backend, MEMORY_PATTERN.sample(num_frames, rng))
    after = rss_mb()
    return {"reads": reads, "rss_before_mb": before["VmRSS"],
            "rss_after_mb": after["VmRSS"], "growth_mb": after["VmRSS"] - before["VmRSS"],
            "peak_mb": after["VmHWM"]}


def bench_file(media: MediaFile, backends: list[str], reads: int, audio_reads: int, min_seconds: float,
               seed: int) -> tuple[dict, dict]:
    """The file's description and reference numbers, and its results per pattern and backend."""
    path = media.ensure()
    info = probe(path)
    with VideoReader(path) as reader:
        index = reader.index
    reformatter = VideoReformatter()
    reference = [frame_hash(frame_to_array(frame, None, reformatter)) for frame in sequential_frames(path)]
    seq_fps = sequential_fps(path, min_seconds, convert=True, size=media.read_size)
    decode_fps = sequential_fps(path, min_seconds, convert=False)
    rng = np.random.default_rng(seed)
    summary = {
        "description": media.description, "path": str(path), "width": info.width,
        "height": info.height, "fps": info.fps, "num_frames": info.num_frames, "sequential_frames": len(reference),
        "keyframes": len(index.keyframe_pts), "edit_list_preroll": bool(index.keyframe_pts[0] < index.pts[0]),
        "read_size": list(media.read_size) if media.read_size else None,
        "sequential_fps": seq_fps, "sequential_decode_only_fps": decode_fps,
        "audio_window_ms": audio_window_ms(path, info.duration, audio_reads, rng) if info.has_audio else None,
    }
    results: dict[str, dict] = {}
    for pattern in PATTERNS:
        samples = [pattern.sample(info.num_frames, rng) for _ in range(reads)]
        work = float(np.mean([run_up_frames(index, s) for s in samples]))
        results[pattern.name] = {}
        for backend, times in time_reads(path, media.read_size, backends, samples).items():
            seconds = float(times.sum())
            frames_per_s = reads * pattern.length / seconds
            results[pattern.name][backend] = {
                "reads": reads, "seconds": seconds, "median_read_ms": float(np.median(times)) * 1000,
                "clips_per_s": reads / seconds,
                "frames_per_s": frames_per_s, "ratio_to_sequential": frames_per_s / seq_fps,
                "run_up_frames_per_read": work, "work_ratio": reads * work / seconds / decode_fps,
                **check_reads(path, backend, samples, reference),
            }
    return summary, results


def measure_memory(media: MediaFile, backends: list[str], reads: int, seed: int) -> dict:
    """`memory_probe` for every backend at once, each in its own newly spawned process."""
    path = media.ensure()
    with ProcessPoolExecutor(len(backends), mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        futures = {b: pool.submit(memory_probe, path, media.read_size, b, reads, seed) for b in backends}
        return {b: {"file": media.name, "pattern": MEMORY_PATTERN.name, **f.result()}
                for b, f in futures.items()}


def choose_backend(results: dict, memory: dict, backends: list[str]) -> dict:
    """Correctness first: frame-exact on every file and RSS growth under LEAK_LIMIT_MB; then the
    highest geometric mean of clips/s over all cells."""
    rejected: dict[str, list[str]] = {b: [] for b in backends}
    speed = {}
    for backend in backends:
        cells = [(name, pattern, by_backend[backend]) for name, by_pattern in results.items()
                 for pattern, by_backend in by_pattern.items()]
        for name, pattern, cell in cells:
            if cell["exact_share"] < 1:
                rejected[backend].append(f"{name}/{pattern}: {cell['exact_reads']}/{cell['checked_reads']}"
                                         " reads frame-exact")
        if memory[backend]["growth_mb"] > LEAK_LIMIT_MB:
            rejected[backend].append(f"RSS grew {memory[backend]['growth_mb']:.0f} MB over "
                                     f"{memory[backend]['reads']} reads")
        speed[backend] = math.exp(np.mean([math.log(cell["clips_per_s"]) for *_, cell in cells]))
    eligible = [b for b in backends if not rejected[b]]
    chosen = max(eligible, key=speed.__getitem__) if eligible else None
    if chosen is None:
        reason = "no backend is frame-exact on every file with flat memory"
    elif len(eligible) == 1:
        reason = f"{chosen} is the only backend frame-exact on every file with flat memory"
    else:
        reason = f"fastest (geometric mean clips/s) of the frame-exact backends {eligible}"
    return {"backend": chosen, "reason": reason,
            "rule": f"frame-exact on every file and pattern, RSS growth <= {LEAK_LIMIT_MB:g} MB, then "
                    "highest geometric mean of clips/s over all cells",
            "geomean_clips_per_s": speed, "rejected": {b: r for b, r in rejected.items() if r}}


def machine_info() -> dict:
    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    cpu_model = next((line.split(":", 1)[1].strip() for line in
                      Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    return {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "cpu_model": cpu_model, "python": platform.python_version(), "torch": torch.__version__,
            "av": av.__version__, "pyav_libavcodec": "{}.{}.{}".format(*av.library_versions["libavcodec"]),
            "decord": version("decord"), **{name: version(name) for name in OTHER_DECODERS}}


def backend_status() -> dict[str, str]:
    status = {name: "benchmarked" for name in BACKENDS}
    for name in OTHER_DECODERS:
        status[name] = ("installed, but mmssl has no backend for it" if importlib.util.find_spec(name)
                        else "not installed")
    return status


def format_table(headers: list[str], rows: list[list[object]]) -> str:
    """Fixed-width columns: text left-aligned, numbers right-aligned."""
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.0f}"
        return "-" if value is None else str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
               for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, text)])


def report(data: dict) -> str:
    m = data["machine"]
    lines = [(f"machine: {m['cpus_usable']} CPUs ({m['cpu_model']}), Python {m['python']}, "
              f"torch {m['torch']}, av {m['av']} (libavcodec {m['pyav_libavcodec']}), decord {m['decord']}"),
             "backends: " + ", ".join(f"{b} {s}" for b, s in data["backends"].items()),
             f"every read opens a fresh reader, 1 decoder thread; {data['settings']['reads']} reads per cell",
             ""]
    lines.append(format_table(
        ["file", "size", "frames", "seq frames", "keyframes", "read at", "seq f/s", "seq decode-only f/s",
         "audio 1s ms", "what"],
        [[name, f"{f['width']}x{f['height']}", f["num_frames"], f["sequential_frames"], f["keyframes"],
          "x".join(map(str, f["read_size"])) if f["read_size"] else "native", f["sequential_fps"],
          f["sequential_decode_only_fps"], f["audio_window_ms"], f["description"]]
         for name, f in data["files"].items()]))
    rows = [[name, pattern, backend, c["clips_per_s"], c["frames_per_s"], c["median_read_ms"],
             c["ratio_to_sequential"], c["work_ratio"], f"{c['exact_reads']}/{c['checked_reads']}",
             " ".join(f"{k}:{v}" for k, v in c["wrong_frames"].items()) or None]
            for name, by_pattern in data["results"].items() for pattern, by_backend in by_pattern.items()
            for backend, c in by_backend.items()]
    lines += ["", format_table(["file", "pattern", "backend", "clips/s", "frames/s", "median ms", "x seq",
                                "work x seq", "exact", "wrong frames (offset:count)"], rows)]
    lines += ["", "clips/s, frames/s: over all reads; median ms: of one read (robust to a busy machine)",
              "seq f/s: sequential single-thread decode to RGB at read size; x seq: frames/s over that",
              "work x seq: frames from the keyframe before each wanted frame to it, per second, over the",
              "  sequential decode-only rate; near 1: the GOP sets the cost; above 1: the reader leaves",
              "  frames undecoded (pyav: non-reference frames nobody asked for, SKIP_NONREF_CODECS)"]
    memory = data["memory"]
    first = next(iter(memory.values()))
    lines += ["", (f"memory: {first['reads']} reads of {first['pattern']} on {first['file']}, fresh reader "
                   "each, every backend in its own new process")]
    lines.append(format_table(["backend", "RSS before MB", "RSS after MB", "growth MB", "peak MB"],
                              [[b, r["rss_before_mb"], r["rss_after_mb"], r["growth_mb"], r["peak_mb"]]
                               for b, r in memory.items()]))
    choice = data["choice"]
    lines += ["", f"default backend: {choice['backend']} ({choice['reason']})"]
    lines += [f"  {b} rejected: {'; '.join(r)}" for b, r in choice["rejected"].items()]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_loader.json"), help="JSON results file")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_loader_media"),
                        help="folder for the generated media, reused by later runs (missing files are "
                             "remade; --quick makes its own, smaller ones)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny files and few reads: seconds instead of minutes (the tests use it)")
    parser.add_argument("--reads", type=int, help="random reads per file, pattern and backend "
                        "(default {}, --quick {})".format(*COUNTS["reads"]))
    parser.add_argument("--mem-reads", type=int, help="reads before the memory reading "
                        "(default {}, --quick {})".format(*COUNTS["mem_reads"]))
    parser.add_argument("--mem-file", default="synthav", choices=[m.name for m in media_files(Path(), False)],
                        help="file of the memory reads (default synthav: a 720p read takes ~0.2 s)")
    parser.add_argument("--audio-reads", type=int, help="1 s audio windows timed per file "
                        "(default {}, --quick {})".format(*COUNTS["audio_reads"]))
    parser.add_argument("--seed", type=int, default=0, help="seed of the random reads (default 0)")
    args = parser.parse_args(argv)
    for name, (default, quick) in COUNTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else default)
        elif getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    backends = list(BACKENDS)
    files = media_files(args.work, args.quick)
    min_seconds = SEQUENTIAL_MIN_SECONDS[args.quick]
    summaries, results = {}, {}
    for media in files:
        print(f"benchmarking {media.name} ...", file=sys.stderr, flush=True)
        summaries[media.name], results[media.name] = bench_file(
            media, backends, args.reads, args.audio_reads, min_seconds, args.seed)
    print("measuring memory ...", file=sys.stderr, flush=True)
    mem_file = next(m for m in files if m.name == args.mem_file)
    memory = measure_memory(mem_file, backends, args.mem_reads, args.seed)
    data = {
        "machine": machine_info(), "backends": backend_status(),
        "settings": {"reads": args.reads, "mem_reads": args.mem_reads, "audio_reads": args.audio_reads,
                     "seed": args.seed, "quick": args.quick, "decoder_threads": 1, "torch_threads": 1},
        "files": summaries, "results": results, "memory": memory,
        "choice": choose_backend(results, memory, backends),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(report(data))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
