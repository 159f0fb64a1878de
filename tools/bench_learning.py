#!/usr/bin/env python
"""Learning benchmark on a generated dataset (SynthAV or PhysAV): does pretraining help?

For each method (a pretraining config) and seed: pretrain on the dataset's unlabeled `pretrain`
split; its task's held-out pretext metric on the test split, beside chance; then a linear probe (and
with --knn a weighted kNN) on frozen features, through the input front end its checkpoint saved, on
the labels of both label families (action, object; the family its task declares is the one it is
judged on), against the same encoder at random init (same probe, labels and input). Beside them:
supervised training from random init on the few labels of the `train` split (the fine-tune recipe),
for each family; with --ceiling, the full-label supervised ceiling (the same recipe on the labels of
pretrain + train), the dataset's own gate: ceiling minus random init should be >= 35 points on both
families, or the dataset cannot tell a method that learns from one that does not. With --finetune,
also each pretrained encoder fine-tuned the same way on its family's labels. The frozen-feature rows
follow configs/transfer/linear.yaml, the fine-tune, supervised and ceiling rows
configs/transfer/finetune.yaml (--transfer overrides apply to both). An audio-only method (wav2vec
2.0) is probed on its audio encoder's features of each labeled video's audio; the audio towers of
the audio-visual methods get the same audio probes, on --audio-label (default: the action; e.g.
PhysAV's material, heard as timbre). Mean and std over seeds, as a table and JSON (the JSON
rewritten after every run); the headline counts the methods >= 10 points above random init on their
family's labels.

  python tools/bench_learning.py [--dataset synthav|physav] [--data-dir DIR] [--methods order ...] [--seeds 3]
                                 [--knn] [--ceiling] [--finetune] [--out FILE.json] [--resume]
                                 [--audio-label COLUMN] [--transfer key=value ...] [-- key=value ...]

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
from mmssl.data.generated import read_stamp
from mmssl.data.physav import CONFIG_NAME, PhysAVConfig, ensure_physav
from mmssl.data.synthetic import ensure_synthav
from mmssl.engine.labelling import last_pass
from mmssl.engine.trainer import pretrain
from mmssl.eval.pretext import evaluate_pretext
from mmssl.eval.transfer import Transfer, load_audio_encoder, load_encoder, random_encoder
from mmssl.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs/transfer"
METHODS = {path.stem: path for path in sorted((ROOT / "configs/pretrain").glob("*.yaml"))}  # one per shipped config
PROBE_NAMES = {"linear": "linear probe", "knn": "kNN"}
FULL_LABELS = "pretrain+train"  # the ceiling's training videos: every video's label
GATE_POINTS, HEADLINE_POINTS = 35.0, 10.0


@dataclasses.dataclass(frozen=True)
class BenchDataset:
    """A generated dataset: which manifest column each label family reads, and how it is made."""

    columns: dict[str, str]  # label family -> manifest column
    ensure: Callable[[str, bool], Path]  # (folder, whether it must hold the benchmark's size) -> its manifest
    folder: str  # default folder
    truths: tuple[str, ...]  # the pretraining rows' label columns: a pseudo-label run's passes log their NMI


# The benchmark's PhysAV: 3200 unlabeled videos, the default labeled splits. With fewer, the supervised
# ceiling (trained on pretrain+train) is too low on `object` (docs/results.md#physav-the-datasets-gate).
BENCH_PHYSAV = PhysAVConfig(num_pretrain=3200)


def ensure_bench_physav(folder: str, exact: bool) -> Path:
    """PhysAV at the benchmark's size when `exact` or the folder is empty; otherwise a PhysAV folder
    of any size is taken as it is."""
    return ensure_physav(folder, None if not exact and read_stamp(Path(folder) / CONFIG_NAME) else BENCH_PHYSAV)


DATASETS = {
    "synthav": BenchDataset({"action": "label", "object": "shape"}, lambda folder, _: ensure_synthav(folder),
                            "data/synthav", ("action", "shape")),
    "physav": BenchDataset({"action": "action", "object": "object"}, ensure_bench_physav, "data/physav_bench",
                           ("action", "object", "material")),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthav", choices=list(DATASETS))
    parser.add_argument("--data-dir", help="the dataset's folder, made on first use (default data/synthav, "
                                           "data/physav_bench: PhysAV at the benchmark's 3200 pretraining videos, "
                                           "remade at another size; a --data-dir PhysAV is taken at any size)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", default="runs/bench_learning", help="folder for the pretraining runs")
    parser.add_argument("--out", default="runs/bench_learning.json")
    parser.add_argument("--resume", action="store_true",
                        help="continue the pretraining runs already in --work (a finished one is reused) "
                             "instead of starting them again (pretrain_minutes: this call's share); without it, "
                             "each run's folder in --work is deleted first")
    parser.add_argument("--knn", action="store_true",
                        help="also the weighted kNN (k = knn_k, T = knn_temperature) on the same frozen features")
    parser.add_argument("--ceiling", action="store_true",
                        help=f"also the full-label supervised ceiling (trained on {FULL_LABELS}) and its gate")
    parser.add_argument("--finetune", action="store_true",
                        help="also fine-tune each pretrained video encoder on its family's labels")
    parser.add_argument("--transfer", nargs="*", default=[], metavar="key=value",
                        help="TransferConfig overrides (mmssl/config.py), e.g. finetune_epochs=10")
    parser.add_argument("--audio-label", help="manifest column the audio-encoder probes predict "
                                              "(default: the action's; e.g. PhysAV's material or SynthAV's shape)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="pretraining config overrides")
    args = parser.parse_args(argv)

    dataset = DATASETS[args.dataset]
    manifest = str(dataset.ensure(args.data_dir, False) if args.data_dir else dataset.ensure(dataset.folder, True))
    audio_label = args.audio_label or dataset.columns["action"]
    transfer_config, finetune_config = (
        load_config(RECIPES / f"{recipe}.yaml", [f"manifest={manifest}", *args.transfer], root=TransferConfig)
        for recipe in ("linear", "finetune"))

    def transfers(base: TransferConfig, **changes: str) -> dict[str, Transfer]:
        return {family: Transfer(dataclasses.replace(base, label_column=column, **changes))
                for family, column in dataset.columns.items()}

    frozen, finetunes = transfers(transfer_config), transfers(finetune_config)
    ceilings = transfers(finetune_config, train_split=FULL_LABELS) if args.ceiling else {}
    audio_transfer = Transfer(dataclasses.replace(transfer_config, label_column=audio_label))
    audio_family = next((f for f, column in dataset.columns.items() if column == audio_label), audio_label)
    audio_kind = {"feature_mode": "audio", "label_family": audio_family, "encoder_input": "waveform"}
    protocols = ["linear", "knn"] if args.knn else ["linear"]
    rows: dict[str, dict] = {}
    pretext: dict[str, list[dict]] = {}
    collapse: dict[str, list[dict]] = {}  # a pseudo-label method's last labelling pass, per seed
    measured: set[tuple[str, int]] = set()
    random_features: dict[tuple[str, int], dict] = {}  # frozen features of each random-init encoder (by seed)

    def baseline(label: str, seed: int, kind: dict[str, str], encoder: str, evaluate: Callable[..., dict]) -> None:
        """A random-init, supervised or ceiling row, `evaluate` of `encoder` at random init: measured once
        per seed, however many methods share it."""
        if (label, seed) not in measured:
            measured.add((label, seed))
            _add(rows, label, kind, evaluate(random_encoder(encoder, seed)))

    def report_of() -> dict:
        """Table, pretext metrics, collapse indicators, headline and gate of the runs measured so far."""
        table = {label: _summary(row) for label, row in rows.items()}
        summary = {"pretext": {method: _pretext_summary(runs) for method, runs in pretext.items()},
                   "collapse": {method: {key: [r.get(key) for r in runs]  # None: a resumed older run's log lacks it
                                         for key in dict.fromkeys(k for r in runs for k in r)}
                                for method, runs in collapse.items()},
                   "headline": _headline(table), "gate": _gate(table) if args.ceiling else {}}
        return {"dataset": args.dataset, "manifest": manifest, "classes": {f: t.classes for f, t in frozen.items()},
                "seeds": args.seeds, "overrides": args.overrides, "rows": table, **summary,
                "recipes": {"frozen": dataclasses.asdict(transfer_config),
                            "finetune": dataclasses.asdict(finetune_config)}}

    for method in args.methods:
        for seed in range(args.seeds):
            config = load_config(METHODS[method], [
                *args.overrides, f"train.seed={seed}", f"data.manifest={manifest}", "data.split=pretrain",
                f"monitor.manifest={manifest}", f"monitor.label_column={dataset.columns['action']}",
                f"monitor.nmi_columns=[{','.join(dataset.truths)}]"])
            task = build_task(config)  # the run's: its feature mode and audio follow the overrides
            mode = task.feature_mode
            run = Path(args.work) / f"{method}_seed{seed}"
            if not args.resume and run.exists():
                shutil.rmtree(run)  # a fresh run: pretrain refuses a folder that holds checkpoints
            start = time.perf_counter()
            checkpoint = pretrain(config, run, "auto" if args.resume else None)
            minutes = (time.perf_counter() - start) / 60
            if task.pseudo_labelled:  # labels of the pretraining videos only: no held-out metric, its indicators
                collapse.setdefault(method, []).append(last_pass(run / "metrics.jsonl"))
            else:
                pretext.setdefault(method, []).append(evaluate_pretext(checkpoint, manifest, "test", seed=seed)["metrics"])
            encoder, name, _, encoder_input = load_encoder(checkpoint)
            for each in (*frozen.values(), *finetunes.values(), *ceilings.values(), audio_transfer):
                each.config.seed = seed
            # the audio encoder on the audio label, unless the rows below are that already (audio-only, same column)
            audio_probes = task.needs_audio and (mode != "audio" or audio_label not in dataset.columns.values())
            if audio_probes:
                audio_encoder, audio_name = load_audio_encoder(checkpoint)
            features: dict = {}  # this encoder's frozen features, shared by the probes and label families
            audio_features: dict = {}  # its audio encoder's
            for protocol in protocols:
                probe = PROBE_NAMES[protocol]
                for family, transfer in frozen.items():
                    kind = {"feature_mode": mode, "label_family": family, "encoder_input": encoder_input}
                    _add(rows, f"{method} ({family}, {probe})",
                         kind | {"task_family": task.label_family, "encoder": name, "probe": probe},
                         transfer.frozen_protocol(encoder, mode, protocol, encoder_input, features),
                         pretrain_minutes=minutes)
                    baseline(_random_row(name, family, probe, kind), seed, kind, name,
                             partial(transfer.frozen_protocol, mode=mode, protocol=protocol, encoder_input=encoder_input,
                                     cache=random_features.setdefault((name, seed), {})))
                if audio_probes:
                    _add(rows, f"{method} audio encoder ({audio_label}, {probe})", audio_kind,
                         audio_transfer.frozen_protocol(audio_encoder, "audio", protocol, cache=audio_features))
                    baseline(f"random init {audio_name} ({audio_label}, {probe})", seed, audio_kind, audio_name,
                             partial(audio_transfer.frozen_protocol, mode="audio", protocol=protocol,
                                     cache=random_features.setdefault((audio_name, seed), {})))
            if mode != "audio":  # an audio encoder: its probes above are on its features of the videos' audio
                if args.finetune:
                    _add(rows, f"{method} ({task.label_family}, fine-tune)",
                         {"feature_mode": "clip", "label_family": task.label_family, "encoder_input": encoder_input},
                         finetunes[task.label_family].finetune(encoder, "clip", encoder_input))
                for family in dataset.columns:
                    kind = {"feature_mode": "clip", "label_family": family, "encoder_input": "rgb"}
                    baseline(f"supervised {name} ({family}, train split, from scratch)", seed, kind, name,
                             partial(finetunes[family].finetune, mode="clip"))
                    if args.ceiling:
                        baseline(f"supervised {name} ({family}, {FULL_LABELS}, ceiling)", seed, kind, name,
                                 partial(ceilings[family].finetune, mode="clip"))
                        baseline(_random_row(name, family, PROBE_NAMES["linear"], kind), seed, kind, name,
                                 partial(frozen[family].frozen_protocol, mode="clip", protocol="linear",
                                         cache=random_features.setdefault((name, seed), {})))
            _write_report(args.out, report_of(), f"{method} seed {seed}")

    report = report_of()
    action = frozen["action"]
    print(f"\n{args.dataset} ({manifest}): {len(action.classes)} action and {len(frozen['object'].classes)} object classes, "
          f"{len(action.train_rows)} labeled train / {len(action.test_rows)} test videos, {args.seeds} seeds; "
          f"audio probes: {len(audio_transfer.classes)} {audio_label} classes")
    print(f"{'row':<66} {'features':<8} {'family':<6} {'input':<8} {'video top-1':>15} {'clip top-1':>15}"
          "  per seed (video)")
    for label, s in report["rows"].items():
        print(f"{label:<66} {s['feature_mode']:<8} {s['label_family']:<6} {s['encoder_input']:<8} "
              f"{s['video_top1_mean']:>7.1f} ± {s['video_top1_std']:<5.1f}"
              f" {s['clip_top1_mean']:>7.1f} ± {s['clip_top1_std']:<5.1f}  "
              + " ".join(f"{v:.1f}" for v in s["video_top1"]))
    _print_summary(report)
    return report


def _write_report(out: str, report: dict, last: str) -> None:
    """The report so far as JSON in `out`, after every run: an interrupted benchmark keeps what it measured."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    print(f"wrote {out} (up to {last})")


