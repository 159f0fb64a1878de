"""Transfer to action recognition: a linear probe or a weighted kNN on frozen features (with
nearest-neighbour video retrieval), or a full fine-tune.

Scores: clip-level top-1/top-5 (each of a video's `num_clips` uniform clips on its own) and
video-level (class probabilities averaged over the clips), plus the video-level confusion matrix.
Feature modes: "clip" feeds [C, T, H, W] clips to the encoder; "frames" feeds each frame (T=1)
and concatenates the T feature vectors in time order (for encoders pretrained on frame tasks);
"audio" feeds `num_clips` uniform windows of `audio_s` seconds of the audio track to an audio
encoder (linear probe only; videos without audio are left out and counted). Every protocol takes the
encoder's input front end (`encoder_input`, saved in its checkpoint; mmssl.transforms.inputs) and
applies it to what the encoder sees.
"""
from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader

from mmssl.config import ConfigError, TransferConfig
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.dataset import PretextDataset, collate, kinds
from mmssl.data.manifest import ManifestError, ManifestRow, class_names, read_manifest
from mmssl.data.sampling import random_clip, uniform_clips
from mmssl.data.synthetic import ensure_synthav
from mmssl.engine.optim import cosine_schedule, param_groups, set_lr
from mmssl.engine.precision import mixed_precision
from mmssl.eval.probe import fit_linear_probe
from mmssl.models import AudioEncoder, VideoEncoder, build_encoder
from mmssl.tasks.model import checkpoint_encoder_input, encoder_name, load_task_model
from mmssl.transforms.inputs import front_end
from mmssl.transforms.video import VideoAugment, to_model_input

FINETUNE_AUGMENT = VideoAugment(crop_scale=(0.6, 1.0), flip=False)  # a flip turns left into right
PROTOCOLS = ("linear", "knn", "finetune")


class LabeledClips:
    """CPU half for labeled videos: `num_clips` uniform clips (or one random clip) and the label."""

    needs_audio = False

    def __init__(self, classes: list[str], clip_len: int, stride: int, num_clips: int, random: bool) -> None:
        self.class_index = {name: i for i, name in enumerate(classes)}
        self.clip_len, self.stride, self.num_clips, self.random = clip_len, stride, num_clips, random

    def min_frames(self, fps: float) -> int:
        return 1  # a short video repeats its last frame

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        clips = (random_clip(row.num_frames, self.clip_len, self.stride, rng)[None] if self.random
                 else uniform_clips(row.num_frames, self.clip_len, self.stride, self.num_clips))
        return Window(frames=clips.reshape(-1), targets={"label": self.class_index[row.label]})

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        frames = rearrange(clip.video, "(k t) h w c -> k t h w c", t=self.clip_len)
        return {"frames": frames, "label": torch.tensor(clip.window.targets["label"]), "path": clip.row.path}


class LabeledAudio:
    """CPU half of the audio probe: the whole audio track (zero-padded to at least `audio_s`) and
    the label, no frames; `make_sample` cuts `num_windows` uniform windows of `audio_s` seconds."""

    needs_audio = True

    def __init__(self, classes: list[str], audio_s: float, num_windows: int, sample_rate: int = 16000) -> None:
        self.class_index = {name: i for i, name in enumerate(classes)}
        self.audio_s, self.num_windows, self.sample_rate = audio_s, num_windows, sample_rate

    def min_frames(self, fps: float) -> int:
        return 1  # a short track is zero-padded

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        return Window(frames=np.zeros(0, dtype=np.int64), audio_start_s=0.0,
                      audio_duration_s=max(row.num_frames / row.fps, self.audio_s),
                      targets={"label": self.class_index[row.label]})

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        windows = uniform_clips(len(clip.audio), round(self.audio_s * self.sample_rate), 1, self.num_windows)
        return {"audio": clip.audio[windows], "label": torch.tensor(clip.window.targets["label"]), "path": clip.row.path}


def labeled_rows(manifest: str | Path, split: str, column: str = "label") -> list[ManifestRow]:
    """The rows of `split` ("a+b" joins splits, e.g. PhysAV's "pretrain+train" for the full-label
    ceiling) that have a value in `column` ("label" or an extra column such as SynthAV's "shape"),
    with that value as their label."""
    rows = [replace(row, label=row.value(column)) for part in split.split("+") for row in read_manifest(manifest, part)]
    return [r for r in rows if r.label]


