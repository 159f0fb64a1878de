"""Build a manifest CSV from a video dataset on disk.

Every file is probed (in parallel processes; with --verify every frame is decoded); unreadable
files are reported with their reason and left out, never fatal. With --motion, each usable video's
motion profile (the high-motion tuple choice of Shuffle and Learn and OPN) is computed once, in
parallel, and stored beside the manifest. Exit status 0 when a manifest was written, 2 for usage
errors (no ROOT, no split files, no candidate videos) and for a build with no usable video (no
manifest is written; the reason of the first file left out is named).
UCF101, HMDB51 and Something-Something v2 find their videos in ROOT/UCF-101/, ROOT/hmdb51/ or
ROOT/20bn-something-something-v2/ (the archives extracted side by side with the split folder) or, when
ROOT has no such folder, in ROOT itself. Kinetics, VGG-Sound and AudioSet find each annotated clip
anywhere under ROOT by its file name; a file named by the YouTube id alone that is longer than its clip
is the whole video, and its row is the clip (column segment_start: datasets/README.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmssl.cli import command
from mmssl.data.builders import (
    FOLDER_LAYOUTS,
    OFFICIAL_SPLITS,
    PROBE_TIMEOUT_S,
    Listing,
    list_audioset,
    list_folder,
    list_hmdb51,
    list_kinetics,
    list_ssv2,
    list_ucf101,
    list_vggsound,
    probe_candidates,
)
from mmssl.data.manifest import ManifestError, write_manifest
from mmssl.data.motion import MOTION_SIZE, store_profiles

EXAMPLES = """\
examples:
  %(prog)s data/ucf101 --format ucf101 --split 1 --out data/ucf101/ucf101_split1.csv
  %(prog)s data/ucf101 --format ucf101 --split 1 --out data/ucf101/ucf101_split1.csv --motion
  %(prog)s data/hmdb51 --format hmdb51 --split 1 --out data/hmdb51/hmdb51_split1.csv
  %(prog)s data/kinetics400 --format kinetics --annotations train.csv validate.csv --out k400.csv
  %(prog)s data/ssv2 --format ssv2 --out data/ssv2/ssv2.csv
  %(prog)s data/vggsound --format vggsound --annotations data/vggsound/vggsound.csv --out data/vggsound/vggsound.csv
  %(prog)s data/audioset --format audioset --annotations balanced_train_segments.csv eval_segments.csv --out as.csv
  %(prog)s data/myvideos --format folder --layout split/class --out data/myvideos/manifest.csv
