"""Self-supervised pretraining of a video encoder on a pretext task.

With no arguments: configs/pretrain/order.yaml, frame-order verification (Shuffle and Learn) with
the tiny 3D CNN on SynthAV, which is generated under data/synthav on first use; CPU-sized, about
2 minutes on 2 cores.

  mmssl pretrain [--config FILE] [--out DIR] [--resume auto|CKPT] [--import MODULE] [--shard-command CMD]
                 [key=value ...]
  mmssl pretrain [--config FILE] [key=value ...] --print-config   (the resolved config, then exit)
  torchrun --nproc_per_node N tools/pretrain.py ...   (DDP: nccl on GPUs, gloo on CPUs)
(`python tools/pretrain.py ...` is the same.)

Overrides are dotted config keys, e.g. optim.lr=0.01 data.batch_size=64 model.video_encoder=r3d_18.
Writes checkpoint_*.pt, metrics.jsonl and config.json under DIR (default runs/pretrain_<task>), and at the
end the run's curves as metrics.png (`mmssl plot`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmssl import distributed
from mmssl.cli import add_import_option, command, import_user_modules
from mmssl.cli.plot import plot_runs
from mmssl.config import commented_yaml, load_config
from mmssl.data.dataset import SkipLimitExceeded
from mmssl.engine.distributed import cleanup
from mmssl.engine.trainer import pretrain

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs/pretrain/order.yaml"


@command
def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="YAML file under configs/pretrain/ (default: %(default)s)")
    parser.add_argument("--out", help="output folder (default runs/pretrain_<task>)")
    parser.add_argument("--resume", help="'auto': continue the run in --out from its newest checkpoint, if any "
                                         "(refused if written with other settings); or a checkpoint path")
    parser.add_argument("--print-config", action="store_true",
                        help="print the config the run would use (defaults <- --config <- overrides) as YAML, "
                             "each setting's description as its comment, and exit")
    parser.add_argument("--shard-command", metavar="CMD",
                        help="read data.shards through this shell command, which writes the file {url} names to "
                             "its output, e.g. 'aws s3 cp {url} -' (an object store's client); runs CMD, so it is "
                             "taken from here only, never from a config file")
    add_import_option(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    args = parser.parse_intermixed_args(argv)
    import_user_modules(parser, args.imports)
    config = load_config(args.config, args.overrides)
    if args.print_config:
        print(commented_yaml(config))
        return
    stopped, out = None, Path(args.out or f"runs/pretrain_{config.task.name}")
    try:
        final = pretrain(config, out, args.resume, args.shard_command)
    except SkipLimitExceeded as e:  # raised on every rank at the same batch: rank 0 says it
        stopped = str(e) if distributed.is_main_process() else ""
    if stopped is None and distributed.is_main_process():
        print(f"final checkpoint: {final}")
        print(f"curves: {plot_runs([out], out / 'metrics.png')}")
    cleanup()  # out of the except block, whose traceback would keep the DDP model alive past the group
    if stopped is not None:
        if stopped:
            print(f"{parser.prog}: error: {stopped}", file=sys.stderr)
        sys.exit(2)