class PretrainedEncoder(NamedTuple):
    """The encoder a pretraining checkpoint trained and how transfer must feed it."""

    encoder: VideoEncoder | AudioEncoder
    name: str  # its registry name
    feature_mode: str  # its task's: "clip", "frames" or "audio" (an audio encoder)
    encoder_input: str  # the front end it trained on (mmssl.transforms.inputs)


def load_encoder(checkpoint: str | Path) -> PretrainedEncoder:
    """The encoder a pretraining checkpoint trained (the video encoder, or the audio encoder of an
    audio-only task such as wav2vec 2.0), its registry name, its task's feature mode and the input
    front end saved with it (for a checkpoint without one, its task's declaration)."""
    model, config = load_task_model(checkpoint)
    return PretrainedEncoder(model.encoder, encoder_name(config), model.task.feature_mode,
                             checkpoint_encoder_input(checkpoint, model.task.encoder_input))


def load_audio_encoder(checkpoint: str | Path) -> tuple[AudioEncoder, str]:
    """The audio encoder of a pretraining checkpoint and its registry name: an audio-only task's
    encoder (wav2vec 2.0) or the audio tower of an audio-visual task (AVC, AV InfoNCE, a
    multi-task run with one of them)."""
    model, config = load_task_model(checkpoint)
    encoder = next((m for m in model.modules() if isinstance(m, AudioEncoder)), None)
    if encoder is None:
        raise ValueError(f"{checkpoint}: task {config.task.name!r} trains no audio encoder")
    return encoder, config.model.audio_encoder


def random_encoder(name: str, seed: int) -> VideoEncoder | AudioEncoder:
    """The video or audio encoder registered under `name`, at a seeded random init."""
    torch.manual_seed(seed)
    return build_encoder(name)


def encode(encoder: VideoEncoder, frames: torch.Tensor, mode: str, augment: VideoAugment | None = None,
           frame_size: int | None = None, encoder_input: str | None = None) -> torch.Tensor:
    """uint8 [B, K, T, H, W, C] -> features [B, K, F] (F = D for clips, T * D for frames), the model
    input passed through the front end `encoder_input` (None: none)."""
    b, k, t = frames.shape[:3]
    x = to_model_input(rearrange(frames, "b k t h w c -> (b k) t h w c"), augment, frame_size)
    x = front_end(encoder_input)(x) if encoder_input else x
    if mode == "frames":
        features = encoder(rearrange(x, "n c t h w -> (n t) c 1 h w"))
        return rearrange(features, "(b k t) d -> b k (t d)", b=b, k=k, t=t)
    if mode == "clip":
        return rearrange(encoder(x), "(b k) d -> b k d", b=b)
    raise ValueError(f"unknown feature mode {mode!r}: clip or frames")


def encode_audio(encoder: AudioEncoder, audio: torch.Tensor, encoder_input: str | None = None) -> torch.Tensor:
    """float [B, K, samples] -> features [B, K, D], the samples passed through the front end
    `encoder_input` (None: none)."""
    x = rearrange(audio, "b k s -> (b k) s")
    x = front_end(encoder_input)(x) if encoder_input else x
    return rearrange(encoder(x), "(b k) d -> b k d", b=len(audio))


def knn_classify(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int,
                 k: int = 20, temperature: float = 0.07) -> torch.Tensor:
    """Weighted k-nearest-neighbour vote (Wu et al., CVPR 2018, Sec. 3.4; DINO's k = 20, T = 0.07):
    on L2-normalised features, the k training samples most similar to a test sample by cosine
    similarity s_i each vote for their class with weight exp(s_i / T), and the class probabilities
    are the normalised votes. Train features [N, K, F] (each of a video's K clips a sample), labels
    [N], test features [M, K, F] -> log-probabilities [M, K, classes] (-inf for classes with no vote)."""
    train = F.normalize(train_x.flatten(0, 1).float(), dim=-1)
    train_y = train_y.repeat_interleave(train_x.shape[1])
    test = F.normalize(test_x.flatten(0, 1).float(), dim=-1)
    similarity, index = (test @ train.T).topk(min(k, len(train)), dim=-1)
    votes = torch.zeros(len(test), num_classes).scatter_add_(1, train_y[index], (similarity / temperature).exp())
    return (votes / votes.sum(-1, keepdim=True)).log().view(*test_x.shape[:2], num_classes)


