"""Static-cue audit of a labeled dataset: how much of each label one frame, the clip's mean frame,
random-init encoder features, the motion energy and the audio alone give away (a linear probe and a
kNN per cue, fitted on a train split and scored on the test split, beside chance).

  mmssl audit-dataset --manifest FILE [--labels COLUMN ...] [--train-splits SPLIT ...] [--test-split test]
                      [--config FILE] [--workers N] [--out FILE.json] [key=value ...]
(`python tools/audit_dataset.py ...` is the same.)

Every video is decoded once (all its frames and its whole audio track, with mmssl's readers); the cues:
  one_frame      one random frame, 16x16 average-pooled RGB
  mean_frame     the mean of all frames, 16x16 average-pooled RGB
  motion         motion energy: the mean absolute difference of consecutive grey frames per cell of
                 a 4x4 grid, as 9 quantiles over time per cell, plus the whole frame's over time in 16 steps
  tiny3d_random  tiny3d at random init on num_clips uniform clips (as `mmssl transfer --random-init tiny3d`)
  audio_logmel   the mean, maximum and standard deviation over time of each of 64 log-mel bands
  audio_random   tiny_audio at random init on num_clips uniform windows of audio_s seconds
The hand-made cues (pixels, motion, log-mel) are standardised per feature on the train videos; the
encoders' features go to the probes as the transfer protocols take them. Probes: the recipe of
--config (default configs/transfer/linear.yaml): the linear probe's L2 penalty cross-validated on
folds of the train videos, never the test split, and the weighted kNN (knn_k, knn_temperature).
Audio cues use the videos with an audio track. --labels defaults to PhysAV's action, object and
material (those the manifest has), else `label`; --train-splits to pretrain+train ("a+b" joins
splits; several: one audit each, e.g. `pretrain+train train`). Overrides are TransferConfig keys, e.g.
seed=1 (the random frames, the encoders' init, the folds).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmssl.cli import command
from mmssl.config import TransferConfig, load_config, to_dict
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.dataset import PretextDataset, collate, kinds
from mmssl.data.manifest import ManifestRow, read_manifest
from mmssl.data.sampling import uniform_clips
from mmssl.engine.precision import mixed_precision
from mmssl.eval.transfer import Transfer, encode, encode_audio, random_encoder
from mmssl.transforms.audio import LogMel

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs/transfer/linear.yaml"
PHYSAV_LABELS = ("action", "object", "material")
CUES = {  # name -> (what it is, standardised per feature on the train videos)
    "one_frame": ("one random frame, 16x16 pixels", True),
    "mean_frame": ("the clip's mean frame, 16x16 pixels", True),
    "tiny3d_random": ("tiny3d at random init", False),
    "motion": ("motion energy, 4x4 grid", True),
    "audio_logmel": ("log-mel statistics of the audio", True),
    "audio_random": ("tiny_audio at random init", False),
}
AUDIO_CUES = ("audio_logmel", "audio_random")
POOL, GRID, QUANTILES, STEPS = 16, 4, 9, 16


class Cues:
    """CPU half: every frame and the whole audio track of a video, made into the hand-made cues plus
    the encoders' inputs (uniform clips, uniform audio windows); a video without audio gets zeros there."""

    needs_audio = False

    def __init__(self, config: TransferConfig, sample_rate: int = 16000) -> None:
        self.config, self.sample_rate = config, sample_rate
        self.logmel = LogMel(sample_rate)

    def min_frames(self, fps: float) -> int:
        return 2  # motion needs a frame pair

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        return Window(frames=np.arange(row.num_frames), audio_start_s=0.0 if row.has_audio else None,
                      audio_duration_s=max(row.num_frames / row.fps, self.config.audio_s),
                      targets={"frame": int(rng.integers(row.num_frames))})

    @torch.no_grad()
    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        c = self.config
        video = clip.video.float().div(255).permute(0, 3, 1, 2)  # [T, 3, H, W] in [0, 1]
        grey = video.mean(1, keepdim=True)
        change = (grey[1:] - grey[:-1]).abs()  # [T - 1, 1, H, W]
        per_cell = F.adaptive_avg_pool2d(change, GRID).flatten(1)  # [T - 1, cells]
        over_time = F.interpolate(per_cell.mean(1)[None, None], size=STEPS, mode="linear")
        window = round(c.audio_s * self.sample_rate)
        audio = clip.audio if clip.audio is not None else torch.zeros(window)
        spectrum = self.logmel(audio[None])[0, 0]  # [bands, time]
        return {
            "one_frame": F.adaptive_avg_pool2d(video[clip.window.targets["frame"]], POOL).flatten()[None],
            "mean_frame": F.adaptive_avg_pool2d(video.mean(0), POOL).flatten()[None],
            "motion": torch.cat([torch.quantile(per_cell, torch.linspace(0, 1, QUANTILES), dim=0).flatten(),
                                 over_time.flatten()])[None],
            "audio_logmel": torch.cat([spectrum.mean(1), spectrum.amax(1), spectrum.std(1)])[None],
            "clips": clip.video[uniform_clips(len(clip.video), c.clip_len, c.stride, c.num_clips)],
            "audio": audio[uniform_clips(len(audio), window, 1, c.num_clips)],
        }


