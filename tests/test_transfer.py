"""Transfer protocols: the linear probe and its cross-validation, the weighted kNN vote, nearest-neighbour
video retrieval, the recipes in configs/transfer."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mmssl.config import ConfigError, TransferConfig, load_config
from mmssl.data.clip import Skipped
from mmssl.data.manifest import ManifestError, read_manifest, write_manifest
from mmssl.engine.optim import set_lr
from mmssl.eval.probe import NORMALISATIONS, cross_validate, fit_linear_probe, video_folds
from mmssl.eval.transfer import (
    PROTOCOLS,
    Transfer,
    _topk,
    finetune_optimizer,
    knn_classify,
    labeled_rows,
    layer_decay_scale,
    random_encoder,
    retrieval_recall,
)
from mmssl.io import write_media
from mmssl.models.vit import VideoViT

ROOT = Path(__file__).resolve().parents[1]


def unit(*angles: float) -> torch.Tensor:
    """2D unit vectors at `angles` (radians): [len(angles), 2]."""
    a = torch.tensor(angles)
    return torch.stack([a.cos(), a.sin()], dim=-1)


def test_knn_votes_are_the_k_nearest_weighted_by_exp_similarity_over_t() -> None:
    # one test sample at angle 0; training samples at 0.1 (class 0), 0.3, 0.5 (class 1), 3.0 (class 2)
    train = unit(0.1, 0.3, 0.5, 3.0)[:, None]  # [N, K=1, 2]
    labels = torch.tensor([0, 1, 1, 2])
    test = unit(0.0)[:, None]
    t = 0.5
    w = [math.exp(math.cos(a) / t) for a in (0.1, 0.3, 0.5)]
    for k, expected in ((1, [1.0, 0.0, 0.0]), (3, [w[0] / sum(w), (w[1] + w[2]) / sum(w), 0.0])):
        probs = knn_classify(train, labels, test, 3, k=k, temperature=t).exp()
        assert probs.shape == (1, 1, 3)
        torch.testing.assert_close(probs[0, 0], torch.tensor(expected))
    # k = 3 at a low temperature: the single nearest sample outweighs the two of class 1
    assert knn_classify(train, labels, test, 3, k=3, temperature=0.01).argmax(-1).item() == 0
    # k = 3 at a high temperature: two votes beat one
    assert knn_classify(train, labels, test, 3, k=3, temperature=10.0).argmax(-1).item() == 1
    # k above the number of training samples: all of them vote, nothing fails
    assert knn_classify(train, labels, test, 3, k=50).exp()[0, 0, 2].item() > 0


def test_knn_uses_every_clip_and_only_the_direction_of_features() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 32, generator=g)
    labels = torch.arange(5).repeat(4)  # 20 videos, 4 per class
    train = centres[labels][:, None] + 0.3 * torch.randn(20, 3, 32, generator=g)  # 3 clips each
    test_labels = torch.arange(5).repeat(2)
    test = centres[test_labels][:, None] + 0.3 * torch.randn(10, 3, 32, generator=g)
    log_probs = knn_classify(train, labels, test, 5, k=6)
    assert log_probs.shape == (10, 3, 5)
    assert (log_probs.argmax(-1) == test_labels[:, None]).all()
    scaled = knn_classify(train * torch.rand(20, 3, 1, generator=g).add(0.5), labels,
                          test * 7.0, 5, k=6)
    torch.testing.assert_close(scaled, log_probs)
    # a training video's clips are separate voters: with 3 clips each, k = 3 can be one video's clips
    lone = knn_classify(train[:1], labels[:1], train[:1, :1], 5, k=3).exp()
    assert lone[0, 0, labels[0]].item() == pytest.approx(1.0)


def test_top_k_counts_ties_against_the_true_class() -> None:
    """A kNN vote reaching 2 of 10 classes: the 8 unvoted ones tie at -inf, and none is a top-5 hit."""
    scores = torch.tensor([[0.0, -1.0] + [-math.inf] * 8] * 3)
    labels = torch.tensor([0, 1, 6])
    assert _topk(scores, labels, 1) == pytest.approx(100 / 3)
    assert _topk(scores, labels, 5) == pytest.approx(200 / 3)
    assert _topk(torch.zeros(4, 10), torch.arange(4), 5) == 0.0  # all tied: no class is among the top 5


def test_retrieval_recall_ranks_videos_by_their_mean_clip_feature() -> None:
    # train videos (2 clips each): class 0 at angle 0, class 1 at 1.0, class 2 at 2.0; the class 1
    # video's clips point at -0.4 and 2.4, so only their mean (angle 1.0) is near a query at 1.0
    train = torch.stack([unit(0.0, 0.0), unit(-0.4, 2.4), unit(2.0, 2.0)])
    train_labels = torch.tensor([0, 1, 2])
    queries = torch.stack([unit(1.0, 1.0), unit(2.1, 2.1), unit(0.05, 0.05)])
    query_labels = torch.tensor([1, 0, 0])  # the second query's class is its 3rd nearest
    recall = retrieval_recall(train, train_labels, queries, query_labels, ks=(1, 2, 3, 5))
    assert recall == pytest.approx({"R@1": 200 / 3, "R@2": 200 / 3, "R@3": 100.0})  # k = 5 > 3 videos: not reported


def separable(num_videos: int, clips: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, K, dim] of 10 classes around their own centres (ReLU-like: non-negative), labels [N]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_videos) % 10
    centres = 2 * torch.rand(10, dim, generator=torch.Generator().manual_seed(99))
    return (centres[labels][:, None] + 0.3 * torch.rand(num_videos, clips, dim, generator=g)), labels


@pytest.mark.parametrize("normalise", NORMALISATIONS)
def test_a_feature_dead_on_every_training_clip_does_not_decide_test_predictions(normalise: str) -> None:
    """A feature zero on every training clip and large on test clips (a ReLU unit that fires only
    there) is dropped: the test logits are those of the test clips without it."""
    train_x, train_y = separable(40, 2, 16, seed=0)
    test_x, test_y = separable(30, 2, 16, seed=1)
    dead = torch.zeros(40, 2, 1)
    awake = torch.rand(30, 2, 1, generator=torch.Generator().manual_seed(2)) * 5  # std + 1e-6 made this ~5e6
    config = TransferConfig(linear_normalise=normalise, linear_penalty=[0.01])
    logits, probe = fit_linear_probe(torch.cat([train_x, dead], -1), train_y, torch.cat([test_x, awake], -1), 10,
                                     config)
    without, _ = fit_linear_probe(train_x, train_y, test_x, 10, config)
    assert probe["dead_features"] == 1
    torch.testing.assert_close(logits, without)
    assert (logits.softmax(-1).mean(1).argmax(-1) == test_y).float().mean() > 0.9


def test_validation_folds_are_stratified_over_whole_training_videos() -> None:
    labels = torch.cat([torch.arange(10).repeat(10), torch.full((3,), 10)])  # 10 classes of 10, one of 3
    folds = video_folds(labels, 5, seed=0)
    assert folds.bincount().tolist() == [21, 21, 21, 20, 20]  # every video in one fold
    per_class = torch.zeros(11, 5, dtype=torch.long).index_put_((labels, folds), torch.ones_like(labels),
                                                                accumulate=True)
    assert (per_class[:10] == 2).all() and per_class[10].max() == 1  # the 3 videos of class 10 in 3 folds
    assert not torch.equal(folds, video_folds(labels, 5, seed=1))  # the seed draws the videos of a fold


def test_validation_holds_out_whole_videos_and_never_sees_the_test_split() -> None:
    """Every clip of a video is the same random vector, and labels are random: a split by clip would
    let the probe recognise held-out clips (near 100%), a split by video leaves it at chance."""
    g = torch.Generator().manual_seed(0)
    train_x = torch.randn(100, 1, 256, generator=g).expand(100, 3, 256)
    train_y = torch.randint(0, 10, (100,), generator=g)
    config = TransferConfig(linear_penalty=[1e-3, 1.0])
    assert max(cross_validate(train_x, train_y, 10, config).values()) < 30
    by_clip = cross_validate(train_x.reshape(300, 1, 256), train_y.repeat_interleave(3), 10, config)
    assert max(by_clip.values()) > 90  # the control: each clip as its own video
    # the choice is the same whatever the test split holds
    choices = [fit_linear_probe(train_x, train_y, test_x, 10, config)[1]
               for test_x in (torch.randn(7, 3, 256, generator=g), 1e4 * torch.rand(50, 3, 256, generator=g))]
    assert choices[0] == choices[1]


def test_cross_validation_picks_the_penalty_that_generalises() -> None:
    """Each class is a small clean offset in 10 features and a large noisy one in 10 others: a strong
    penalty keeps the weights near the class means, where the noisy features dominate; a weak one finds
    the clean features. The weak one is chosen wherever it stands in the grid; of tied penalties, the stronger."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 10
    onehot = torch.eye(10)[labels][:, None]
    x = torch.cat([0.5 * onehot + 0.1 * torch.randn(60, 2, 10, generator=g),
                   2 * onehot + 3 * torch.randn(60, 2, 10, generator=g)], -1)
    for grid in ([1e-3, 10.0], [10.0, 1e-3]):
        _, probe = fit_linear_probe(x, labels, x[:3], 10, TransferConfig(linear_penalty=grid))
        assert probe["penalty"] == 1e-3
        assert probe["validation_top1"]["0.001"] > probe["validation_top1"]["10"] + 20
    train_x, train_y = separable(30, 2, 8, seed=0)
    _, probe = fit_linear_probe(train_x, train_y, train_x[:3], 10, TransferConfig(linear_penalty=[1e-3, 1e-2]))
    assert probe["validation_top1"] == {"0.001": 100.0, "0.01": 100.0} and probe["penalty"] == 1e-2
    for grid in ("[0.1, -1]", "[]"):
        with pytest.raises(ConfigError, match=r"linear_penalty=\[.*\] is out of range: it must be >= 0"):
            load_config(None, [f"linear_penalty={grid}"], root=TransferConfig)