def retrieval_recall(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                     ks: tuple[int, ...] = (1, 5, 10, 20, 50)) -> dict[str, float]:
    """Nearest-neighbour video retrieval (Xu et al., CVPR 2019, Sec. 4.4, the protocol of VCOP and
    later video SSL papers): each test video, as the mean of its clip features [M, K, F], queries
    the training videos [N, K, F] by cosine similarity; R@k (%) is the share of queries with a video
    of their own class among the k nearest. Only k <= N are reported."""
    train = F.normalize(train_x.float().mean(1), dim=-1)
    test = F.normalize(test_x.float().mean(1), dim=-1)
    ks = tuple(k for k in ks if k <= len(train))
    nearest = (test @ train.T).topk(max(ks), dim=-1).indices
    same_class = train_y[nearest] == test_y[:, None]
    return {f"R@{k}": 100.0 * same_class[:, :k].any(-1).float().mean().item() for k in ks}


def layer_decay_scale(encoder: VideoEncoder, decay: float) -> Callable[[str], float]:
    """Layer-wise lr decay (BEiT, Bao et al. 2022; VideoMAE's fine-tuning: 0.75 for ViT-B): parameter
    `name` of layer l (``encoder.layer_id``) trains at ``decay ** (num_layers - 1 - l)`` times the lr,
    so the top layer and the classifier get the full lr and the embedding the least (``layer_id``
    counts any name it does not know, such as the classifier's "head.*", as the top). `decay` 1:
    every scale is 1."""
    if decay == 1.0:
        return lambda name: 1.0
    if not 0 < decay < 1:
        raise ValueError(f"layer decay must lie in (0, 1], got {decay}")
    if not hasattr(encoder, "layer_id"):
        raise ValueError(f"layer-wise lr decay needs an encoder with layers (the video ViTs), "
                         f"not {type(encoder).__name__}")
    top = encoder.num_layers - 1
    return lambda name: decay ** (top - encoder.layer_id(name))


def finetune_optimizer(encoder: VideoEncoder, classifier: nn.Module, config: TransferConfig) -> torch.optim.AdamW:
    """AdamW over encoder and classifier (`param_groups`: no decay on biases and norms; with
    `finetune_layer_decay` < 1, each group's lr_scale from `layer_decay_scale`; lr set by `set_lr`)."""
    named = [*encoder.named_parameters(), *(("head." + n, p) for n, p in classifier.named_parameters())]
    groups = param_groups(named, layer_decay_scale(encoder, config.finetune_layer_decay))
    return torch.optim.AdamW(groups, lr=config.finetune_lr, weight_decay=config.finetune_weight_decay)


def none_usable(rows: list[ManifestRow], skipped: Counter) -> ManifestError:
    """The error for a split of which no video could be used."""
    return ManifestError(f"none of the {len(rows)} {rows[0].split!r} videos could be used "
                         f"(left out: {dict(skipped) or 'none'})")


