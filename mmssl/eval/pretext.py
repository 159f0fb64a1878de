"""Held-out pretext metrics: did the task learn its pretext at all, on videos it never trained on?

The run's model (encoder + task head) runs the task's own loss in eval mode, without gradients, on a
held-out split, as the task stood at the checkpoint's step taken as the last: curricula at their end,
its augmentation on (seeded). Each declared metric (`PretextTask.pretext_metrics`) is averaged over
the samples, beside its chance level averaged the same way; the rest of the loss dict comes along.

Its standard error counts videos, not samples: the loader does not shuffle, so the k-th batch of every
pass holds the same videos, and those batches (averaged over the passes) are the independent units.
The metrics are batch means (a contrastive task's accuracy depends on the rest of the batch), so a
batch is also the smallest unit there is. The SE of the metric's distance from chance is the
cluster-robust one over those units: sqrt(k / (k - 1) * sum_i n_i^2 (d_i - d)^2) / sum_i n_i, with d_i
a unit's metric minus its chance level and n_i its samples; `z` is that distance in SEs, positive
when the metric is on the better side of chance.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
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
    units: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))  # batch
    # index -> metric or its chance level -> [sum over the passes of value x samples, samples]
    samples = 0
    for epoch in range(passes):
        dataset.set_epoch(epoch)
        for index, batch in enumerate(DataLoader(dataset, batch_size=batch_size, collate_fn=collate)):
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
                for name, value in ((key, float(out[key])), (f"chance:{key}", level or 0.0)):
                    units[index][name][0] += value * size
                    units[index][name][1] += size
    left_out = dataset.excluded + Counter(failed.values())
    if not samples:
        raise ManifestError(f"no video of split {split!r} of {manifest} could be evaluated for task "
                            f"{task.name!r} (left out: {dict(left_out) or 'none'})")
    return {
        "metrics": {key: _with_error({"value": sums[key] / samples, "higher_is_better": metric.higher_is_better,
                                      "chance": None if chance[key] is None else chance[key] / samples},
                                     [unit[key] for unit in units.values()],
                                     [unit[f"chance:{key}"] for unit in units.values()])
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


def _with_error(metric: dict, values: list[list[float]], levels: list[list[float]]) -> dict:
    """`metric` with `se` (of its distance from chance; of the metric itself where chance is unknown)
    and `units` (batches of distinct videos); `z` where chance is known. Units: [value x samples, samples]
    summed over the passes; fewer than 2 units give no SE."""
    weights = np.array([n for _, n in values])
    means = np.array([total / n for total, n in values])
    if metric["chance"] is not None:
        means = means - np.array([total / n for total, n in levels])
    k = len(weights)
    se = None
    if k >= 2:
        centre = np.average(means, weights=weights)
        se = math.sqrt(k / (k - 1) * float(np.sum(weights ** 2 * (means - centre) ** 2))) / float(weights.sum())
    metric = {**metric, "se": se, "units": k}
    if metric["chance"] is not None:
        gap = (metric["value"] - metric["chance"]) * (1 if metric["higher_is_better"] else -1)
        metric["z"] = None if not se else gap / se
    return metric
