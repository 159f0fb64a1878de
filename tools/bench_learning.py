#!/usr/bin/env python
"""Learning benchmark on SynthAV: does pretraining help?

For each method (a pretraining config) and seed: pretrain, then a linear probe on frozen features,
on the labels of the family its task declares (action: SynthAV's classes, the `label` column; object:
the main shape, `shape`), through the input front end its checkpoint saved; against the same encoder
at random init (linear probe, same labels and input) and supervised training from random init on the
labeled train split (the fine-tune protocol, action labels); with --finetune, also the pretrained
encoder fine-tuned the same way. The frozen-feature rows follow configs/transfer/linear.yaml, the
fine-tune and supervised rows configs/transfer/finetune.yaml (--transfer overrides apply to both); with --knn, also the weighted kNN on the frozen features. An audio-only
method (wav2vec 2.0) is probed on its audio encoder's features of each labeled video's audio. The
audio towers of the audio-visual methods get the same audio probes, on --audio-label: the action by
default (heard in SynthAV as a pitch path, loudness and impact clicks), or another manifest column
(SynthAV's shape, heard as timbre, is separable even by a random-init audio encoder). Mean and
std over seeds, as a table and JSON.

  python tools/bench_learning.py [--methods order ...] [--seeds 3] [--finetune] [--knn] [--out FILE.json]
                                 [--resume] [--audio-label label|shape] [--transfer key=value ...] [-- key=value ...]

Overrides apply to every pretraining config (e.g. train.max_steps=300 for a quick look).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from mmssl.config import TransferConfig, load_config
from mmssl.engine.trainer import pretrain
from mmssl.eval.transfer import Transfer, load_audio_encoder, load_encoder, random_encoder
from mmssl.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs/transfer"
METHODS = {path.stem: path for path in sorted((ROOT / "configs/pretrain").glob("*.yaml"))}  # one per shipped config
PROBE_NAMES = {"linear": "linear probe", "knn": "kNN"}
FAMILY_COLUMNS = {"action": "label", "object": "shape"}  # the SynthAV manifest column each label family probes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--synthav-dir", default="data/synthav")
    parser.add_argument("--work", default="runs/bench_learning", help="folder for the pretraining runs")
    parser.add_argument("--out", default="runs/bench_learning.json")
    parser.add_argument("--resume", action="store_true",
                        help="continue the pretraining runs already in --work (a finished one is reused) "
                             "instead of starting them again (pretrain_minutes: this call's share); without it, "
                             "each run's folder in --work is deleted first")
    parser.add_argument("--finetune", action="store_true",
                        help="also fine-tune each pretrained video encoder on the train split")
    parser.add_argument("--knn", action="store_true",
                        help="also the weighted kNN (k = knn_k, T = knn_temperature) on the same frozen features")
    parser.add_argument("--transfer", nargs="*", default=[], metavar="key=value",
                        help="TransferConfig overrides (mmssl/config.py), e.g. finetune_epochs=10")
    parser.add_argument("--audio-label", default="label",
                        help="manifest column the audio-encoder probes predict (label, or e.g. SynthAV's shape)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="pretraining config overrides")
    args = parser.parse_args(argv)

    transfer_config, finetune_config = (
        load_config(RECIPES / f"{recipe}.yaml", [f"synthav_dir={args.synthav_dir}", *args.transfer], root=TransferConfig)
        for recipe in ("linear", "finetune"))
    transfers, finetunes = ({family: Transfer(dataclasses.replace(base, label_column=column))
                             for family, column in FAMILY_COLUMNS.items()} for base in (transfer_config, finetune_config))
    transfer = transfers["action"]  # the table's header
    audio_transfer = Transfer(dataclasses.replace(transfer_config, label_column=args.audio_label))
    audio_family = next((f for f, column in FAMILY_COLUMNS.items() if column == args.audio_label), args.audio_label)
    audio_kind = {"feature_mode": "audio", "label_family": audio_family, "encoder_input": "waveform"}
    protocols = ["linear", "knn"] if args.knn else ["linear"]
    rows: dict[str, dict] = {}
    measured: set[tuple[str, int]] = set()

    def baseline(label: str, seed: int, kind: dict[str, str], encoder: str, evaluate: Callable[..., dict]) -> None:
        """A random-init or supervised row, `evaluate` of `encoder` at random init: measured once per seed,
        however many methods share it."""
        if (label, seed) not in measured:
            measured.add((label, seed))
            _add(rows, label, kind, evaluate(random_encoder(encoder, seed)))

    for method in args.methods:
        for seed in range(args.seeds):
            config = load_config(METHODS[method], [*args.overrides, f"train.seed={seed}",
                                                   f"data.synthav_dir={args.synthav_dir}"])
            task = build_task(config)  # the run's: its feature mode and audio follow the overrides
            mode = task.feature_mode
            run = Path(args.work) / f"{method}_seed{seed}"
            if not args.resume and run.exists():
                shutil.rmtree(run)  # a fresh run: pretrain refuses a folder that holds checkpoints
            start = time.perf_counter()
            checkpoint = pretrain(config, run, "auto" if args.resume else None)
            minutes = (time.perf_counter() - start) / 60
            encoder, name, _, encoder_input = load_encoder(checkpoint)
            family = task.label_family
            own = transfers[family]  # the labels of the method's family
            for each in (*transfers.values(), *finetunes.values(), audio_transfer):
                each.config.seed = seed
            kind = {"feature_mode": mode, "label_family": family, "encoder_input": encoder_input}
            # the audio encoder on --audio-label, unless the rows below are that already (audio-only, same column)
            audio_probes = task.needs_audio and (mode != "audio" or args.audio_label != FAMILY_COLUMNS[family])
            if audio_probes:
                audio_encoder, audio_name = load_audio_encoder(checkpoint)
            for protocol in protocols:
                probe = PROBE_NAMES[protocol]
                _add(rows, f"{method} ({probe})", kind, own.frozen_protocol(encoder, mode, protocol, encoder_input),
                     pretrain_minutes=minutes)
                baseline(f"random init {name} ({probe}, {', '.join(kind.values())})", seed, kind, name,
                         partial(own.frozen_protocol, mode=mode, protocol=protocol, encoder_input=encoder_input))
                if audio_probes:
                    _add(rows, f"{method} audio encoder ({args.audio_label}, {probe})", audio_kind,
                         audio_transfer.frozen_protocol(audio_encoder, "audio", protocol))
                    baseline(f"random init {audio_name} ({args.audio_label}, {probe})", seed, audio_kind, audio_name,
                             partial(audio_transfer.frozen_protocol, mode="audio", protocol=protocol))
            if mode == "audio":  # an audio encoder: the probe is on its features of the videos' audio
                continue
            if args.finetune:
                _add(rows, f"{method} (fine-tune)", {**kind, "feature_mode": "clip"},
                     finetunes[family].finetune(encoder, "clip", encoder_input))
            baseline(f"supervised {name} (train split, from scratch)", seed,
                     {"feature_mode": "clip", "label_family": "action", "encoder_input": "rgb"}, name,
                     partial(finetunes["action"].finetune, mode="clip"))

    table = {label: _summary(row) for label, row in rows.items()}
    print(f"\nSynthAV: {len(transfer.classes)} action and {len(transfers['object'].classes)} object (shape) classes, "
          f"{len(transfer.train_rows)} labeled train / {len(transfer.test_rows)} test videos, {args.seeds} seeds; "
          f"audio probes: {len(audio_transfer.classes)} {args.audio_label} classes")
    print(f"{'method':<60} {'features':<8} {'family':<6} {'input':<8} {'video top-1':>15} {'clip top-1':>15}"
          "  per seed (video)")
    for label, s in table.items():
        print(f"{label:<60} {s['feature_mode']:<8} {s['label_family']:<6} {s['encoder_input']:<8} "
              f"{s['video_top1_mean']:>7.1f} ± {s['video_top1_std']:<5.1f}"
              f" {s['clip_top1_mean']:>7.1f} ± {s['clip_top1_std']:<5.1f}  "
              + " ".join(f"{v:.1f}" for v in s["video_top1"]))
    report = {"classes": transfer.classes, "seeds": args.seeds, "overrides": args.overrides, "rows": table,
              "recipes": {"frozen": dataclasses.asdict(transfer_config), "finetune": dataclasses.asdict(finetune_config)}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


def _add(rows: dict[str, dict], label: str, kind: dict[str, str], result: dict, **extra: float) -> None:
    """One seed's `result` in row `label`; `kind`: the row's features, label family and encoder input."""
    row = rows.setdefault(label, {**kind, "results": []})
    keys = ("clip_top1", "clip_top5", "video_top1", "video_top5", "retrieval", "probe")  # kNN rows; linear rows
    row["results"].append({k: result[k] for k in keys if k in result} | extra)


def _summary(row: dict) -> dict:
    summary = {key: value for key, value in row.items() if key != "results"} | {"runs": row["results"]}
    for key in ("video_top1", "clip_top1", "video_top5"):
        values = [r[key] for r in row["results"]]
        summary[key] = values
        summary[f"{key}_mean"] = float(np.mean(values))
        summary[f"{key}_std"] = float(np.std(values))
    return summary


if __name__ == "__main__":
    main()
