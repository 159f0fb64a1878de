"""Held-out evaluation of audio-visual pretraining: the pretext accuracy on unseen videos and
video-to-audio retrieval (R@1, R@5: is a clip's own audio ranked first among all test audios)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from mmssl.config import ConfigError
from mmssl.data.dataset import PretextDataset, collate, kinds
from mmssl.data.manifest import ManifestError, read_manifest
from mmssl.data.synthetic import ensure_synthav
from mmssl.models.heads import AudioVisualHead
from mmssl.tasks.base import PretextTask
from mmssl.tasks.model import TaskModel, load_task_model
from mmssl.tasks.multitask import MultiTask
from mmssl.transforms.video import to_model_input


@torch.no_grad()
def evaluate_av(checkpoint: str | Path, manifest: str | None = None, split: str = "test",
                batch_size: int = 32, seed: int = 0) -> dict:
    """Pretext metrics averaged over `split` (e.g. AVC accuracy), and retrieval of each clip's own
    audio among all the split's audios by the similarity the task learned. Of a multi-task run,
    its audio-visual task is evaluated (with that task's head); a run without one is refused
    (ConfigError)."""
    model, config = load_task_model(checkpoint)
    task, head = av_task(model)
    task.augment = None
    task.set_step(1, 1)  # past any curriculum: hard negatives included where the task has them
    manifest = manifest or config.data.manifest or ensure_synthav(config.data.synthav_dir)
    dataset = PretextDataset(read_manifest(manifest, split), task, config.data.frame_size, seed=seed)
    torch.manual_seed(seed)
    metrics: dict[str, list[float]] = {}
    videos, audios = [], []
    skipped: Counter = Counter()
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        skipped.update(kinds(batch.pop("skipped")))
        if not batch:
            continue
        for name, value in task.loss(batch, model.encoder, head).items():
            metrics.setdefault(name, []).append(float(value) * len(batch["frames"]))
        videos.append(model.encoder(task.front_end(to_model_input(batch["frames"]))))
        audios.append(head.audio(batch["audio"]))
    if not videos:
        raise ManifestError(f"no video of split {split!r} of {manifest} could be evaluated for task "
                            f"{config.task.name!r} (left out: {dict(dataset.excluded + skipped)})")
    count = sum(len(v) for v in videos)
    similarity = _similarity(head, torch.cat(videos), torch.cat(audios))
    recall = retrieval_recall(similarity, (1, 5))
    return {
        **{f"heldout_{name}": sum(values) / count for name, values in metrics.items()},
        "retrieval_v2a_r1": recall[1],
        "retrieval_v2a_r5": recall[5],
        "retrieval_candidates": len(similarity),
        "task": config.task.name,
        "av_task": task.name,
        "manifest": str(manifest),
        "split": split,
        "left_out": dict(dataset.excluded + skipped),  # no audio track, too short, failed to decode
    }


def av_task(model: TaskModel) -> tuple[PretextTask, nn.Module]:
    """The audio-visual task of a pretraining model and its head: a task whose head is an
    AudioVisualHead (an audio tower and a video-audio similarity), the model's own or a multi-task
    run's first (its head is head[name]). ConfigError for a model without one."""
    task, head = model.task, model.head
    if isinstance(task, MultiTask):
        name = next((name for name in task.tasks if isinstance(head[name], AudioVisualHead)), None)
        if name is not None:
            return task.tasks[name], head[name]
    elif isinstance(head, AudioVisualHead):
        return task, head
    tasks = f" ({', '.join(task.tasks)})" if isinstance(task, MultiTask) else ""
    raise ConfigError(f"task {task.name!r}{tasks} has no audio-visual correspondence to evaluate: eval_av supports "
                      "the tasks with an audio tower and a video-audio similarity (avc, av_contrastive), alone or "
                      "among a multitask run's tasks")


def retrieval_recall(similarity: torch.Tensor, ks: tuple[int, ...]) -> dict[int, float]:
    """R@k in percent for each k of `ks`: the share of rows whose own item (the diagonal entry) is
    among the k best-scored items of its row. A tie with another item counts against the own one
    (as does a NaN score), so constant scores retrieve nothing."""
    own = similarity.diagonal()[:, None]
    ranks = (similarity.shape[1] - 1) - (similarity < own).sum(1)  # other items not scored below the own one
    return {k: 100 * (ranks < k).float().mean().item() for k in ks}


def _similarity(head: nn.Module, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """[videos, audios] scores: cosine of the shared head's embeddings, or (a fusion classifier)
    the logit margin of "corresponds"."""
    if head.shared is not None:
        return head.shared.embed_video(video) @ head.shared.embed_audio(audio).T
    n = len(video)
    pairs = torch.cat([video.repeat_interleave(n, 0), audio.repeat(n, 1)], dim=1)
    logits = head.fusion(pairs)
    return (logits[:, 1] - logits[:, 0]).view(n, n)
