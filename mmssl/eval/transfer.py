"""Transfer to action recognition: a linear probe on frozen features, or a full fine-tune.

Scores: clip-level top-1/top-5 (each of a video's `num_clips` uniform clips on its own) and
video-level (softmax averaged over the clips), plus the video-level confusion matrix.
Feature modes: "clip" feeds [C, T, H, W] clips to the encoder; "frames" feeds each frame (T=1)
and concatenates the T feature vectors in time order (for encoders pretrained on frame tasks).
"""
from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader

from mmssl.config import TransferConfig, from_dict
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.dataset import PretextDataset, collate
from mmssl.data.manifest import ManifestRow, class_names, read_manifest
from mmssl.data.sampling import random_clip, uniform_clips
from mmssl.data.synthetic import ensure_synthav
from mmssl.engine.trainer import cosine_schedule
from mmssl.models import VideoEncoder, build_video_encoder
from mmssl.tasks import task_class
from mmssl.transforms.video import VideoAugment, to_model_input

FINETUNE_AUGMENT = VideoAugment(crop_scale=(0.6, 1.0), flip=False)  # a flip turns left into right


class LabeledClips:
    """CPU half for labeled videos: `num_clips` uniform clips (or one random clip) and the label."""

    needs_audio = False

    def __init__(self, classes: list[str], clip_len: int, stride: int, num_clips: int, random: bool) -> None:
        self.class_index = {name: i for i, name in enumerate(classes)}
        self.clip_len, self.stride, self.num_clips, self.random = clip_len, stride, num_clips, random

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        clips = (random_clip(row.num_frames, self.clip_len, self.stride, rng)[None] if self.random
                 else uniform_clips(row.num_frames, self.clip_len, self.stride, self.num_clips))
        return Window(frames=clips.reshape(-1), targets={"label": self.class_index[row.label]})

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        frames = rearrange(clip.video, "(k t) h w c -> k t h w c", t=self.clip_len)
        return {"frames": frames, "label": torch.tensor(clip.window.targets["label"])}


