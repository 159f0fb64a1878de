"""Draw a batch of pretext samples as a PNG grid, to check a task by eye.

One row per sample: its frames in the order the sample gives them to the model, each captioned
with its frame number in the video (so the true order can be read off), and the sample's targets
(the class) in the row title; a task whose model sees something else of the sample (rotation: the
turned copies) draws its own views of it, each captioned with its label (`PretextTask.views`). Audio-visual tasks: 4 frames of the clip, then the log-mel
spectrogram of the clip's own audio (with its start time) and, for AVC with AVTS, of the hard
negative from the same video (with its shift). Easy negatives (another video's audio) are paired
on the device at training time, so they are not drawn. wav2vec 2.0: the spectrogram of the audio
window with its masked feature frames shaded. A multi-task sample is drawn as one row per task, each
task's part of the shared decode. masked_video (VideoMAE): 4 frames of the
clip, the same frames as the encoder gets them (masked tubes grey) and the reconstruction (visible
patches kept, masked ones from the decoder, with its MSE on the masked tubelets), by the model of
--checkpoint (a checkpoint or run folder; its run's saved config is the default config) or at random init.
With normalised targets a predicted tubelet is drawn with the true tubelet's mean and std, as in
VideoMAE's visualisation: the pattern inside it is the model's, its colour and contrast are the clip's.
A task trained on pseudo-labels (deepcluster, xdc, selavi) with --checkpoint: the run's last labels
(of its first head) as a grid, one row per cluster (the --num largest), the middle frame of the label
window of up to 6 of its videos, each captioned with its manifest labels, so that what a cluster
groups by (class, shape, colour, nothing) can be read off.
inpainting and super_resolution: for 3 frames the loss reads, the degraded clip the encoder gets (hole
filled, blurred, or the repeated frame), the model's restoration and the clean target side by side,
each with its error on the pixels the loss reads, by the same --checkpoint or at random init.
colorization: for 3 frames, the lightness the encoder gets, the model's colours with it, and the frame.
A task that says what its model makes of a sample (`PretextTask.predicted_views`: dpc, flow_similarity,
video_colorization) draws that with --checkpoint: DPC the context blocks, then each future block beside
the block of the drawn batch its prediction scores highest; flow similarity the frame, its flow and the
pixel embeddings' principal components as colours; video colorization the reference frames, the
target's lightness, the target coloured by pointing and by uniform attention (the trivial predictor),
and the target.

--manifest draws a dataset's videos as they are instead: one row per video, titled with its labels
(every column the manifest has beyond the standard ones), 6 frames across it captioned with frame
number and time, and the log-mel spectrogram of its whole audio against seconds. Where the manifest
has an `impacts` column (PhysAV: the main object's contact frames), each contact is a line on the
spectrogram at frame / fps, and a contact frame is among the frames shown, with a border.

  mmssl visualize --task order [--config FILE] [--num 8] [--out FILE.png] [--import MODULE] [key=value ...]
  mmssl visualize --task masked_video|inpainting|super_resolution|colorization [--checkpoint CKPT|RUN_DIR] [...]
  mmssl visualize --task deepcluster --checkpoint CKPT|RUN_DIR [--num 8]
  mmssl visualize --task dpc|flow_similarity --checkpoint CKPT|RUN_DIR [--num 8]
  mmssl visualize --manifest data/physav/manifest.csv [--split test] [--num 8] [--out FILE.png]
(`python tools/visualize.py ...` is the same.)
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from kornia.color import lab_to_rgb

from mmssl.cli import add_import_option, checkpoint_of, command, import_user_modules
from mmssl.config import Config, apply_overrides, load_config
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.dataset import PretextDataset, decode_window
from mmssl.data.manifest import AUDIO_ERROR, ManifestRow, read_manifest
from mmssl.engine.checkpoint import checkpoint_entries, load_checkpoint
from mmssl.engine.data import load_rows
from mmssl.io import MediaError
from mmssl.losses.region_mse import region_mse
from mmssl.models import build_video_encoder
from mmssl.tasks import TASKS, PretextTask, build_task, task_class
from mmssl.tasks.colorization import Colorization
from mmssl.tasks.masked_video import MaskedVideo, masked_mse, reconstruct, tubelet_targets
from mmssl.tasks.model import TaskModel, checkpoint_config
from mmssl.tasks.multitask import MultiTask, task_entries
from mmssl.tasks.pseudo_labels import UNLABELLED
from mmssl.tasks.restoration import Restoration
from mmssl.tasks.wav2vec2 import Wav2Vec2
from mmssl.transforms.audio import LogMel
from mmssl.transforms.video import lab, to_model_input, unnormalize

SR = 16000
LOG_MEL = LogMel(sample_rate=SR)
AUDIO_TASK_FRAMES = 4  # frames drawn per clip beside the spectrograms
VIDEO_FRAMES = 6  # frames drawn per video of a manifest
CLUSTER_VIDEOS = 6  # videos drawn per cluster
RESTORED_FRAMES = 3  # frames drawn per restored clip, each as input, restoration and target
IMPACTS = "impacts"  # manifest column: contact frame indices, semicolon-separated (PhysAV)
IMPACT_COLOUR = "cyan"
Row = tuple[str, DecodedClip, dict, PretextTask]  # label, the clip, its sample, the task that made it
T = TypeVar("T")


@command
def main(argv: list[str] | None = None, prog: str | None = None) -> Path:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", help=f"a registered task: {', '.join(TASKS)}, or your own")
    source.add_argument("--manifest", help="draw this manifest's videos as they are (frames, spectrogram, contacts)")
    parser.add_argument("--split", help="--manifest: only this split's videos (default: all)")
    parser.add_argument("--config", help="pretraining YAML (default: configs/pretrain/<task>.yaml if present)")
    parser.add_argument("--num", type=int, default=8, help="samples to draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="PNG path (default runs/visualize_<task or manifest's folder>.png)")
    parser.add_argument("--checkpoint", help="masked_video, inpainting, super_resolution, colorization: pretraining "
                                             "checkpoint (or run folder) whose model reconstructs; default: random "
                                             "init. A pseudo-label task: the checkpoint whose clusters to draw. "
                                             "dpc, flow_similarity: the checkpoint whose predictions to draw")
    add_import_option(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_intermixed_args(argv)
    matplotlib.use("Agg")  # drawn to a file, never to a window
    if args.manifest:
        if args.config or args.checkpoint or args.imports or args.overrides:
            parser.error("--manifest draws the files as they are: no --config, --checkpoint, --import or key=value")
        rows = read_manifest(args.manifest, args.split)
        clips = _decodable(len(rows), args.num, args.seed, lambda i: decode_video(rows[i]), args.manifest)
        out = args.out or f"runs/visualize_{Path(args.manifest).parent.name}.png"
        return _save(draw_videos(clips, args.manifest), out)
    if args.split:
        parser.error("--split picks a --manifest's videos; a task's split is data.split=NAME")
    import_user_modules(parser, args.imports)
    kind = task_class(args.task)
    default = Path(__file__).resolve().parents[2] / f"configs/pretrain/{args.task}.yaml"
    checkpoint = checkpoint_of(parser, args.checkpoint) if args.checkpoint else None
    predicts = kind.predicted_views is not PretextTask.predicted_views
    if checkpoint is not None and not (issubclass(kind, (MaskedVideo, Restoration, Colorization))
                                       or kind.pseudo_labelled or predicts):
        parser.error("--checkpoint draws reconstructions (--task masked_video, inpainting, super_resolution, "
                     "colorization), clusters (a pseudo-label task) or predictions (dpc, flow_similarity, "
                     "video_colorization)")
    overrides = [*args.overrides, f"task.name={args.task}"]
    if checkpoint is not None and not args.config:  # the run's own config, as this version reads it
        config = apply_overrides(checkpoint_config(checkpoint), overrides)
    else:
        config = load_config(args.config or (default if default.exists() else None), overrides)

    if checkpoint is not None and kind.pseudo_labelled:
        return _save(draw_clusters(checkpoint, config, args.num), args.out or f"runs/visualize_{args.task}.png")
    dataset = PretextDataset(load_rows(config), build_task(config), config.data.frame_size,
                             config.data.backend, seed=args.seed)

    def sample(index: int) -> tuple[DecodedClip, dict]:
        rng = dataset.rng(index)
        clip = dataset.decode(index, rng)
        return clip, dataset.task.make_sample(clip, rng)

    samples = _decodable(len(dataset), args.num, args.seed, sample, args.task)
    if isinstance(dataset.task, MaskedVideo):
        fig = _draw_reconstructions(dataset.task, samples, config.model.video_encoder, checkpoint)
    elif isinstance(dataset.task, Restoration):
        fig = _draw_restorations(dataset.task, samples, config.model.video_encoder, checkpoint, args.seed)
    elif isinstance(dataset.task, Colorization):
        fig = _draw_colorizations(dataset.task, samples, config.model.video_encoder, checkpoint, args.seed)
    elif checkpoint is not None and predicts:
        fig = _draw_predictions(dataset.task, samples, config.model.video_encoder, checkpoint)
    else:
        fig = _draw_samples(_rows(dataset.task, samples), args.task)
    return _save(fig, args.out or f"runs/visualize_{args.task}.png")


def _decodable(total: int, num: int, seed: int, decode: Callable[[int], T], what: str) -> list[T]:
    """`decode(index)` of up to `num` of `total` videos in a random order, skipping (and counting)
    those that fail to decode; exits when none decodes."""
    decoded, skipped = [], Counter()
    for index in np.random.default_rng(seed).permutation(total):
        try:
            decoded.append(decode(int(index)))
        except MediaError as e:
            skipped[e.kind] += 1
            continue
        if len(decoded) == num:
            break
    if skipped:
        print(f"skipped videos that failed to decode: {dict(skipped)}")
    if not decoded:
        sys.exit(f"error: none of the {total} videos could be decoded for {what}")
    return decoded


def _save(fig: plt.Figure, out: str) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def _rows(task: PretextTask, samples: list[tuple[DecodedClip, dict]]) -> list[Row]:
    """One row per sample; a multi-task sample gives a row per task: its part of the decode and its keys."""
    if not isinstance(task, MultiTask):
        return [("", clip, sample, task) for clip, sample in samples]
    rows = []
    for clip, sample in samples:
        for name, part in task.parts(clip).items():
            rows.append((f"{name}: ", part, task_entries(sample, name), task.tasks[name]))
    return rows


def _images(clip: DecodedClip, sample: dict, task: PretextTask) -> list[tuple[str, np.ndarray]]:
    """The captioned images of a sample's row: the task's own views of it, or its frames (#n: frame number)."""
    views = task.views(sample)
    if views is not None:
        return [(caption, image.numpy()) for caption, image in views]
    shown = _shown(clip.window.frames, AUDIO_TASK_FRAMES if clip.audio is not None else None)
    return [(f"#{clip.window.frames[index]}", clip.video[index].numpy()) for index in shown]


def _draw_samples(rows: list[Row], task: str) -> plt.Figure:
    width = max(len(_images(clip, sample, t)) + len(_audio_panels(clip, sample, t)) for _, clip, sample, t in rows)
    fig, axes = plt.subplots(len(rows), width, figsize=(max(1.3 * width, 4), 1.5 * len(rows)), squeeze=False,
                             layout="tight")
    for row_axes, (label, clip, sample, row_task) in zip(axes, rows):
        targets = ", ".join(f"{k}={v}" for k, v in clip.window.targets.items() if clip.audio is None)
        prefix = label + (f"{targets}  " if targets else "")
        shown = _images(clip, sample, row_task)
        for position, (ax, (caption, image)) in enumerate(zip(row_axes, shown)):
            _frame(ax, image, (prefix if position == 0 else "") + caption)
        panels = _audio_panels(clip, sample, row_task)
        for position, (ax, (title, waveform, mask)) in enumerate(zip(row_axes[len(shown):], panels)):
            columns = _spectrogram(ax, waveform)
            if mask is not None:  # the masked feature frames, on the spectrogram's time axis (s)
                step, hop = columns / len(mask), LOG_MEL.mel.hop_length / SR
                for start, stop in _runs(mask):
                    ax.axvspan((start * step - 0.5) * hop, (stop * step - 0.5) * hop, color="white", alpha=0.4, lw=0)
            ax.set_title((prefix if position == 0 and not shown else "") + title, fontsize=6, loc="left")
        for ax in row_axes:
            ax.axis("off")
    if any(len(clip.window.frames) for _, clip, _, _ in rows):
        fig.suptitle(f"{task}: frames in the model's order (#n: frame number) or the task's views with their\n"
                     f"labels, as decoded: before the device-side crop, flip, jitter", fontsize=7)
    else:
        fig.suptitle(f"{task}: log-mel spectrograms of the audio windows\n(shaded: masked feature frames)", fontsize=7)
    return fig


def _draw_reconstructions(task: MaskedVideo, samples: list[tuple[DecodedClip, dict]], encoder_name: str,
                          checkpoint: Path | None) -> plt.Figure:
    """One row per sample: frames, masked input (masked tubes grey), reconstruction, AUDIO_TASK_FRAMES each."""
    model = _task_model(task, encoder_name, checkpoint)
    mask = torch.stack([sample["mask"] for _, sample in samples])
    keep, masked = task.split(mask)
    x = task.front_end(to_model_input(torch.stack([sample["frames"] for _, sample in samples])))
    with torch.no_grad():
        prediction = model.head(model.encoder.forward_features(x, keep), keep, masked, tuple(mask.shape[1:]))
    pixels = unnormalize(x)
    target = tubelet_targets(pixels, task.tubelet, task.config.norm_target)
    clips = {"input": pixels,
             f"masked {task.config.mask_ratio:.0%}": reconstruct(torch.full_like(prediction, 0.5), pixels, masked,
                                                                  task.tubelet, normalized=False),
             "reconstruction": reconstruct(prediction, pixels, masked, task.tubelet, task.config.norm_target)}
    shown = _shown(samples[0][0].window.frames, AUDIO_TASK_FRAMES)
    width = len(clips) * len(shown)
    fig, axes = plt.subplots(len(samples), width, figsize=(1.3 * width, 1.5 * len(samples)), squeeze=False,
                             layout="tight")
    for i, (row_axes, (clip, _)) in enumerate(zip(axes, samples)):
        error = float(masked_mse(prediction[i:i + 1], target[i:i + 1], masked[i:i + 1]))
        for k, (label, video) in enumerate(clips.items()):
            for position, (ax, index) in enumerate(zip(row_axes[k * len(shown):], shown)):
                title = f"{label}{f' (MSE {error:.3f})' if label == 'reconstruction' else ''}" if position == 0 else ""
                _frame(ax, video[i, :, index].permute(1, 2, 0).numpy(), f"{title}\n#{clip.window.frames[index]}", 6)
    return _titled(fig, axes, f"{_model('masked_video', encoder_name, checkpoint)}: input, masked input, "
                              f"reconstruction (#n: frame number)")


def _model(task: str, encoder_name: str, checkpoint: Path | None) -> str:
    """Which model drew a reconstruction: the task, its encoder and its weights."""
    return f"{task} ({encoder_name}, {f'weights of {checkpoint}' if checkpoint else 'random init'})"


def _titled(fig: plt.Figure, axes: np.ndarray, title: str) -> plt.Figure:
    """The figure with its axes' frames hidden and `title` on top."""
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    return fig


def draw_clusters(checkpoint: Path, config: Config, num: int) -> plt.Figure:
    """The `num` largest clusters of a pseudo-label run's last labels (first head): a row each, the
    middle frame of the label window of up to CLUSTER_VIDEOS of its videos, captioned with their labels."""
    (saved,) = checkpoint_entries(checkpoint, "pseudo_labels")
    members: dict[int, list[str]] = defaultdict(list)
    for path, label in zip(saved["paths"], saved["labels"][0].tolist(), strict=True):
        members[label].append(path)
    members.pop(UNLABELLED, None)
    largest = sorted(members, key=lambda c: -len(members[c]))[:num]
    task, rows = build_task(config), {row.path: row for row in load_rows(config)}
    fig, axes = plt.subplots(len(largest), CLUSTER_VIDEOS, figsize=(1.4 * CLUSTER_VIDEOS, 1.5 * len(largest)),
                             squeeze=False, layout="tight")
    for row_axes, cluster in zip(axes, largest):
        for position, (ax, path) in enumerate(zip(row_axes, members[cluster])):
            row = rows[path]
            frames = Window(frames=task.label_window(row).frames)  # no audio to draw
            clip = decode_window(row, frames, config.data.frame_size, config.data.backend)
            labels = " ".join(v for k, v in ({"label": row.label} | row.extra).items() if v and k not in (IMPACTS, AUDIO_ERROR))
            prefix = f"cluster {cluster} ({len(members[cluster])} videos)\n" if position == 0 else "\n"
            _frame(ax, clip.video[len(clip.video) // 2].numpy(), prefix + labels, fontsize=6)
        for ax in row_axes:
            ax.axis("off")
    fig.suptitle(f"{config.task.name}: the {len(largest)} largest clusters of {checkpoint.name} (first head), "
                 "the middle frame of each video's label window", fontsize=7)
    return fig


def _draw_restorations(task: Restoration, samples: list[tuple[DecodedClip, dict]], encoder_name: str,
                       checkpoint: Path | None, seed: int) -> plt.Figure:
    """One row per sample: for RESTORED_FRAMES frames the task's loss reads (inpainting, spatial
    super-resolution: across the clip; frame interpolation: dropped ones), the degraded input the
    encoder sees, the restoration and the clean target side by side, each with its squared error on
    the loss's region."""
    model = _task_model(task, encoder_name, checkpoint)
    torch.manual_seed(seed)  # the run's augmentation and the device-side degradation
    with torch.no_grad():
        out = task.restore(_batch(samples), model.encoder, model.head)
    region = out.degraded.region.expand(len(samples), 1, *out.clean.shape[2:])
    read = [t for t in range(out.clean.shape[2]) if region[:, :, t].any()]
    clips = {"input": out.degraded.pixels, "restored": out.restored.clamp(0, 1), "target": out.clean}
    errors = {label: [[float(region_mse(video[i:i + 1, :, t:t + 1], out.clean[i:i + 1, :, t:t + 1],
                                         region[i:i + 1, :, t:t + 1])) for t in range(video.shape[2])]
                      for i in range(len(samples))] for label, video in clips.items() if label != "target"}
    return _side_by_side(samples, clips, [read[k] for k in _shown(np.array(read), RESTORED_FRAMES)], errors,
                         f"{_model(task.name, encoder_name, checkpoint)}: degraded input, restoration, target "
                         f"per frame (#n: frame number; MSE on the pixels the loss reads)")


def _draw_colorizations(task: Colorization, samples: list[tuple[DecodedClip, dict]], encoder_name: str,
                        checkpoint: Path | None, seed: int) -> plt.Figure:
    """One row per sample: for RESTORED_FRAMES frames, the lightness the encoder sees, the colours the
    model gives it (each pixel's mean ab under the predicted distribution, upsampled from the 4x-reduced
    grid, with the frame's own L) and the frame."""
    model = _task_model(task, encoder_name, checkpoint)
    torch.manual_seed(seed)  # the run's augmentation
    x = to_model_input(_batch(samples)["frames"], task.augment)
    with torch.no_grad():
        probabilities = task.predict(x, model.encoder, model.head).softmax(1)
    frame_lab = lab(unnormalize(x))
    ab = torch.einsum("bqthw,qc->bcthw", probabilities, model.head.centres.float())
    ab = F.interpolate(ab, size=x.shape[2:], mode="trilinear", align_corners=False)
    predicted = lab_to_rgb(rearrange(torch.cat([frame_lab[:, :1], ab], 1), "b c t h w -> (b t) c h w"))
    clips = {"input (L)": unnormalize(task.front_end(x)),
             "colourised": rearrange(predicted, "(b t) c h w -> b c t h w", b=len(x)), "target": unnormalize(x)}
    return _side_by_side(samples, clips, _shown(np.arange(x.shape[2]), RESTORED_FRAMES), {},
                         f"{_model(task.name, encoder_name, checkpoint)}: lightness in, colours out, the frame "
                         f"(#n: frame number)")


def _draw_predictions(task: PretextTask, samples: list[tuple[DecodedClip, dict]], encoder_name: str,
                      checkpoint: Path) -> plt.Figure:
    """One row per sample: the task's `predicted_views` of the drawn batch by the checkpoint's model."""
    model = _task_model(task, encoder_name, checkpoint)
    with torch.no_grad():
        rows = task.predicted_views(_batch(samples), model.encoder, model.head)
    width = max(map(len, rows))
    fig, axes = plt.subplots(len(rows), width, figsize=(max(1.3 * width, 5), 1.6 * len(rows)), squeeze=False,
                             layout="tight")
    for row_axes, views in zip(axes, rows):
        for ax, (caption, image) in zip(row_axes, views):
            _frame(ax, image.numpy(), caption, 6)
    return _titled(fig, axes, f"{_model(task.name, encoder_name, checkpoint)}:\nwhat the model makes of "
                              f"{len(rows)} samples")


def _task_model(task: PretextTask, encoder_name: str, checkpoint: Path | None) -> TaskModel:
    """The task's model in eval mode: the checkpoint's weights, or random init."""
    model = TaskModel(task, build_video_encoder(encoder_name)).eval()
    if checkpoint is not None:
        load_checkpoint(checkpoint, model=model)
    return model


def _batch(samples: list[tuple[DecodedClip, dict]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([sample[key] for _, sample in samples]) for key in samples[0][1]}


def _side_by_side(samples: list[tuple[DecodedClip, dict]], clips: dict[str, torch.Tensor], shown: list[int],
                  errors: dict[str, list[list[float]]], title: str) -> plt.Figure:
    """One row per sample, for each shown frame the clips' versions of it side by side (pixels
    [B, 3, T, H, W] in [0, 1]), captioned with the frame number and the `errors` [sample][frame] of a clip."""
    width = len(clips) * len(shown)
    fig, axes = plt.subplots(len(samples), width, figsize=(1.3 * width, 1.5 * len(samples)), squeeze=False,
                             layout="tight")
    for i, (row_axes, (clip, _)) in enumerate(zip(axes, samples)):
        for j, index in enumerate(shown):
            for k, (label, video) in enumerate(clips.items()):
                note = f"\nMSE {errors[label][i][index]:.4f}" if label in errors else ""
                _frame(row_axes[len(clips) * j + k], video[i, :, index].permute(1, 2, 0).clamp(0, 1).numpy(),
                       f"{label} #{clip.window.frames[index]}{note}", 6)
    return _titled(fig, axes, title)


def decode_video(row: ManifestRow) -> DecodedClip:
    """VIDEO_FRAMES frames across the video (its contact frames among them), at their size, and its whole audio."""
    contacts = impact_frames(row)[:VIDEO_FRAMES // 2]  # the rest spread over the video
    spread = _shown(np.arange(row.num_frames), VIDEO_FRAMES - len(contacts))
    window = Window(np.union1d(spread, contacts), 0.0 if row.has_audio else None, row.duration)
    return decode_window(row, window)


def impact_frames(row: ManifestRow) -> np.ndarray:
    """The contact frame indices of a manifest row (its `impacts` column; none without one)."""
    return np.array([int(k) for k in row.extra.get(IMPACTS, "").split(";") if k], dtype=int)


def draw_videos(clips: list[DecodedClip], manifest: str) -> plt.Figure:
    """One row per video: its frames (contact frames framed), then the spectrogram of its audio with
    the contacts as lines at frame / fps, the row titled with the manifest's labels."""
    width, audio = max(len(clip.window.frames) for clip in clips), any(clip.audio is not None for clip in clips)
    fig = plt.figure(figsize=(1.2 * width + 5 * audio, 1.9 * len(clips)), layout="constrained")
    for subfig, clip in zip(np.atleast_1d(fig.subfigures(len(clips))), clips):
        contacts = impact_frames(clip.row)
        subfig.suptitle(_video_title(clip.row), x=0.01, ha="left", fontsize=8)
        axes = subfig.subplots(1, width + audio, width_ratios=[1] * width + [4] * audio)
        for ax in axes:
            ax.axis("off")
        for ax, frame, image in zip(axes, clip.window.frames, clip.video):
            _frame(ax, image.numpy(), f"#{frame} {frame / clip.row.fps:.2f}s",
                   edge=IMPACT_COLOUR if frame in contacts else None)
        if clip.audio is not None:
            ax = axes[-1]
            ax.axis("on")
            _spectrogram(ax, clip.audio)
            for time in contacts / clip.row.fps:
                ax.axvline(time, color=IMPACT_COLOUR, lw=1, ls=(0, (3, 3)))  # dashed: the onset shows through
            ax.set(xlim=(0, clip.row.duration), yticks=[])
            ax.tick_params(labelsize=6)
            ax.set_xlabel("s", fontsize=6, labelpad=0)
    marks = any(IMPACTS in clip.row.extra for clip in clips)
    fig.suptitle(f"{manifest}: frames (#n: frame number, time), log-mel of the audio"
                 + (f"; {IMPACT_COLOUR}: contacts (column '{IMPACTS}')" if marks else ""), fontsize=8)
    return fig


def _video_title(row: ManifestRow) -> str:
    """File, split, labels (every extra column but the contacts, which are listed last)."""
    labels = {"label": row.label} | {k: v for k, v in row.extra.items() if k not in (IMPACTS, AUDIO_ERROR)}
    title = f"{Path(row.path).name} ({row.split}): " + ", ".join(f"{k}={v}" for k, v in labels.items() if v)
    if IMPACTS in row.extra:
        title += f"; contacts at frames {', '.join(map(str, impact_frames(row))) or '(none)'}"
    return title


def _frame(ax: plt.Axes, image: np.ndarray, title: str, fontsize: int = 7, edge: str | None = None) -> None:
    """A frame with its caption; `edge`: a border of that colour."""
    ax.imshow(image)
    ax.set_title(title, fontsize=fontsize, loc="left")
    if edge:
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set(color=edge, linewidth=3)


def _spectrogram(ax: plt.Axes, waveform: torch.Tensor) -> int:
    """Draw the log-mel of `waveform` against time in seconds (each column at its window's centre);
    returns its number of columns."""
    spectrogram = LOG_MEL(waveform[None].float())[0, 0].numpy()
    hop = LOG_MEL.mel.hop_length / SR
    ax.imshow(spectrogram, origin="lower", aspect="auto", cmap="magma",
              extent=(-hop / 2, (spectrogram.shape[1] - 0.5) * hop, 0, spectrogram.shape[0]))
    return spectrogram.shape[1]


def _shown(frames: np.ndarray, max_frames: int | None) -> list[int]:
    """Positions of the frames to draw: all, or `max_frames` spread over the clip."""
    if max_frames is None or len(frames) <= max_frames:
        return list(range(len(frames)))
    return np.linspace(0, len(frames) - 1, max_frames).round().astype(int).tolist()


def _audio_panels(clip: DecodedClip, sample: dict,
                  task: PretextTask) -> list[tuple[str, torch.Tensor, np.ndarray | None]]:
    """(title, waveform, masked feature frames or None) of the sample's audio entries: the clip's own
    audio (with wav2vec 2.0's span mask) and, for AVTS, the hard negative with its shift from the
    positive window."""
    if clip.audio is None:
        return []
    title = f"own audio @{clip.window.audio_start_s + clip.window.targets.get('positive_offset', 0) / SR:.2f}s"
    mask = sample["mask"].numpy() if isinstance(task, Wav2Vec2) else None
    panels = [(title + (f", {mask.mean():.0%} masked" if mask is not None else ""), sample["audio"], mask)]
    hard = clip.window.targets.get("hard_offset", -1)
    if "hard_audio" in sample and hard >= 0:
        shift = (hard - clip.window.targets["positive_offset"]) / SR
        panels.append((f"hard negative, shift {shift:+.2f}s", sample["hard_audio"], None))
    return panels


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in a bool vector."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))