def _random_row(name: str, family: str, probe: str, kind: dict[str, str]) -> str:
    """The label of the random-init row a method's row `kind` (features, input) is compared with."""
    return f"random init {name} ({family}, {probe}, {kind['feature_mode']}, {kind['encoder_input']})"


def _headline(table: dict[str, dict]) -> dict[str, dict]:
    """Per method and probe, on its task's family: pretrained minus random init (video top-1 means),
    and whether that is at least HEADLINE_POINTS."""
    headline: dict[str, dict] = {}
    for label, row in table.items():
        if row.get("task_family") != row["label_family"]:
            continue
        random = table[_random_row(row["encoder"], row["label_family"], row["probe"], row)]
        gain = row["video_top1_mean"] - random["video_top1_mean"]
        headline.setdefault(label.split(" (")[0], {})[row["probe"]] = {"gain": gain, "beats_random": gain >= HEADLINE_POINTS}
    return headline


def _gate(table: dict[str, dict]) -> dict[str, dict]:
    """Per ceiling row: ceiling minus random init (linear probe on clip features), against GATE_POINTS."""
    gate = {}
    for label, row in table.items():
        if label.endswith("ceiling)"):
            name = label.split()[1]
            chance = table[_random_row(name, row["label_family"], PROBE_NAMES["linear"], row)]["video_top1_mean"]
            gate[label] = {"gap": row["video_top1_mean"] - chance, "passed": row["video_top1_mean"] - chance >= GATE_POINTS}
    return gate


