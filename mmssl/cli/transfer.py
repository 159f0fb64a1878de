"""Transfer a pretrained video encoder to action recognition and print top-1/top-5.

  mmssl transfer --checkpoint CKPT|RUN_DIR [--config FILE] [--protocol linear|knn|finetune]
                 [--manifest FILE] [--out DIR] [--compare-random] [--import MODULE] [key=value ...]
  mmssl transfer --random-init tiny3d --protocol linear     (a random-init baseline)
  mmssl transfer [--config FILE] [--protocol P] [key=value ...] --print-config   (the resolved config, then exit)
(`python tools/transfer.py ...` is the same.)

--config: a recipe from configs/transfer/ (linear.yaml, knn.yaml, finetune.yaml on SynthAV;
ucf101_finetune.yaml, hmdb51_finetune.yaml at the papers' 16x112^2 clips); without one, the
defaults of TransferConfig (a linear probe on SynthAV). --protocol and --manifest override it.

linear: logistic regression on frozen features; knn: weighted k-nearest-neighbour vote on frozen
features (knn_k=20, knn_temperature=0.07), plus video retrieval R@1/5/10/20/50 (test videos
querying the train videos); finetune: encoder + classifier trained end to end.
An audio encoder (a wav2vec2 checkpoint, or --random-init wav2vec2_tiny) gets the frozen-feature
protocols on uniform windows of the audio track (num_clips windows of audio_s seconds); videos
without audio are left out and counted.
Scores are clip-level (each uniform clip alone) and video-level (class probabilities averaged over
the clips) on the labeled test split (SynthAV's train/test by default; any manifest with train/test
splits).
A checkpoint's encoder sees its input through the front end it trained on (its `encoder_input`:
rgb, luma, ...), and so does the same encoder at random init (--compare-random).
Writes transfer_<protocol>.json and confusion_<protocol>.png under DIR. Overrides are keys of
TransferConfig (mmssl/config.py), e.g. num_clips=8 clip_len=16 finetune_epochs=50.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmssl.cli import add_import_option, checkpoint_of, command, import_user_modules
from mmssl.config import TransferConfig, commented_yaml, load_config, to_dict
from mmssl.eval.transfer import PROTOCOLS, Transfer, load_encoder, random_encoder, save_confusion_png
from mmssl.models.audio import AUDIO_ENCODERS
from mmssl.tasks.model import checkpoint_config


@command
def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="pretraining checkpoint, or a run folder (its newest checkpoint)")
    source.add_argument("--random-init", metavar="ENCODER", help="evaluate this encoder at random init instead")
    parser.add_argument("--config", help="transfer recipe: YAML of TransferConfig keys (configs/transfer/)")
    parser.add_argument("--protocol", choices=PROTOCOLS, help="overrides the recipe's protocol (default: linear)")
    parser.add_argument("--manifest", help="labeled manifest with train/test splits (default: SynthAV)")
    parser.add_argument("--out", help="output folder (default: the checkpoint's folder, or runs/transfer)")
    parser.add_argument("--compare-random", action="store_true",
                        help="also evaluate the same encoder architecture at random init")
    parser.add_argument("--feature-mode", choices=["auto", "clip", "frames"], default=None)
    parser.add_argument("--print-config", action="store_true",
                        help="print the config the transfer would use (defaults <- --config <- the options and "
                             "overrides) as YAML, each setting's description as its comment, and exit")
    add_import_option(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="TransferConfig overrides")
    args = parser.parse_intermixed_args(argv)
    import_user_modules(parser, args.imports)
    config = load_config(args.config, args.overrides, root=TransferConfig)
    if args.protocol:
        config.protocol = args.protocol
    if args.manifest:
        config.manifest = args.manifest
    if args.feature_mode:
        config.feature_mode = args.feature_mode
    if args.print_config:
        print(commented_yaml(config))
        return {}
    if not (args.checkpoint or args.random_init):
        parser.error("one of the arguments --checkpoint --random-init is required")
    if args.checkpoint:  # before the data: a checkpoint that does not load fails at once
        checkpoint = checkpoint_of(parser, args.checkpoint)
        encoder, encoder_name, task_mode, encoder_input = load_encoder(checkpoint)
        name, out = f"pretrained ({checkpoint.name})", Path(args.out or checkpoint.parent)
        pretrained_size = checkpoint_config(checkpoint).data.frame_size
        if task_mode != "audio" and pretrained_size != config.frame_size:
            print(f"note: {checkpoint} was pretrained on {pretrained_size} px frames and this transfer uses "
                  f"frame_size={config.frame_size} (add frame_size={pretrained_size} to match)")
    else:
        encoder_name, task_mode = args.random_init, "audio" if args.random_init in AUDIO_ENCODERS else "clip"
        encoder_input = None  # the input as it is
        encoder = random_encoder(encoder_name, config.seed)
        name, out = f"random init ({args.random_init})", Path(args.out or "runs/transfer")
    mode = task_mode if config.feature_mode == "auto" or task_mode == "audio" else config.feature_mode
    if mode == "audio" and config.protocol == "finetune":
        parser.error(f"{encoder_name} is an audio encoder: --protocol linear or knn on frozen features")
    out.mkdir(parents=True, exist_ok=True)
    transfer = Transfer(config)

    results = {name: transfer.evaluate(encoder, mode, encoder_input)}
    if args.compare_random:
        results[f"random init ({encoder_name})"] = transfer.evaluate(random_encoder(encoder_name, config.seed),
                                                                     mode, encoder_input)

    print(f"\n{config.protocol} transfer, {mode} features, input {encoder_input or 'as is'}, {len(transfer.classes)} classes, "
          f"{len(transfer.train_rows)} train / {len(transfer.test_rows)} test videos")
    print(f"{'encoder':<40} {'clip top-1':>10} {'clip top-5':>10} {'video top-1':>11} {'video top-5':>11}")
    for label, r in results.items():
        print(f"{label:<40} {r['clip_top1']:>10.1f} {r['clip_top5']:>10.1f} "
              f"{r['video_top1']:>11.1f} {r['video_top5']:>11.1f}")
    for label, r in results.items():
        if "retrieval" in r:
            print(f"{label:<40} retrieval " + " ".join(f"{k} {v:.1f}" for k, v in r["retrieval"].items()))
        if r.get("probe", {}).get("validation_top1"):
            print(f"{label:<40} probe penalty {r['probe']['penalty']:g} (held-out top-1 by penalty: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in r["probe"]["validation_top1"].items()) + ")")
    skipped = next(iter(results.values())).get("skipped")
    if skipped:
        print(f"videos left out: {skipped}")
    report = {"protocol": config.protocol, "feature_mode": mode, "encoder_input": encoder_input, "config": to_dict(config),
              "results": results}
    (out / f"transfer_{config.protocol}.json").write_text(json.dumps(report, indent=2))
    png = save_confusion_png(next(iter(results.values())), out / f"confusion_{config.protocol}.png", name)
    print(f"wrote {out / f'transfer_{config.protocol}.json'} and {png}")
    return report
