"""Held-out pretext metrics: did the task learn its pretext at all, on videos it never trained on?

The run's model (encoder + task head) runs the task's own loss in eval mode, without gradients, on a
held-out split, as the task stood at the checkpoint's step taken as the last: curricula at their end,
its augmentation on (seeded). Each declared metric (`PretextTask.pretext_metrics`) is averaged over
the samples, beside its chance level averaged the same way; the rest of the loss dict comes along.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mmssl.config import ConfigError
from mmssl.data.dataset import PretextDataset, collate
from mmssl.data.manifest import ManifestError, read_manifest
from mmssl.data.motion import use_stored_profiles
from mmssl.data.synthetic import ensure_synthav
from mmssl.tasks.model import load_task_model, saved_entries


@torch.no_grad()
def evaluate_pretext(checkpoint: str | Path, manifest: str | None = None, split: str = "test",
                     batch_size: int = 32, seed: int = 0, passes: int = 1,
                     device: torch.device | None = None) -> dict:
    """Every declared pretext metric of a checkpoint's task on `split` of `manifest` (default: the
    run's own manifest, or its SynthAV), each with its chance level, over `passes` passes (each draws
    other windows of every video). Videos left out (no audio track, too short, failed to decode in
    some pass) are counted by reason, each once."""
    if passes < 1 or batch_size < 1:
        raise ConfigError(f"passes and batch_size must be >= 1, got {passes} and {batch_size}")
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, config = load_task_model(checkpoint)
    model.to(device)
    task = model.task
    if task.pseudo_labelled:
        raise ConfigError(f"task {task.name!r} trains on labels of its pretraining split's videos, set by its "
                          "labelling passes: a held-out split has none to score. Its indicators are the passes' "
                          "records in the run's metrics.jsonl (cluster sizes, NMI between passes); its learning, "
                          "the probe (tools/bench_learning.py)")
    saved = saved_entries(checkpoint)
    step = int(saved.get("step", 0))
    task.set_step(step, max(step, 1))  # as at the run's last step; and a target network is up to date already
    manifest = manifest or config.data.manifest or str(ensure_synthav(config.data.synthav_dir))
    rows = read_manifest(manifest, split)
    use_stored_profiles(task.motion_weightings(), manifest, rows)
    dataset = PretextDataset(rows, task, config.data.frame_size, config.data.backend, seed=seed)
    torch.manual_seed(seed)  # the augmentation and the device-side draws (negatives, pairings)
    declared = task.pretext_metrics()
    sums: dict[str, float] = defaultdict(float)
    chance: dict[str, float | None] = {key: 0.0 for key in declared}
    failed: dict[str, str] = {}  # video -> the reason of its first failed decode
    samples = 0
    for epoch in range(passes):
        dataset.set_epoch(epoch)
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
            for failure in batch.pop("skipped"):
                failed.setdefault(failure.path, failure.kind)
            if not batch:
                continue
            size = len(next(iter(batch.values())))
            out = model({key: value.to(device) for key, value in batch.items()})
            samples += size
            for key, value in out.items():
                sums[key] += float(value) * size
            for key, (metric, owner) in declared.items():
                level = metric.level(owner, size, out)
                chance[key] = None if level is None or chance[key] is None else chance[key] + level * size
    left_out = dataset.excluded + Counter(failed.values())
    if not samples:
        raise ManifestError(f"no video of split {split!r} of {manifest} could be evaluated for task "
                            f"{task.name!r} (left out: {dict(left_out) or 'none'})")
    return {
        "metrics": {key: {"value": sums[key] / samples, "higher_is_better": metric.higher_is_better,
                          "chance": None if chance[key] is None else chance[key] / samples}
                    for key, (metric, _) in declared.items()},
        "loss_dict": {key: value / samples for key, value in sums.items()},
        "task": task.name,
        "label_family": task.label_family,
        "encoder_input": saved.get("encoder_input", task.encoder_input),
        "checkpoint": str(checkpoint),
        "step": step,
        "manifest": str(manifest),
        "split": split,
        "passes": passes,
        "samples": samples,
        "videos": len(dataset) - len(failed),
        "left_out": dict(left_out),
    }
