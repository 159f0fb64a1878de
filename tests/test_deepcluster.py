"""DeepCluster (docs/methods.md#deepcluster) and the engine's labelling pass (mmssl/engine/labelling.py):
a replaced decode's own row and label, the balanced sampler, NMI (with the previous pass and with
label columns), the Sobel front end, labels kept across a resume (and drawn per cluster), and the pass
sharded over two gloo ranks giving a single process's labels."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from helpers import join_gloo, run_ranks  # tests/ is on sys.path under pytest

from mmssl.cli import visualize
from mmssl.config import ConfigError, load_config
from mmssl.data.dataset import EpochSampler, PretextDataset, collate
from mmssl.data.manifest import ManifestRow, read_manifest, write_manifest
from mmssl.engine import distributed as mdist
from mmssl.engine.labelling import Labeller, cluster_summary, label_dataset, label_rows, last_pass
from mmssl.engine.trainer import pretrain
from mmssl.eval.pretext import evaluate_pretext
from mmssl.tasks import build_task
from mmssl.tasks.model import TaskModel, build_run_encoder
from mmssl.tasks.pseudo_labels import UNLABELLED, balanced_weights, cluster_features, nmi
from mmssl.transforms.inputs import luma, sobel

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model.video_encoder=tiny3d", "data.frame_size=32", "data.batch_size=8", "data.num_workers=0",
        "train.log_every=1", "task.name=deepcluster", "task.deepcluster.clip_len=4", "task.deepcluster.clusters=4",
        "task.deepcluster.pca_dim=8"]


def corrupt_first(synthav: Path, tmp_path: Path) -> Path:
    """The tiny SynthAV pretrain split with a file that does not decode as its first row."""
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 5000)
    rows = read_manifest(synthav / "manifest.csv", "pretrain")
    return write_manifest([ManifestRow(str(corrupt), split="pretrain", num_frames=24, fps=8.0), *rows],
                          tmp_path / "manifest.csv")


def test_a_replaced_decode_carries_and_is_labelled_by_its_own_row(tiny_synthav: Path, tmp_path: Path) -> None:
    """Row 0 fails to decode: its sample (training or labelling) is another row's, carries that row's
    index and frames, and is trained on that row's label; row 0 itself gets no label."""
    config = load_config(None, [*FAST, f"data.manifest={corrupt_first(tiny_synthav, tmp_path)}"])
    task = build_task(config)
    dataset = PretextDataset(read_manifest(config.data.manifest, "pretrain"), task, 32, seed=0, replace_failed=True)
    windows = label_dataset(dataset)
    sample = windows[(0, 0)]
    row = int(sample["row"])
    assert row != 0 and len(sample["skipped"]) == 1
    assert torch.equal(sample["frames"], windows.task.make_sample(windows.decode(row, None), None)["frames"])
    batches = [collate([windows[(0, i)] for i in range(start, min(start + 8, len(windows)))])
               for start in range(0, len(windows), 8)]
    torch.manual_seed(0)
    model = TaskModel(task, build_run_encoder(config))
    labels = label_rows(model, batches, len(windows), torch.device("cpu"), seed=0)
    assert labels.shape == (1, len(windows)) and labels[0, 0] == UNLABELLED and (labels[0, 1:] >= 0).all()
    task.set_labels(torch.from_numpy(labels))
    trained = dataset[(0, 0)]
    assert trained["row"] != 0 and task.row_labels(trained["row"][None])[0, 0] == labels[0, trained["row"]]
    config.monitor.nmi_columns = ["label"]  # SynthAV's pretraining rows carry their class as `action`, not `label`
    with pytest.raises(ConfigError, match=r"nmi_columns=\['label'\]: no pretraining row has a value there"):
        Labeller(config, model, dataset, 0, 1, torch.device("cpu"))


def test_the_sampler_draws_every_nonempty_cluster_equally() -> None:
    labels = np.array([0] * 90 + [1] * 9 + [3] * 1 + [UNLABELLED] * 5)  # cluster 2 empty
    weights = balanced_weights(labels)
    assert weights[labels == UNLABELLED].sum() == 0
    for cluster in (0, 1, 3):
        assert weights[labels == cluster].sum() == pytest.approx(1 / 3)
    sampler = EpochSampler(len(labels), seed=0)
    sampler.weights = weights
    drawn = labels[[index for _, index in sampler]]
    assert UNLABELLED not in drawn and set(drawn) == {0, 1, 3}
    assert np.bincount(drawn)[3] > 15  # ~35 of 105; by size it would be 1


