"""The labelling pass of the tasks trained on pseudo-labels (mmssl/tasks/pseudo_labels.py).

Before each epoch its task says is due, the pass takes the features of every row of the pretraining
split: its fixed label window, in eval mode, without augmentation and without gradients. Each rank
takes its share of the rows (padded to whole batches, like training), the ranks' features are
gathered, and rank 0 assigns the labels (k-means, Sinkhorn-Knopp: the task's `assign`, with a seed
of its own per pass) and sends them to every rank. A row that fails to decode is replaced by another
row, as in training; each sample carries the row it decoded, so its features count for that row, and
a row never decoded keeps no label (-1). The task's top layers are then re-initialised (the same on
every rank) with their optimizer state cleared, and the sampler takes the task's weights. The labels
go into each checkpoint (by file, so a rebuilt manifest keeps them) and a resumed run restores them.
Each pass logs, per head: the non-empty clusters, the largest cluster's share, the NMI with the
previous pass's labels (collapse shows as one cluster taking most rows, or as an NMI near 1 that no
longer moves), the NMI with the label columns named in `monitor.nmi_columns` (what the clusters group
by, where the pretraining rows carry labels) and the cluster sizes.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mmssl import distributed
from mmssl.config import Config, ConfigError
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.dataset import EpochSampler, PretextDataset
from mmssl.data.loader import RecoveringLoader
from mmssl.data.manifest import ManifestRow
from mmssl.tasks.model import TaskModel
from mmssl.tasks.pseudo_labels import UNLABELLED, PseudoLabelTask, nmi

if TYPE_CHECKING:
    from mmssl.engine.trainer import RunLog


class LabelWindows:
    """A pseudo-label task's CPU half as the labelling pass decodes it: each row's fixed label window."""

    pseudo_labelled = True

    def __init__(self, task: PseudoLabelTask) -> None:
        self.task = task
        self.needs_audio = task.needs_audio

    def window(self, row: ManifestRow, rng: np.random.Generator) -> Window:
        return self.task.label_window(row)

    def make_sample(self, clip: DecodedClip, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return self.task.make_sample(clip, rng)

    def min_frames(self, fps: float) -> int:
        return self.task.min_frames(fps)


def label_dataset(dataset: PretextDataset) -> PretextDataset:
    """The label windows of the rows of a pretraining `dataset`, row i of one being row i of the other."""
    labelled = PretextDataset(dataset.rows, LabelWindows(dataset.task), dataset.frame_size, dataset.backend,
                              seed=dataset.seed, sample_rate=dataset.sample_rate, replace_failed=True)
    labelled.crashed = dataset.crashed  # files that kill a decoder are not tried again
    return labelled


def pass_seed(seed: int, epoch: int) -> int:
    """The seed of the labelling pass before `epoch`: a fresh one each pass (k-means, top layers)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 2)  # faiss: a signed int, with room for offsets


@torch.no_grad()
def label_rows(model: TaskModel, batches: Iterable[dict], num_rows: int, device: torch.device,
               seed: int) -> np.ndarray:
    """Labels [heads, num_rows] of the rows from this rank's label `batches` and the other ranks'
    (every rank calls this), by the task's `assign` on rank 0; rows with no features: -1."""
    task = model.task
    modes = {module: module.training for module in model.modules()}
    model.eval()
    rows, parts = [], defaultdict(list)
    for batch in batches:
        batch.pop("skipped", None)
        rows.append(batch.pop("row").numpy())
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        for name, value in task.label_features(batch, model.encoder, model.head).items():
            parts[name].append(value.float().cpu().numpy())
    for module, training in modes.items():
        module.training = training
    gathered = distributed.gather_to_main((np.concatenate(rows), {k: np.concatenate(v) for k, v in parts.items()}))
    labels = None
    if distributed.is_main_process():
        every_row = np.concatenate([r for r, _ in gathered])
        present, first = np.unique(every_row, return_index=True)  # padding and replacements repeat rows
        features = {k: np.concatenate([f[k] for _, f in gathered])[first] for k in gathered[0][1]}
        assigned = task.assign(features, seed)
        labels = np.full((len(assigned), num_rows), UNLABELLED, dtype=np.int64)
        labels[:, present] = assigned
    return distributed.broadcast_from_main(labels)