class Transfer:
    """Labeled train/test clips of a manifest and the protocols on them."""

    def __init__(self, config: TransferConfig, device: torch.device | None = None) -> None:
        self.config = config
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if config.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown transfer protocol {config.protocol!r}: one of {', '.join(PROTOCOLS)}")
        manifest = config.manifest or str(ensure_synthav(config.synthav_dir))
        self.train_rows = labeled_rows(manifest, config.train_split, config.label_column)
        self.test_rows = labeled_rows(manifest, config.test_split, config.label_column)
        if not self.train_rows or not self.test_rows:
            raise ManifestError(f"{manifest}: need rows with a {config.label_column!r} in splits "
                             f"{config.train_split!r} and {config.test_split!r}")
        self.classes = class_names(self.train_rows + self.test_rows)

    def loader(self, rows: list[ManifestRow], random: bool, shuffle: bool, seed: int = 0,
               audio: bool = False) -> DataLoader:
        """Labeled clips of `rows` (one random clip or `num_clips` uniform ones), or with `audio`
        `num_clips` uniform audio windows."""
        c = self.config
        clips = (LabeledAudio(self.classes, c.audio_s, c.num_clips) if audio
                 else LabeledClips(self.classes, c.clip_len, c.stride, c.num_clips, random))
        dataset = PretextDataset(rows, clips, c.frame_size, seed=seed)
        return DataLoader(dataset, batch_size=c.batch_size, shuffle=shuffle, collate_fn=collate,
                          num_workers=c.num_workers, generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def features(self, encoder: VideoEncoder | AudioEncoder, rows: list[ManifestRow], mode: str,
                 encoder_input: str | None = None, cache: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, Counter]:
        """Frozen features [N, K, F] of every video's uniform clips (or audio windows) through the
        front end `encoder_input`, the labels [N], and the videos left out by reason (no audio
        track, failed decodes). `cache`, a dict the caller keeps for one encoder, holds the features
        of each set of videos, so that other protocols and other label columns reuse them."""
        key = (tuple(row.path for row in rows), mode, encoder_input, self.config.clip_len, self.config.stride,
               self.config.num_clips, self.config.frame_size, self.config.audio_s)
        cache = {} if cache is None else cache
        if key not in cache:
            encoder.eval().to(self.device)
            loader = self.loader(rows, random=False, shuffle=False, audio=mode == "audio")
            features, paths, skipped = [], [], Counter(loader.dataset.excluded)
            for batch in loader:
                skipped.update(kinds(batch.pop("skipped")))
                if "label" in batch:
                    with mixed_precision(self.device):
                        x = (encode_audio(encoder, batch["audio"].to(self.device), encoder_input) if mode == "audio"
                             else encode(encoder, batch["frames"].to(self.device), mode, encoder_input=encoder_input))
                    features.append(x.float().cpu())
                    paths += batch["path"]
            if not features:
                raise none_usable(rows, skipped)
            cache[key] = torch.cat(features), paths, skipped
        features, paths, skipped = cache[key]
        index = {name: i for i, name in enumerate(self.classes)}
        label = {row.path: index[row.label] for row in rows}  # this transfer's labels (label_column) of the videos
        return features, torch.tensor([label[path] for path in paths]), Counter(skipped)

    def frozen_protocol(self, encoder: VideoEncoder | AudioEncoder, mode: str, protocol: str,
                        encoder_input: str | None = None, cache: dict | None = None) -> dict:
        """A protocol on frozen features (through the front end `encoder_input`) of the train split,
        scored on the test split: "linear" (`fit_linear_probe`, its choices chosen on the train split
        under "probe") or "knn" (`knn_classify`, plus `retrieval_recall` under "retrieval"); "skipped"
        counts the videos left out by reason. `cache`: as `features`' (one per encoder)."""
        train_x, train_y, train_skipped = self.features(encoder, self.train_rows, mode, encoder_input, cache)
        test_x, test_y, test_skipped = self.features(encoder, self.test_rows, mode, encoder_input, cache)
        return {**self.score_features(train_x, train_y, test_x, test_y, protocol), "num_train_videos": len(train_y),
                "num_test_videos": len(test_y), "skipped": dict(train_skipped + test_skipped)}

    def score_features(self, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                       test_y: torch.Tensor, protocol: str) -> dict:
        """A frozen-feature protocol fitted on train features [N, K, F] (labels [N]) and scored on test
        features [M, K, F] (labels [M]): the `scores` of "linear" or "knn" (see `frozen_protocol`)."""
        extra = {}
        if protocol == "linear":
            logits, extra["probe"] = fit_linear_probe(train_x, train_y, test_x, len(self.classes), self.config)
        elif protocol == "knn":
            logits = knn_classify(train_x, train_y, test_x, len(self.classes), self.config.knn_k,
                                  self.config.knn_temperature)
            extra["retrieval"] = retrieval_recall(train_x, train_y, test_x, test_y)
        else:
            raise ValueError(f"unknown frozen-feature protocol {protocol!r}: linear or knn")
        return {**self.scores(logits, test_y), **extra}

    def evaluate(self, encoder: VideoEncoder | AudioEncoder, mode: str, encoder_input: str | None = None) -> dict:
        """The config's protocol: `frozen_protocol` (linear or knn) or `finetune`, through the front
        end `encoder_input`."""
        if self.config.protocol == "finetune":
            return self.finetune(encoder, mode, encoder_input)
        return self.frozen_protocol(encoder, mode, self.config.protocol, encoder_input)

    def finetune(self, encoder: VideoEncoder, mode: str, encoder_input: str | None = None) -> dict:
        """Encoder + linear classifier trained end to end on one random clip per video per epoch (bf16
        autocast on CUDA), through the front end `encoder_input`; "train_clip_top1": accuracy on the
        last epoch's augmented training clips; "skipped" counts by reason the videos left out and those
        whose clip failed to decode in some epoch (each file once)."""
        c = self.config
        if mode == "audio":
            raise ValueError("fine-tuning takes video encoders; audio encoders have the frozen-feature protocols")
        torch.manual_seed(c.seed)
        encoder = copy.deepcopy(encoder).to(self.device).train()
        feature_dim = encoder.feature_dim * (c.clip_len if mode == "frames" else 1)
        classifier = nn.Linear(feature_dim, len(self.classes)).to(self.device)
        optimizer = finetune_optimizer(encoder, classifier, c)
        loader = self.loader(self.train_rows, random=True, shuffle=True, seed=c.seed)
        failed: dict[str, str] = {}  # video -> reason of its first failed decode, over all epochs
        schedule = cosine_schedule(c.finetune_lr, c.finetune_lr * 0.01, c.finetune_epochs * len(loader), len(loader))
        step = trained = 0
        for epoch in range(c.finetune_epochs):
            loader.dataset.set_epoch(epoch)
            # the epoch's training accuracy (does the recipe fit?), counted on the device: no sync per step
            hits, seen = torch.zeros((), dtype=torch.long, device=self.device), 0
            for batch in loader:
                set_lr(optimizer, float(schedule[step]))
                step += 1
                for failure in batch.pop("skipped"):
                    failed.setdefault(failure.path, failure.kind)
                if "frames" not in batch:
                    continue
                with mixed_precision(self.device):
                    features = encode(encoder, batch["frames"].to(self.device), mode, FINETUNE_AUGMENT,
                                      encoder_input=encoder_input)
                    logits = classifier(features[:, 0])
                    loss = F.cross_entropy(logits, labels := batch["label"].to(self.device))
                hits += (logits.argmax(-1) == labels).sum()
                seen += len(labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                trained += 1
            if (epoch + 1) % 10 == 0 or epoch + 1 == c.finetune_epochs:  # a long fine-tune is not silent
                print(f"finetune epoch {epoch + 1}/{c.finetune_epochs}: train clip top-1 "
                      f"{100.0 * hits.item() / max(seen, 1):.1f}%", flush=True)
        train_skipped = loader.dataset.excluded + Counter(failed.values())
        if not trained:
            raise none_usable(self.train_rows, train_skipped)
        test_x, test_y, test_skipped = self.features(encoder, self.test_rows, mode, encoder_input)
        with torch.no_grad():
            logits = classifier(test_x.to(self.device)).cpu()
        return {**self.scores(logits, test_y), "train_clip_top1": 100.0 * hits.item() / max(seen, 1),
                "num_train_videos": len(self.train_rows) - train_skipped.total(),
                "num_test_videos": len(test_y), "skipped": dict(train_skipped + test_skipped)}

    def scores(self, logits: torch.Tensor, labels: torch.Tensor) -> dict:
        """logits [N, K, classes], labels [N] -> clip/video top-1/top-5 (%) and the confusion matrix;
        video-level: the softmax of the logits averaged over the K clips."""
        topk = min(5, len(self.classes))
        clip_labels = labels.repeat_interleave(logits.shape[1])
        video_logits = logits.softmax(-1).mean(1)
        confusion = torch.zeros(len(self.classes), len(self.classes), dtype=torch.long)
        confusion.index_put_((labels, video_logits.argmax(-1)), torch.ones_like(labels), accumulate=True)
        return {
            "clip_top1": _topk(logits.flatten(0, 1), clip_labels, 1),
            "clip_top5": _topk(logits.flatten(0, 1), clip_labels, topk),
            "video_top1": _topk(video_logits, labels, 1),
            "video_top5": _topk(video_logits, labels, topk),
            "classes": self.classes,
            "confusion": confusion.tolist(),
            "config": asdict(self.config),
        }


def _topk(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Top-k accuracy (%), ties counted against the true class: a hit needs fewer than k other
    classes scored at least as high (a kNN vote leaves the classes it did not reach all at -inf)."""
    true_score = logits.gather(-1, labels[:, None])
    hits = (logits >= true_score).sum(-1) - 1 < k
    return 100.0 * hits.float().mean().item()


def save_confusion_png(result: dict, path: str | Path, title: str) -> Path:
    """The video-level confusion matrix as a PNG (rows: true class, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(result["confusion"])
    classes = result["classes"]
    fig, ax = plt.subplots(figsize=(1 + 0.55 * len(classes), 1 + 0.5 * len(classes)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for (i, j), n in np.ndenumerate(matrix):
        if n:
            ax.text(j, i, str(n), ha="center", va="center", color="white" if n > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: video top-1 {result['video_top1']:.1f}%")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