def test_nmi_is_one_for_a_renaming_and_near_zero_for_unrelated_labels() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 10, 5000)
    assert nmi(a, (a + 3) % 10) == pytest.approx(1.0)
    assert nmi(a, rng.integers(0, 10, 5000)) < 0.01
    assert 0.2 < nmi(a, a // 2) < 1.0  # merged pairs: part of the information


def test_cluster_features_finds_separated_groups() -> None:
    """Groups apart in a few directions of 32: whitened to 8 dimensions, L2-normalised, clustered."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(3), 100)
    x = rng.normal(size=(300, 32)) + rng.normal(size=(3, 32))[groups] * 5
    labels = cluster_features(x.astype(np.float32), 3, pca_dim=8, seed=0, iterations=20)
    assert nmi(labels, groups) == pytest.approx(1.0)


def test_a_pass_is_compared_with_label_columns_over_the_rows_with_a_value() -> None:
    labels = np.array([[0, 0, 1, 1, UNLABELLED, 2]])
    truths = {"shape": np.array(["a", "a", "b", "b", "b", ""]), "action": np.array(["x", "y", "x", "y", "x", ""])}
    summary = cluster_summary(labels, None, truths)
    assert summary["head0_nmi_shape"] == pytest.approx(1.0)  # rows 0-3: the clusters are the shapes
    assert summary["head0_nmi_action"] == pytest.approx(0.0, abs=1e-9)  # rows 0-3 again: independent of them
    assert "head0_nmi_previous" not in summary


def test_sobel_sees_edges_not_colour() -> None:
    x = torch.zeros(1, 3, 2, 8, 8)
    x[..., :, 4:] = 1.0  # a vertical edge between columns 3 and 4
    edges = sobel(x)
    assert edges.shape == x.shape
    assert edges[0, 0, :, :, 3:5].abs().min() > 0 and edges[0, 0, :, :, :2].abs().max() == 0  # gx at the edge only
    assert edges[0, 1].abs().max() < 1e-6  # no vertical change
    torch.testing.assert_close(edges[0, 2], edges[0, 0].abs())
    red, grey = torch.zeros(1, 3, 1, 4, 4), torch.zeros(1, 3, 1, 4, 4)
    red[:, 0, ..., 2:] = 1.0
    grey[:, :, ..., 2:] = luma(red)[:, :1, ..., 2:]  # the same luma, no colour
    torch.testing.assert_close(sobel(red), sobel(grey), rtol=1e-3, atol=1e-6)  # luma weights sum to 1 - 1e-4


def test_a_resumed_run_keeps_its_labels_and_reaches_the_same_weights(tiny_synthav: Path, tmp_path: Path) -> None:
    """3 steps an epoch, a labelling pass before each: resumed from step 4 (mid epoch 1, labels of the
    second pass from the checkpoint), the run ends as the straight one, labels included."""
    config = load_config(None, [*FAST, f"data.synthav_dir={tiny_synthav}", "train.max_steps=5",
                                "train.checkpoint_every=1", "train.keep_last=10", "monitor.nmi_columns=[shape]"])
    final = pretrain(config, tmp_path / "straight")
    records = [line for line in (tmp_path / "straight/metrics.jsonl").read_text().splitlines() if "nonempty" in line]
    assert len(records) == 2 and "head0_nmi_previous" in records[1]
    assert all(0 <= json.loads(r)["head0_nmi_shape"] <= 1 for r in records)
    assert last_pass(tmp_path / "straight/metrics.jsonl") == {
        k: v for k, v in json.loads(records[1]).items() if k.startswith("head")}
    resumed = pretrain(config, tmp_path / "resumed", str(tmp_path / "straight/checkpoint_000004.pt"))
    a, b = torch.load(final, weights_only=True), torch.load(resumed, weights_only=True)
    middle = torch.load(tmp_path / "straight/checkpoint_000004.pt", weights_only=True)
    assert torch.equal(a["pseudo_labels"]["labels"], b["pseudo_labels"]["labels"])
    assert torch.equal(middle["pseudo_labels"]["labels"], b["pseudo_labels"]["labels"])
    first = torch.load(tmp_path / "straight/checkpoint_000002.pt", weights_only=True)["pseudo_labels"]["labels"]
    assert not torch.equal(first, a["pseudo_labels"]["labels"])  # a new pass, a new labelling
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    with pytest.raises(ConfigError, match="labels of its pretraining split's videos.*: a held-out split has none"):
        evaluate_pretext(final)
    grid = visualize.main(["--task", "deepcluster", "--checkpoint", str(final), "--num", "3", "--out",
                           str(tmp_path / "clusters.png"), *FAST[5:], f"data.synthav_dir={tiny_synthav}"])
    assert plt.imread(grid).shape[0] > 3 * 100  # a row per cluster


def _label_worker(manifest: str, rank: int, port: int, out_dir: str) -> None:
    """The first labelling pass of a seeded model on this rank's share of the rows (or every row alone)."""
    world_size = 1 if rank < 0 else 2
    dist = join_gloo(rank, world_size, port) if world_size > 1 else None
    try:
        config = load_config(None, [*FAST, f"data.manifest={manifest}", "data.split=pretrain"])
        task = build_task(config)
        torch.manual_seed(0)
        model = TaskModel(task, build_run_encoder(config))
        dataset = PretextDataset(read_manifest(manifest, "pretrain"), task, 32, seed=0, replace_failed=True)
        labeller = Labeller(config, model, dataset, max(rank, 0), world_size, torch.device("cpu"))
        labels = label_rows(model, labeller.batches.epoch(0), len(dataset), torch.device("cpu"), seed=3)
        torch.save(torch.from_numpy(labels), Path(out_dir) / f"rank{max(rank, 0)}.pt")
    finally:
        if dist is not None:
            mdist.cleanup()


def test_two_gloo_ranks_label_as_one_process(tiny_synthav: Path, tmp_path: Path) -> None:
    """The labelling pass sharded over two ranks, a corrupt row included: every rank gets the labels
    of one process, the corrupt row unlabelled."""
    manifest = str(corrupt_first(tiny_synthav, tmp_path))
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    two = run_ranks(functools.partial(_label_worker, manifest), tmp_path / "two", 2, timeout_s=120)
    _label_worker(manifest, -1, 0, str(tmp_path / "one"))
    one = torch.load(tmp_path / "one/rank0.pt")
    assert torch.equal(two[0], one) and torch.equal(two[1], one) and one[0, 0] == UNLABELLED
    assert (one[0, 1:] != UNLABELLED).all() and len(one[0].unique()) > 1
