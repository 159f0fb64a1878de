"""Held-out evaluation of audio-visual pretraining: the pretext accuracy on unseen videos and
video-to-audio retrieval (R@1, R@5: is a clip's own audio ranked first among all test audios)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mmssl.data.dataset import PretextDataset, collate, kinds
from mmssl.data.manifest import ManifestError, read_manifest
from mmssl.data.synthetic import ensure_synthav
from mmssl.engine.trainer import load_task_model
from mmssl.transforms.video import to_model_input


@torch.no_grad()
def evaluate_av(checkpoint: str | Path, manifest: str | None = None, split: str = "test",
                batch_size: int = 32, seed: int = 0) -> dict:
    """Pretext metrics averaged over `split` (e.g. AVC accuracy), and retrieval of each clip's own
    audio among all the split's audios by the similarity the task learned."""
    model, config = load_task_model(checkpoint)
    task, head = model.task, model.head
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
        for name, value in model(batch).items():
            metrics.setdefault(name, []).append(float(value) * len(batch["frames"]))
        videos.append(model.encoder(to_model_input(batch["frames"])))
        audios.append(head.audio(batch["audio"]))
    if not videos:
        raise ManifestError(f"no video of split {split!r} of {manifest} could be evaluated for task "
                            f"{config.task.name!r} (left out: {dict(dataset.excluded + skipped)})")
    count = sum(len(v) for v in videos)
    similarity = _similarity(head, torch.cat(videos), torch.cat(audios))
    ranks = (similarity > similarity.diagonal()[:, None]).sum(1)  # audios scored above the own one
    return {
        **{f"heldout_{name}": sum(values) / count for name, values in metrics.items()},
        "retrieval_v2a_r1": 100 * (ranks < 1).float().mean().item(),
        "retrieval_v2a_r5": 100 * (ranks < 5).float().mean().item(),
        "retrieval_candidates": len(similarity),
        "task": config.task.name,
        "manifest": str(manifest),
        "split": split,
        "left_out": dict(dataset.excluded + skipped),  # no audio track, too short, failed to decode
    }


def _similarity(head: torch.nn.Module, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """[videos, audios] scores: cosine of the shared head's embeddings, or (a fusion classifier)
    the logit margin of "corresponds"."""
    if head.shared is not None:
        return head.shared.embed_video(video) @ head.shared.embed_audio(audio).T
    n = len(video)
    pairs = torch.cat([video.repeat_interleave(n, 0), audio.repeat(n, 1)], dim=1)
    logits = head.fusion(pairs)
    return (logits[:, 1] - logits[:, 0]).view(n, n)