def test_knn_protocol_on_real_clips_and_from_the_command_line(tiny_synthav: Path, tmp_path: Path) -> None:
    config = TransferConfig(synthav_dir=str(tiny_synthav), frame_size=32, clip_len=4, num_clips=2, num_workers=0)
    transfer = Transfer(config, torch.device("cpu"))
    result = transfer.frozen_protocol(random_encoder("tiny3d", 0), "clip", "knn")
    assert 0 <= result["video_top1"] <= result["video_top5"] <= 100
    assert np.asarray(result["confusion"]).sum() == len(transfer.test_rows) == 20
    assert list(result["retrieval"]) == ["R@1", "R@5", "R@10", "R@20"]  # 20 train videos: no R@50
    recalls = list(result["retrieval"].values())
    assert recalls == sorted(recalls) and recalls[-1] == 100.0  # every class is among all 20 videos
    out = subprocess.run([sys.executable, str(ROOT / "tools/transfer.py"), "--random-init", "tiny_audio",
                          "--config", str(ROOT / "configs/transfer/knn.yaml"), "--out", str(tmp_path),
                          f"synthav_dir={tiny_synthav}", "num_clips=2", "num_workers=0"],
                         capture_output=True, text=True, check=True)
    assert "retrieval R@1" in out.stdout
    report = json.loads((tmp_path / "transfer_knn.json").read_text())
    assert report["feature_mode"] == "audio"
    (audio_result,) = report["results"].values()
    assert audio_result["skipped"]["no_audio"] > 0 and "R@1" in audio_result["retrieval"]