def load_encoder(checkpoint: str | Path) -> tuple[VideoEncoder, str, str]:
    """The video encoder saved in a pretraining checkpoint, its registry name and its task's
    feature mode."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = from_dict(state["config"])
    encoder = build_video_encoder(config.model.video_encoder)
    prefix = "encoder."
    encoder.load_state_dict({k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)})
    return encoder, config.model.video_encoder, task_class(config.task.name).feature_mode


def random_encoder(name: str, seed: int) -> VideoEncoder:
    torch.manual_seed(seed)
    return build_video_encoder(name)


def encode(encoder: VideoEncoder, frames: torch.Tensor, mode: str,
           augment: VideoAugment | None = None, frame_size: int | None = None) -> torch.Tensor:
    """uint8 [B, K, T, H, W, C] -> features [B, K, F] (F = D for clips, T * D for frames)."""
    b, k, t = frames.shape[:3]
    x = to_model_input(rearrange(frames, "b k t h w c -> (b k) t h w c"), augment, frame_size)
    if mode == "frames":
        features = encoder(rearrange(x, "n c t h w -> (n t) c 1 h w"))
        return rearrange(features, "(b k t) d -> b k (t d)", b=b, k=k, t=t)
    if mode == "clip":
        return rearrange(encoder(x), "(b k) d -> b k d", b=b)
    raise ValueError(f"unknown feature mode {mode!r}: clip or frames")


class Transfer:
    """Labeled train/test clips of a manifest and the two protocols on them."""

    def __init__(self, config: TransferConfig, device: torch.device | None = None) -> None:
        self.config = config
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        manifest = config.manifest or str(ensure_synthav(config.synthav_dir))
        self.train_rows = [r for r in read_manifest(manifest, config.train_split) if r.label]
        self.test_rows = [r for r in read_manifest(manifest, config.test_split) if r.label]
        if not self.train_rows or not self.test_rows:
            raise ValueError(f"{manifest}: need labeled rows in splits {config.train_split!r} "
                             f"and {config.test_split!r}")
        self.classes = class_names(self.train_rows + self.test_rows)

    def loader(self, rows: list[ManifestRow], random: bool, shuffle: bool, seed: int = 0) -> DataLoader:
        c = self.config
        clips = LabeledClips(self.classes, c.clip_len, c.stride, c.num_clips, random)
        dataset = PretextDataset(rows, clips, c.frame_size, seed=seed)
        return DataLoader(dataset, batch_size=c.batch_size, shuffle=shuffle, collate_fn=collate,
                          num_workers=c.num_workers, generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def features(self, encoder: VideoEncoder, rows: list[ManifestRow], mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen features [N, K, F] of every video's uniform clips, and the labels [N]."""
        encoder.eval().to(self.device)
        features, labels = [], []
        for batch in self.loader(rows, random=False, shuffle=False):
            if "frames" in batch:
                features.append(encode(encoder, batch["frames"].to(self.device), mode).float().cpu())
                labels.append(batch["label"])
        return torch.cat(features), torch.cat(labels)

    def linear_probe(self, encoder: VideoEncoder, mode: str) -> dict:
        """Multinomial logistic regression on standardised frozen clip features (full batch)."""
        c = self.config
        train_x, train_y = self.features(encoder, self.train_rows, mode)
        test_x, test_y = self.features(encoder, self.test_rows, mode)
        k = train_x.shape[1]
        train_x, train_y = train_x.flatten(0, 1), train_y.repeat_interleave(k)
        mean, std = train_x.mean(0), train_x.std(0) + 1e-6
        torch.manual_seed(c.seed)
        classifier = nn.Linear(train_x.shape[1], len(self.classes))
        optimizer = torch.optim.AdamW(classifier.parameters(), lr=c.linear_lr, weight_decay=c.linear_weight_decay)
        for _ in range(c.linear_epochs):
            optimizer.zero_grad()
            F.cross_entropy(classifier((train_x - mean) / std), train_y).backward()
            optimizer.step()
        with torch.no_grad():
            logits = classifier((test_x - mean) / std)
        return self.scores(logits, test_y)

    def finetune(self, encoder: VideoEncoder, mode: str) -> dict:
        """Encoder + linear classifier trained end to end on one random clip per video per epoch."""
        c = self.config
        torch.manual_seed(c.seed)
        encoder = copy.deepcopy(encoder).to(self.device).train()
        feature_dim = encoder.feature_dim * (c.clip_len if mode == "frames" else 1)
        classifier = nn.Linear(feature_dim, len(self.classes)).to(self.device)
        params = list(encoder.parameters()) + list(classifier.parameters())
        optimizer = torch.optim.AdamW(params, lr=c.finetune_lr, weight_decay=c.finetune_weight_decay)
        loader = self.loader(self.train_rows, random=True, shuffle=True, seed=c.seed)
        schedule = cosine_schedule(c.finetune_lr, c.finetune_lr * 0.01, c.finetune_epochs * len(loader), len(loader))
        step = 0
        for epoch in range(c.finetune_epochs):
            loader.dataset.set_epoch(epoch)
            for batch in loader:
                for group in optimizer.param_groups:
                    group["lr"] = float(schedule[step])
                step += 1
                if "frames" not in batch:
                    continue
                features = encode(encoder, batch["frames"].to(self.device), mode, FINETUNE_AUGMENT)
                loss = F.cross_entropy(classifier(features[:, 0]), batch["label"].to(self.device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        test_x, test_y = self.features(encoder, self.test_rows, mode)
        with torch.no_grad():
            logits = classifier(test_x.to(self.device)).cpu()
        return self.scores(logits, test_y)

    def scores(self, logits: torch.Tensor, labels: torch.Tensor) -> dict:
        """logits [N, K, classes], labels [N] -> clip/video top-1/top-5 (%) and the confusion matrix."""
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
            "num_train_videos": len(self.train_rows),
            "num_test_videos": len(self.test_rows),
            "classes": self.classes,
            "confusion": confusion.tolist(),
            "config": asdict(self.config),
        }


def _topk(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    hits = (logits.topk(k, dim=-1).indices == labels[:, None]).any(-1)
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
