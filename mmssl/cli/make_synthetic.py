"""Generate a synthetic video+audio dataset, deterministic for a seed: SynthAV (the default, embedded
and fast) or PhysAV (`--dataset physav`: simulated physics, datasets/physav.md).

Writes OUT/videos/<split>/<name>.mp4, OUT/manifest.csv and OUT/<dataset>.json (the config). A folder
that already holds the dataset for the same config is left as it is.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import fields
from pathlib import Path

from mmssl.cli import command
from mmssl.data import physav, synthetic
from mmssl.data.manifest import read_manifest

DATASETS = {"synthav": (synthetic, synthetic.SynthAVConfig), "physav": (physav, physav.PhysAVConfig)}
EPILOG = f"""\
synthav classes: {", ".join(synthetic.CLASSES)}
physav classes: {", ".join(physav.CLASSES)}
splits: pretrain (unlabeled; true class in the `action` column), train and test (labeled)

examples:
  %(prog)s --out data/synthav --seed 0
  %(prog)s --out /tmp/synthav_big --size 112 --duration 4 --num-pretrain 2000 --workers 8
  %(prog)s --dataset physav --out data/physav --seed 0
"""


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    chooser = argparse.ArgumentParser(add_help=False)
    chooser.add_argument("--dataset", choices=sorted(DATASETS), default="synthav")
    dataset = chooser.parse_known_args(argv)[0].dataset
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="synthav",
                        help="which dataset; the options below are its knobs (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (new, empty or the dataset's)")
    for option in fields(DATASETS[dataset][1]):
        parser.add_argument(f"--{option.name.replace('_', '-')}", type=type(option.default),
                            default=option.default, choices=option.metadata.get("choices"),
                            help=f"{option.metadata['help']} (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="encoding processes (default: all cores)")
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    module, config_class = DATASETS[args.dataset]
    config = config_class(**{option.name: getattr(args, option.name) for option in fields(config_class)})
    started = time.perf_counter()
    manifest = module.generate(args.out, config, workers=args.workers)
    elapsed = time.perf_counter() - started
    rows = read_manifest(manifest)
    total, no_audio, short = Counter(), Counter(), Counter()
    for row in rows:
        total[row.split] += 1
        no_audio[row.split] += not row.has_audio
        short[row.split] += row.num_frames < config.num_frames()
    print(f"{'split':<10}{'videos':>8}{'no audio':>10}{'short':>7}")
    for split in module.SPLITS:
        print(f"{split:<10}{total[split]:>8}{no_audio[split]:>10}{short[split]:>7}")
    print(f"{'all':<10}{len(rows):>8}{sum(no_audio.values()):>10}{sum(short.values()):>7}")
    print(f"manifest: {manifest}  ({elapsed:.1f} s)")
    return 0
