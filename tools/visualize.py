#!/usr/bin/env python
"""Draw a batch of pretext samples as a PNG grid, to check a task by eye.

One row per sample: its frames in the order the sample gives them to the model, each captioned
with its frame number in the video (so the true order can be read off), and the sample's targets
(the class) in the row title.

  python tools/visualize.py --task order [--config FILE] [--num 8] [--out FILE.png] [key=value ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mmssl.config import ConfigError, load_config  # noqa: E402
from mmssl.data.dataset import PretextDataset  # noqa: E402
from mmssl.engine.trainer import load_rows  # noqa: E402
from mmssl.io import MediaError  # noqa: E402
from mmssl.tasks import TASKS, build_task  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--config", help="pretraining YAML (default: configs/pretrain/<task>.yaml if present)")
    parser.add_argument("--num", type=int, default=8, help="samples to draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="PNG path (default runs/visualize_<task>.png)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    default = Path(__file__).resolve().parents[1] / f"configs/pretrain/{args.task}.yaml"
    try:
        config = load_config(args.config or (default if default.exists() else None),
                             [*args.overrides, f"task.name={args.task}"])
    except ConfigError as e:
        parser.error(str(e))

    dataset = PretextDataset(load_rows(config), build_task(config), config.data.frame_size,
                             config.data.backend, seed=args.seed)
    samples = []
    for index in np.random.default_rng(args.seed).permutation(len(dataset)):
        try:
            samples.append(dataset.decode(int(index), dataset.rng(int(index))))
        except MediaError:
            continue
        if len(samples) == args.num:
            break

    width = max(len(s.window.frames) for s in samples)
    fig, axes = plt.subplots(len(samples), width, figsize=(1.3 * width, 1.5 * len(samples)), squeeze=False)
    for row_axes, clip in zip(axes, samples):
        targets = ", ".join(f"{k}={v}" for k, v in clip.window.targets.items())
        for position, (ax, frame, number) in enumerate(zip(row_axes, clip.video.numpy(), clip.window.frames)):
            ax.imshow(frame)
            ax.set_title((f"{targets}  " if position == 0 else "") + f"#{number}", fontsize=7, loc="left")
        for ax in row_axes:
            ax.axis("off")
    fig.suptitle(f"{args.task}: frames as the model sees them (#n: frame number)", fontsize=8)
    fig.tight_layout()
    out = Path(args.out or f"runs/visualize_{args.task}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