def test_a_feature_cache_serves_other_protocols_and_label_columns_with_their_own_labels(tiny_synthav: Path) -> None:
    config = TransferConfig(synthav_dir=str(tiny_synthav), frame_size=32, clip_len=4, num_clips=2, num_workers=0)
    by_label, by_shape = (Transfer(replace(config, label_column=column), torch.device("cpu"))
                          for column in ("label", "shape"))
    encoder, calls = random_encoder("tiny3d", 0), []
    encoder.register_forward_hook(lambda *_: calls.append(1))
    cache: dict = {}
    knn = by_label.frozen_protocol(encoder, "clip", "knn", cache=cache)
    passes = len(calls)
    shape_x, shape_y, _ = by_shape.features(encoder, by_shape.test_rows, "clip", cache=cache)
    assert len(calls) == passes  # served from the cache: the encoder did not run again
    fresh_x, fresh_y, _ = by_shape.features(encoder, by_shape.test_rows, "clip")
    assert torch.equal(shape_x, fresh_x) and torch.equal(shape_y, fresh_y)  # the shape's labels, not the action's
    assert not torch.equal(shape_y, by_label.features(encoder, by_label.test_rows, "clip", cache=cache)[1])
    assert by_label.frozen_protocol(encoder, "clip", "knn", cache=cache) == knn