def _pretext_summary(runs: list[dict]) -> dict[str, dict]:
    """Each held-out pretext metric's mean and std over seeds, its chance level, and per seed its
    distance from chance in SEs over the test videos (`z`, None where chance or the SE is unknown)."""
    return {key: {"mean": float(np.mean([r[key]["value"] for r in runs])),
                  "std": float(np.std([r[key]["value"] for r in runs])),
                  "chance": runs[0][key]["chance"], "higher_is_better": runs[0][key]["higher_is_better"],
                  "z": [r[key].get("z") for r in runs]}
            for key in runs[0]}


def _print_summary(summary: dict) -> None:
    print("\nheld-out pretext metrics (test split): mean ± std over seeds, chance, distance from chance in SEs")
    for method, metrics in summary["pretext"].items():
        for key, m in metrics.items():
            chance = "-" if m["chance"] is None else f"{m['chance']:.3f}"
            z = " ".join("-" if v is None else f"{v:.1f}" for v in m["z"])
            print(f"  {method:<16} {key:<24} {m['mean']:.3f} ± {m['std']:.3f}  chance {chance}  z per seed {z}")
    if summary["collapse"]:
        print("collapse indicators of the pseudo-label methods' last labelling pass, per seed")
    for method, indicators in summary["collapse"].items():
        for key, values in indicators.items():
            print(f"  {method:<16} {key:<24} " + " ".join("-" if v is None else f"{v:.3g}" for v in values))
    beating = sorted(m for m, probes in summary["headline"].items() if any(p["beats_random"] for p in probes.values()))
    print(f"\nheadline: {len(beating)} of {len(summary['headline'])} methods >= {HEADLINE_POINTS:g} points above "
          f"random init on their family's labels: {', '.join(beating) or 'none'}")
    for label, g in summary["gate"].items():
        print(f"gate: {label}: {g['gap']:+.1f} points over random init "
              f"({'passed' if g['passed'] else 'FAILED'}, >= {GATE_POINTS:g} asked)")


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
