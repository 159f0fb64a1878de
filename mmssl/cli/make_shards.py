"""Pack a manifest's videos into tar shards for streaming (`data.shards`): runs on many nodes read them sequentially.

Each row's file, its row (as JSON) and its stored motion profiles (built with --motion) go into shards
of about --shard-size, written in parallel, with the index DIR/shards.csv (a manifest of the members).
Files missing or unreadable are reported and left out. Exit status 0 when shards were written, 2 when
no file could be packed.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from mmssl.cli import command
from mmssl.data.manifest import ManifestError
from mmssl.data.shards import INDEX, SHARD_BYTES, pack_shards

EXAMPLES = """\
examples:
  %(prog)s data/k400/k400.csv --out data/k400_shards --split train
  %(prog)s data/synthav/manifest.csv --out data/synthav_shards --shard-size 64MB
"""
UNITS = {"": 1, "B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}


def byte_size(text: str) -> int:
    """'256MB' -> bytes (B, KB, MB, GB: powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 256MB")
    return int(float(match[1]) * UNITS[match[2]])


@command
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, metavar="MANIFEST", help="the manifest CSV to pack")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="the shard folder to write")
    parser.add_argument("--shard-size", type=byte_size, default=SHARD_BYTES, metavar="SIZE",
                        help="bytes of files per shard, e.g. 256MB (default); a run needs at least a shard per rank")
    parser.add_argument("--split", help="pack only this split's rows (default: every row)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="shards written at once (default: all cores)")
    args = parser.parse_args(argv)
    result = pack_shards(args.manifest, args.out, args.shard_size, args.workers, args.split)
    for skipped in result.left_out:
        print(f"left out [{skipped.kind}] {skipped.path}: {skipped.detail}")
    if not result.rows:
        raise ManifestError(f"no file of {args.manifest} could be packed ({len(result.left_out)} left out)")
    print(f"wrote {len(result.shards)} shards of {len(result.rows)} videos ({len(result.left_out)} left out) in "
          f"{result.seconds:.1f} s: {args.out / INDEX}")
    return 0