def test_linear_protocol_on_real_clips_reports_the_penalty_chosen_on_the_train_split(tiny_synthav: Path) -> None:
    config = TransferConfig(synthav_dir=str(tiny_synthav), frame_size=32, clip_len=4, num_clips=2, num_workers=0,
                            linear_epochs=20)
    result = Transfer(config, torch.device("cpu")).frozen_protocol(random_encoder("tiny3d", 0), "clip", "linear")
    assert list(result["probe"]["validation_top1"]) == ["0.001", "0.01", "0.1", "1"]
    assert result["probe"]["penalty"] in config.linear_penalty and 0 <= result["video_top1"] <= 100


@pytest.mark.parametrize("path", sorted((ROOT / "configs/transfer").glob("*.yaml")), ids=lambda path: path.stem)
def test_transfer_recipes_load_and_name_a_protocol(path: Path) -> None:
    config = load_config(path, root=TransferConfig)
    assert config.protocol in PROTOCOLS
    assert path.stem.split("_")[-1] == config.protocol  # knn.yaml, ucf101_finetune.yaml, ...


def test_unknown_protocols_keys_and_missing_manifests_are_refused(tiny_synthav: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown transfer protocol 'svm'"):
        Transfer(TransferConfig(synthav_dir=str(tiny_synthav), protocol="svm"))
    with pytest.raises(ManifestError, match="build_manifest.py"):
        Transfer(TransferConfig(manifest=str(tmp_path / "ucf101_split1.csv")))
    with pytest.raises(ConfigError, match="knn_neighbours"):
        load_config(None, ["knn_neighbours=5"], root=TransferConfig)


def test_a_plus_joins_the_labeled_rows_of_several_splits(tiny_synthav: Path) -> None:
    manifest = tiny_synthav / "manifest.csv"
    train, test = (labeled_rows(manifest, split) for split in ("train", "test"))
    assert labeled_rows(manifest, "train+test") == train + test
    with pytest.raises(ManifestError, match="no rows in split 'val'"):
        labeled_rows(manifest, "train+val")


def test_a_split_with_no_usable_video_is_a_manifest_error(tiny_synthav: Path, tmp_path: Path) -> None:
    rows = read_manifest(tiny_synthav / "manifest.csv")
    silent = [replace(row, path=str(write_media(tmp_path / f"silent{i}.mp4", np.zeros((12, 32, 32, 3), np.uint8), 8.0)),
                      has_audio=True)  # the manifest believes they have audio
              for i, row in enumerate(r for r in rows if r.split == "train")]
    broken = [replace(row, path=str(tmp_path / f"corrupt{i}.mp4"))
              for i, row in enumerate(r for r in rows if r.split == "train")]
    for row in broken:
        Path(row.path).write_bytes(b"\x00" * 5000)
    test_rows = [row for row in rows if row.split == "test"]
    config = TransferConfig(frame_size=32, clip_len=4, num_clips=2, num_workers=0, finetune_epochs=2)
    for train_rows, mode, message in [(silent, "audio", r"none of the 20 'train' videos .* \{'no_audio': 20\}"),
                                      (broken, "clip", r"none of the 20 'train' videos .* \{'corrupt': 20\}")]:
        config.manifest = str(write_manifest([*train_rows, *test_rows], tmp_path / "manifest.csv"))
        transfer = Transfer(config, torch.device("cpu"))
        encoder = random_encoder("tiny_audio" if mode == "audio" else "tiny3d", 0)
        with pytest.raises(ManifestError, match=message):
            transfer.frozen_protocol(encoder, mode, "linear")
    with pytest.raises(ManifestError, match=r"\{'corrupt': 20\}"):
        transfer.finetune(encoder, "clip")


def test_finetuning_counts_a_video_that_fails_in_a_later_epoch_once(tiny_synthav: Path, tmp_path: Path) -> None:
    """One random clip per video per epoch: a video garbled near its end decodes in epoch 0 and fails
    in a later one; fine-tuning reports it once, and not as trained on."""
    frames = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    data = bytearray(write_media(tmp_path / "clean.mp4", frames, 8.0, gop=4).read_bytes())
    start = data.find(b"mdat") + int((len(data) - data.find(b"mdat")) * 0.9)
    data[start:start + 200] = np.random.default_rng(1).bytes(200)
    garbled = tmp_path / "garbled.mp4"
    garbled.write_bytes(bytes(data))
    rows = read_manifest(tiny_synthav / "manifest.csv")
    label = next(r.label for r in rows if r.label)
    manifest = write_manifest([*rows, replace(rows[0], path=str(garbled), label=label, split="train")],
                              tmp_path / "manifest.csv")
    config = TransferConfig(manifest=str(manifest), frame_size=32, clip_len=4, num_workers=0, finetune_epochs=3,
                            seed=1)
    transfer = Transfer(config, torch.device("cpu"))
    dataset = transfer.loader(transfer.train_rows, random=True, shuffle=True, seed=config.seed).dataset
    index = [row.path for row in dataset.rows].index(str(garbled))
    failed = []
    for epoch in range(config.finetune_epochs):
        dataset.set_epoch(epoch)
        failed.append(isinstance(dataset[index], Skipped))
    assert not failed[0] and any(failed), failed  # the case this test is about
    result = transfer.finetune(random_encoder("tiny3d", 0), "clip")
    assert result["skipped"] == {"corrupt": 1} and result["num_train_videos"] == 20


def test_layer_decay_scales_each_vit_layer_from_the_top_and_spares_norms_from_weight_decay() -> None:
    """BEiT / VideoMAE fine-tuning: layer l of L (embedding 0, block i at i + 1, final norm and
    classifier at L - 1) trains at decay ** (L - 1 - l) times the lr."""
    encoder = VideoViT(dim=32, depth=2, heads=2, tubelet=(2, 8, 8), pos_embed="learned", num_frames=4, image_size=16)
    scale = layer_decay_scale(encoder, 0.5)
    expected = {"patch_embed.weight": 0.125, "pos_embed.table": 0.125, "blocks.0.qkv.weight": 0.25,
                "blocks.1.mlp.2.bias": 0.5, "norm.weight": 1.0, "head.weight": 1.0}
    assert {name: scale(name) for name in expected} == expected
    classifier = torch.nn.Linear(32, 3)
    optimizer = finetune_optimizer(encoder, classifier, TransferConfig(finetune_layer_decay=0.5))
    set_lr(optimizer, 0.1)
    lr = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert len(lr) == len([*encoder.parameters(), *classifier.parameters()])  # each parameter once
    assert lr[id(encoder.patch_embed.weight)] == pytest.approx(0.0125)
    assert lr[id(encoder.blocks[1].qkv.weight)] == pytest.approx(0.05)
    assert lr[id(classifier.weight)] == lr[id(classifier.bias)] == pytest.approx(0.1)
    assert decay[id(classifier.weight)] == 0.05 and decay[id(classifier.bias)] == decay[id(encoder.norm.weight)] == 0
    assert {group["lr"] for group in finetune_optimizer(encoder, classifier, TransferConfig()).param_groups} == {TransferConfig.finetune_lr}
    with pytest.raises(ValueError, match="needs an encoder with layers"):
        layer_decay_scale(random_encoder("tiny3d", 0), 0.75)
    with pytest.raises(ValueError, match="must lie in"):
        layer_decay_scale(encoder, 1.5)