def cluster_summary(labels: np.ndarray, previous: np.ndarray | None,
                    truths: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Per head of `labels` [heads, rows]: non-empty clusters, the largest one's share of the labelled
    rows, the NMI with the `previous` labels over the rows labelled in both, and the NMI with each of
    `truths` (column -> [rows] values, "" for none) over the labelled rows with a value."""
    summary = {}
    for head, own in enumerate(labels):
        labelled = own != UNLABELLED
        sizes = np.bincount(own[labelled])
        summary[f"head{head}_nonempty"] = int((sizes > 0).sum())
        summary[f"head{head}_largest_share"] = float(sizes.max() / labelled.sum())
        if previous is not None:
            both = labelled & (previous[head] != UNLABELLED)
            summary[f"head{head}_nmi_previous"] = nmi(own[both], previous[head][both])
        for column, values in (truths or {}).items():
            both = labelled & (values != "")
            summary[f"head{head}_nmi_{column}"] = nmi(own[both], values[both])
    return summary


def last_pass(metrics: Path) -> dict[str, float]:
    """The collapse indicators of a run's last labelling pass (`cluster_summary`), from its metrics.jsonl."""
    passes = [record for line in metrics.read_text().splitlines() if "labelling_s" in (record := json.loads(line))]
    return {k: v for k, v in passes[-1].items() if k.startswith("head")}


class Labeller:
    """A run's labelling passes: the label windows' loader on this rank's share, running a pass,
    and the labels' checkpoint entry."""

    def __init__(self, config: Config, model: TaskModel, dataset: PretextDataset, rank: int, world_size: int,
                 device: torch.device) -> None:
        self.model, self.task, self.device, self.seed = model, model.task, device, config.train.seed
        self.paths = [row.path for row in dataset.rows]
        self.truths = {column: np.array([row.value(column) for row in dataset.rows])
                       for column in config.monitor.nmi_columns}
        if empty := [column for column, values in self.truths.items() if not (values != "").any()]:
            raise ConfigError(f"monitor.nmi_columns={empty}: no pretraining row has a value there "
                              f"(the manifest's columns: label, {', '.join(sorted(dataset.rows[0].extra))})")
        labelled = label_dataset(dataset)
        sampler = EpochSampler(len(labelled), config.train.seed, rank, world_size, shuffle=False,
                               batch_size=config.data.batch_size)
        self.batches = RecoveringLoader(labelled, sampler, batch_size=config.data.batch_size,
                                        num_workers=config.data.num_workers, seed=config.train.seed, device=device,
                                        persistent=False)  # workers only during a pass, not idle between

    def due(self, epoch: int, step_in_epoch: int) -> bool:
        """At the start of an epoch the task says is due, or whenever the run holds no labels yet."""
        return self.task.labels is None or (step_in_epoch == 0 and self.task.labels_due(epoch))

    def run(self, epoch: int, step: int, optimizer: torch.optim.Optimizer, sampler: EpochSampler,
            run_log: RunLog) -> None:
        """Label every row, set the labels on the task and the weights on the training `sampler`,
        re-initialise the task's top layers (clearing their `optimizer` state), and log the pass."""
        start = time.perf_counter()
        seed = pass_seed(self.seed, epoch)
        previous = None if self.task.labels is None else self.task.labels.cpu().numpy()
        labels = label_rows(self.model, self.batches.epoch(epoch), len(self.paths), self.device, seed)
        self._set(labels, sampler)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)  # the same fresh layers on every rank
            for layer in self.task.top_layers(self.model.head):
                layer.reset_parameters()
                for parameter in layer.parameters():
                    optimizer.state.pop(parameter, None)
        summary = cluster_summary(labels, previous, self.truths)
        run_log.report({"step": step, "epoch": epoch, **summary, "labelling_s": time.perf_counter() - start})
        run_log.write({"step": step, "epoch": epoch, "cluster_sizes": [np.bincount(own[own != UNLABELLED]).tolist()
                                                                       for own in labels]})
        if run_log.is_main:
            run_log.bar.write(f"epoch {epoch}: labels: " + ", ".join(f"{k} {v:.3g}" for k, v in summary.items()))

    def _set(self, labels: np.ndarray, sampler: EpochSampler) -> None:
        self.task.set_labels(torch.from_numpy(labels).to(self.device))
        sampler.weights = self.task.sample_weights()

    def state(self) -> dict[str, object] | None:
        """The checkpoint entry: each file's labels (None before the first pass)."""
        if self.task.labels is None:
            return None
        return {"paths": self.paths, "labels": self.task.labels.cpu()}

    def restore(self, state: dict[str, object] | None, sampler: EpochSampler) -> None:
        """Go on with a checkpoint's labels (`state()`), by file; rows it did not label get none."""
        if state is None:
            return
        saved = dict(zip(state["paths"], state["labels"].T.tolist()))
        heads = len(state["labels"])
        labels = np.array([saved.get(path, [UNLABELLED] * heads) for path in self.paths], dtype=np.int64).T
        self._set(labels.reshape(heads, len(self.paths)), sampler)