def decode_cues(rows: list[ManifestRow], config: TransferConfig, workers: int,
                device: torch.device) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, int]]:
    """Every video of `rows` decoded once -> {path: {cue: features [K, F]}} and the videos left out by
    reason; the random-init encoders (seeded by `config.seed`) run here on the decoded clips."""
    video_encoder = random_encoder("tiny3d", config.seed).eval().to(device)
    audio_encoder = random_encoder("tiny_audio", config.seed).eval().to(device)
    dataset = PretextDataset(rows, Cues(config), config.frame_size, seed=config.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, collate_fn=collate,
                                         num_workers=workers)
    cues, skipped, start = {}, Counter(dataset.excluded), 0
    for batch in loader:
        failed = batch.pop("skipped")
        skipped.update(kinds(failed))
        failed_paths = {s.path for s in failed}
        paths = [r.path for r in dataset.rows[start:start + config.batch_size] if r.path not in failed_paths]
        start += config.batch_size
        if not paths:
            continue
        with torch.no_grad(), mixed_precision(device):
            batch["tiny3d_random"] = encode(video_encoder, batch.pop("clips").to(device), "clip").float().cpu()
            batch["audio_random"] = encode_audio(audio_encoder, batch.pop("audio").to(device)).float().cpu()
        for i, path in enumerate(paths):
            cues[path] = {name: batch[name][i] for name in CUES}
    return cues, dict(skipped)


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread meanwhile: the probes are hundreds of small fits, which threads slow down
    (measured on a busy 2-core machine: 9x the CPU time with 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def cue_features(transfer: Transfer, rows: list[ManifestRow], cues: dict[str, dict[str, torch.Tensor]],
                 name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Cue `name` of the decoded videos of `rows` (for an audio cue, those with audio) [N, K, F] and
    their class indices in `transfer` [N]."""
    rows = [r for r in rows if r.path in cues and (r.has_audio or name not in AUDIO_CUES)]
    index = {c: i for i, c in enumerate(transfer.classes)}
    x = torch.stack([cues[r.path][name] for r in rows]) if rows else torch.empty(0)
    return x, torch.tensor([index[r.label] for r in rows], dtype=torch.long)


def audit(transfer: Transfer, cues: dict[str, dict[str, torch.Tensor]]) -> dict:
    """Every cue's linear probe and kNN on `transfer`'s train videos, scored on its test videos."""
    result = {"classes": transfer.classes, "chance": 100.0 / len(transfer.classes), "cues": {}}
    for name, (_, standardise) in CUES.items():
        train_x, train_y = cue_features(transfer, transfer.train_rows, cues, name)
        test_x, test_y = cue_features(transfer, transfer.test_rows, cues, name)
        if not len(train_y) or not len(test_y):
            continue  # e.g. an audio cue on a dataset without audio
        if standardise:  # on the train videos; a feature constant there is dropped (0 everywhere)
            mean, std = train_x.flatten(0, 1).mean(0), train_x.flatten(0, 1).std(0)
            scale = torch.where(std > 1e-6, std, torch.inf)
            train_x, test_x = (train_x - mean) / scale, (test_x - mean) / scale
        result["cues"][name] = {"num_train_videos": len(train_y), "num_test_videos": len(test_y)}
        for protocol in ("linear", "knn"):
            scores = transfer.score_features(train_x, train_y, test_x, test_y, protocol)
            result["cues"][name][protocol] = {k: v for k, v in scores.items() if k not in ("classes", "config")}
    return result


def print_table(train_split: str, test_split: str, results: dict[str, dict]) -> None:
    """One audit's video top-1 (%) per label and cue, linear / kNN, beside chance."""
    print(f"\ntrain {train_split!r}, test {test_split!r}: video top-1 %, linear probe / kNN")
    print(f"{'label':<12} {'classes':>7} {'chance':>6}" + "".join(f" {name:>13}" for name in CUES))
    for label, r in results.items():
        cells = [f"{c['linear']['video_top1']:5.1f} /{c['knn']['video_top1']:5.1f}" if (c := r["cues"].get(name))
                 else "-" for name in CUES]
        print(f"{label:<12} {len(r['classes']):>7} {r['chance']:>6.1f}" + "".join(f" {cell:>13}" for cell in cells))


@command
def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="manifest with the label columns and the splits")
    parser.add_argument("--labels", nargs="+", metavar="COLUMN",
                        help=f"label columns (default: those of {', '.join(PHYSAV_LABELS)} it has, else label)")
    parser.add_argument("--train-splits", nargs="+", default=["pretrain+train"], metavar="SPLIT",
                        help="train split of each audit ('a+b' joins splits; default: %(default)s)")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="probe recipe (default: %(default)s)")
    parser.add_argument("--workers", type=int, help="decoding processes (default: the recipe's num_workers)")
    parser.add_argument("--out", help="JSON path (default: runs/audit_dataset/<manifest's folder>.json)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="TransferConfig overrides, e.g. seed=1")
    args = parser.parse_intermixed_args(argv)
    began = time.perf_counter()
    try:
        config = replace(load_config(args.config, args.overrides, root=TransferConfig), manifest=args.manifest)
        columns = {k for r in read_manifest(args.manifest) for k in r.extra}
        labels = args.labels or [c for c in PHYSAV_LABELS if c in columns] or ["label"]
        transfers = {(split, label): Transfer(replace(config, train_split=split, test_split=args.test_split,
                                                      label_column=label))
                     for split in args.train_splits for label in labels}
    except ValueError as e:  # a label column or split the manifest lacks
        parser.error(str(e))
    rows = {r.path: r for t in transfers.values() for r in t.train_rows + t.test_rows}
    device = next(iter(transfers.values())).device
    cues, skipped = decode_cues(list(rows.values()), config, config.num_workers if args.workers is None
                                else args.workers, device)
    print(f"{args.manifest}: {len(cues)} of {len(rows)} videos decoded (left out: {skipped or 'none'})")
    if not cues:
        sys.exit(f"error: none of the {len(rows)} videos of {args.manifest} could be used")
    audits = {}
    with one_thread():
        for split in args.train_splits:
            audits[split] = {label: audit(transfers[split, label], cues) for label in labels}
            print_table(split, args.test_split, audits[split])
    report = {"manifest": args.manifest, "test_split": args.test_split, "labels": labels,
              "cues": {name: what for name, (what, _) in CUES.items()}, "config": to_dict(config),
              "videos": len(rows), "left_out": skipped, "audits": audits, "wall_s": time.perf_counter() - began}
    out = Path(args.out or f"runs/audit_dataset/{Path(args.manifest).resolve().parent.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wall time {report['wall_s']:.0f} s; wrote {out}")
    return report
