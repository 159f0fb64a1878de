#!/usr/bin/env python
"""Draw a batch of pretext samples as a PNG grid, to check a task by eye.

One row per sample: its frames in the order the sample gives them to the model, each captioned
with its frame number in the video (so the true order can be read off), and the sample's targets
(the class) in the row title. Audio-visual tasks: 4 frames of the clip, then the log-mel
spectrogram of the clip's own audio (with its start time) and, for AVC with AVTS, of the hard
negative from the same video (with its shift). Easy negatives (another video's audio) are paired
on the device at training time, so they are not drawn.

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
import torch  # noqa: E402

from mmssl.config import ConfigError, load_config  # noqa: E402
from mmssl.data.clip import DecodedClip  # noqa: E402
from mmssl.data.dataset import PretextDataset  # noqa: E402
from mmssl.engine.trainer import load_rows  # noqa: E402
from mmssl.io import MediaError  # noqa: E402
from mmssl.tasks import TASKS, build_task  # noqa: E402
from mmssl.transforms.audio import LogMel  # noqa: E402

SR = 16000
LOG_MEL = LogMel(sample_rate=SR)
AUDIO_TASK_FRAMES = 4  # frames drawn per clip beside the spectrograms


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
        rng = dataset.rng(int(index))
        try:
            clip = dataset.decode(int(index), rng)
        except MediaError:
            continue
        samples.append((clip, dataset.task.make_sample(clip, rng)))
        if len(samples) == args.num:
            break

    max_frames = AUDIO_TASK_FRAMES if samples[0][0].audio is not None else None
    width = max(len(_shown(c.window.frames, max_frames)) + len(_audio_panels(c, s)) for c, s in samples)
    fig, axes = plt.subplots(len(samples), width, figsize=(1.3 * width, 1.5 * len(samples)), squeeze=False)
    for row_axes, (clip, sample) in zip(axes, samples):
        targets = ", ".join(f"{k}={v}" for k, v in clip.window.targets.items() if clip.audio is None)
        shown = _shown(clip.window.frames, max_frames)
        for position, (ax, index) in enumerate(zip(row_axes, shown)):
            ax.imshow(clip.video[index].numpy())
            ax.set_title((f"{targets}  " if position == 0 and targets else "") + f"#{clip.window.frames[index]}",
                         fontsize=7, loc="left")
        for ax, (title, waveform) in zip(row_axes[len(shown):], _audio_panels(clip, sample)):
            ax.imshow(LOG_MEL(waveform[None].float())[0, 0].numpy(), origin="lower", aspect="auto", cmap="magma")
            ax.set_title(title, fontsize=6, loc="left")
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


def _shown(frames: np.ndarray, max_frames: int | None) -> list[int]:
    """Positions of the frames to draw: all, or `max_frames` spread over the clip."""
    if max_frames is None or len(frames) <= max_frames:
        return list(range(len(frames)))
    return np.linspace(0, len(frames) - 1, max_frames).round().astype(int).tolist()


def _audio_panels(clip: DecodedClip, sample: dict) -> list[tuple[str, torch.Tensor]]:
    """(title, waveform) of the sample's audio entries: the clip's own audio and, for AVTS, the
    hard negative with its shift from the positive window."""
    if clip.audio is None:
        return []
    panels = [(f"own audio @{clip.window.audio_start_s + clip.window.targets.get('positive_offset', 0) / SR:.2f}s",
               sample["audio"])]
    hard = clip.window.targets.get("hard_offset", -1)
    if "hard_audio" in sample and hard >= 0:
        shift = (hard - clip.window.targets["positive_offset"]) / SR
        panels.append((f"hard negative, shift {shift:+.2f}s", sample["hard_audio"]))
    return panels


if __name__ == "__main__":
    main()