"""


def parse_args(argv: list[str] | None = None,
               prog: str | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, metavar="ROOT", help="dataset folder (videos under it)")
    parser.add_argument("--format", required=True,
                        choices=("folder", "ucf101", "hmdb51", "ssv2", "kinetics", "vggsound", "audioset"),
                        help="folder: ROOT/<class>/<video> (see --layout); ucf101 / hmdb51: the official "
                             "split files; ssv2: Something-Something v2's JSON label files; kinetics / "
                             "vggsound / audioset: annotation CSV(s) of YouTube clips")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="manifest CSV to write (paths under its folder are stored relative)")
    parser.add_argument("--split", type=int, default=1, choices=OFFICIAL_SPLITS, metavar="N",
                        help="official split number 1..3 for ucf101 / hmdb51 (default 1)")
    parser.add_argument("--splits-dir", type=Path, metavar="DIR",
                        help="split files folder (default ROOT/ucfTrainTestlist for ucf101, "
                             "ROOT/testTrainMulti_7030_splits for hmdb51, ROOT/labels for ssv2: datasets/ssv2.md)")
    parser.add_argument("--annotations", type=Path, nargs="+", action="extend", metavar="CSV",
                        help="kinetics: CSV(s) with label,youtube_id,time_start,time_end,split; vggsound: "
                             "vggsound.csv; audioset: *_segments.csv (the split is the file's name)")
    parser.add_argument("--class-labels", type=Path, metavar="CSV",
                        help="audioset: class_labels_indices.csv (default: beside the first --annotations CSV)")
    parser.add_argument("--layout", default="class", choices=FOLDER_LAYOUTS,
                        help="folder: ROOT/<class>/<video> or ROOT/<split>/<class>/<video> "
                             "(default class)")
    parser.add_argument("--default-split", default=None, metavar="NAME",
                        help="split name for videos that get none from the layout or CSV "
                             "(default: 'train' for folder, empty for kinetics)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="probing processes (default: all cores; 1: in this process)")
    parser.add_argument("--probe-timeout", type=float, default=PROBE_TIMEOUT_S, metavar="S",
                        help="seconds one file's probe may take before it is stopped and the file skipped "
                             f"(with --workers > 1; default {PROBE_TIMEOUT_S:g})")
    parser.add_argument("--verify", action="store_true",
                        help="also decode every frame of each file (within --probe-timeout), so files "
                             "damaged past their first frame are left out too; slower: raise --probe-timeout "
                             "for long videos")
    parser.add_argument("--motion", action="store_true",
                        help="also store each video's motion profile beside the manifest (FILE's stem + "
                             ".motion<size>.npy; one full decode per video at --motion-size px, within "
                             "--probe-timeout), so that Shuffle and Learn and OPN runs need not decode every "
                             "video in every DataLoader worker")
    parser.add_argument("--motion-size", type=int, default=MOTION_SIZE, metavar="PX",
                        help=f"the profiles' decode size: the runs' task.<name>.motion.size (default {MOTION_SIZE})")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser, parser.parse_args(argv)


def list_candidates(args: argparse.Namespace) -> Listing:
    """The listing for the chosen format; raises FileNotFoundError/ValueError on bad input."""
    if args.format == "folder":
        default_split = "train" if args.default_split is None else args.default_split
        return list_folder(args.root, args.layout, default_split)
    if args.format == "ucf101":
        return list_ucf101(args.root, args.split, args.splits_dir)
    if args.format == "hmdb51":
        return list_hmdb51(args.root, args.split, args.splits_dir)
    if args.format == "ssv2":
        return list_ssv2(args.root, args.splits_dir)
    if not args.annotations:
        raise ValueError(f"--format {args.format} needs --annotations CSV")
    if args.format == "vggsound":
        return list_vggsound(args.root, args.annotations)
    if args.format == "audioset":
        return list_audioset(args.root, args.annotations, args.class_labels)
    return list_kinetics(args.root, args.annotations, args.default_split or "")


@command
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser, args = parse_args(argv, prog)
    if not args.root.is_dir():
        parser.error(f"ROOT {args.root} is not a folder")
    try:
        listing = list_candidates(args)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    listed = len(listing.candidates) + len(listing.skipped)
    if not listed:
        parser.error(f"no candidate videos found for --format {args.format} under {args.root}")
    print(f"{args.format}: {listed} listed, {len(listing.candidates)} on disk; probing"
          + (" and decoding every frame" if args.verify else ""))

    def report(done: int, total: int) -> None:
        if done == total or done % 500 == 0:
            print(f"\rprobed {done}/{total}", end="\n" if done == total else "", file=sys.stderr,
                  flush=True)

    result = probe_candidates(listing, args.workers, None if args.quiet else report, args.probe_timeout,
                              args.verify)
    print(result.summary())
    if not result.usable:
        kinds = ", ".join(f"{kind}: {n}" for kind, n in result.skipped_by_kind().items())
        first = result.skipped[0]
        raise ManifestError(f"no usable video among the {listed} listed ({kinds}), so no manifest: "
                            f"e.g. [{first.kind}] {first.path}: {first.detail}")
    rows = result.rows
    if args.motion:
        stored = store_profiles(rows, args.out, args.motion_size, args.workers, args.probe_timeout)
        rows = stored.rows
        print(f"motion profiles of {len(rows) - len(stored.failed)} videos at {args.motion_size} px in "
              f"{stored.seconds:.1f} s: {stored.path}")
        if stored.failed:
            print("\n".join(["no profile (kept; a run computes it, or skips the video):",
                             *(f"  {failure}" for failure in stored.failed)]))
    write_manifest(rows, args.out)
    print(f"wrote {args.out} ({result.usable} rows)")
    return 0
