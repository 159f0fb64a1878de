"""Held-out evaluation of an audio-visual pretraining run (avc, av_contrastive; of a multitask
run, its audio-visual task): the pretext accuracy on the test split and video-to-audio retrieval
R@1/R@5 among all test audios.

  mmssl eval-av --checkpoint CKPT|RUN_DIR [--manifest FILE] [--split test] [--out FILE.json] [--import MODULE]
(`python tools/eval_av.py ...` is the same.)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmssl.cli import add_import_option, checkpoint_of, command, import_user_modules
from mmssl.eval.av import evaluate_av


@command
def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint, or a run folder (its newest)")
    parser.add_argument("--manifest", help="default: the run's data.manifest, or its SynthAV when it had none")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", help="JSON path (default: av_eval.json beside the checkpoint)")
    add_import_option(parser)
    args = parser.parse_args(argv)
    import_user_modules(parser, args.imports)
    checkpoint = checkpoint_of(parser, args.checkpoint)
    result = evaluate_av(checkpoint, args.manifest, args.split)
    for key, value in result.items():
        print(f"{key:<24} {value:.2f}" if isinstance(value, float) else f"{key:<24} {value}")
    out = Path(args.out or checkpoint.parent / "av_eval.json")
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result
