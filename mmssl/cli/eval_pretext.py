"""Held-out pretext metrics of a pretraining run: each metric its task declares, on videos it never
trained on, beside the metric's chance level (did the task learn its pretext at all?).

  mmssl eval-pretext RUN [--manifest FILE] [--split test] [--batch-size 32] [--seed 0] [--passes 1]
                         [--out FILE.json] [--import MODULE]
RUN: a checkpoint, or a run folder (its newest). The manifest defaults to the run's own, or its
SynthAV; --passes draws that many windows of every video. The SE is of the metric's distance from
chance (of the metric where chance is unknown), counted over batches of distinct videos; z is that
distance in SEs, positive on the better side. Writes pretext_eval.json beside the checkpoint. (`python tools/eval_pretext.py ...` is the same.)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmssl.cli import add_import_option, checkpoint_of, command, import_user_modules
from mmssl.eval.pretext import evaluate_pretext


@command
def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN", help="checkpoint, or a run folder (its newest checkpoint)")
    parser.add_argument("--manifest", help="default: the run's data.manifest, or its SynthAV when it had none")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--passes", type=int, default=1, help="windows drawn of every video (default 1)")
    parser.add_argument("--out", help="JSON path (default: pretext_eval.json beside the checkpoint)")
    add_import_option(parser)
    args = parser.parse_args(argv)
    import_user_modules(parser, args.imports)
    checkpoint = checkpoint_of(parser, args.run)
    result = evaluate_pretext(checkpoint, args.manifest, args.split, args.batch_size, args.seed, args.passes)
    print(f"{result['task']} at step {result['step']} ({checkpoint}): {result['samples']} samples of "
          f"{result['videos']} {result['split']!r} videos of {result['manifest']}")
    print(f"{'metric':<28} {'held-out':>10} {'chance':>10} {'SE':>8} {'z':>6}  better")
    for key, m in result["metrics"].items():
        chance, se, z = (("-" if v is None else f"{v:{spec}}")
                         for v, spec in ((m["chance"], ".4f"), (m["se"], ".4f"), (m.get("z"), ".1f")))
        print(f"{key:<28} {m['value']:>10.4f} {chance:>10} {se:>8} {z:>6}  "
              f"{'higher' if m['higher_is_better'] else 'lower'}")
    print(f"SE over {next(iter(result['metrics'].values()))['units']} batches of distinct videos")
    print(f"videos left out: {result['left_out'] or 'none'}")
    out = Path(args.out or checkpoint.parent / "pretext_eval.json")
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result
