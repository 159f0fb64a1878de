"""Dense Predictive Coding and MemDPC (docs/methods.md#dpc): the blocks fit the video, every prediction's
positive is its own (video, step, cell), the negative kinds' counts, the order of the future blocks
matters, the rollout feeds its predictions back, MemDPC's convex predictions and backward direction,
per-frame colours, BatchNorm running statistics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_init_checkpoint  # tests/ is on sys.path
from torch import Tensor

from mmssl.cli import visualize
from mmssl.data.dataset import PretextDataset
from mmssl.data.manifest import ManifestRow
from mmssl.losses.dense_predictive import (
    OTHER_CELL,
    OTHER_STEP,
    OTHER_VIDEO,
    POSITIVE,
    DensePredictiveLoss,
    candidate_kinds,
)
from mmssl.models import Tiny3D
from mmssl.tasks.dpc import DPC, DPCConfig, DPCHead
from mmssl.transforms.video import VideoAugment

SMALL = DPCConfig(num_blocks=4, block_len=2, stride=2, pred_steps=2)


def row(num_frames: int = 48, path: str = "video.mp4") -> ManifestRow:
    return ManifestRow(path, fps=16.0, num_frames=num_frames, duration=num_frames / 16)


def encoder() -> Tiny3D:
    torch.manual_seed(0)
    return Tiny3D(widths=(8, 16), dim=16)


def frames(videos: int = 3, config: DPCConfig = SMALL, size: int = 16, seed: int = 0) -> Tensor:
    """Random uint8 clips [videos, N L, size, size, 3]: every block unlike the others."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (videos, config.num_blocks * config.block_len, size, size, 3), generator=generator,
                         dtype=torch.uint8)


def test_the_blocks_follow_each_other_every_stride_frames_and_short_videos_are_left_out() -> None:
    task = DPC(DPCConfig(num_blocks=6, block_len=4, stride=2, pred_steps=2))
    assert task.min_frames(16.0) == 47
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        window = task.window(row(48), rng)
        assert len(window.frames) == 24 and np.all(np.diff(window.frames) == 2) and window.frames[-1] < 48
        starts.add(int(window.frames[0]))
    assert starts == {0, 1}
    dataset = PretextDataset([row(48, "a.mp4"), row(46, "short.mp4")], task, 32)
    assert [r.path for r in dataset.rows] == ["a.mp4"] and dataset.excluded["too_short"] == 1


def test_every_prediction_has_its_own_video_step_and_cell_as_positive() -> None:
    videos, steps, cells, dim = 3, 2, 4, 24
    true = torch.linalg.qr(torch.randn(dim, dim))[0][: videos * steps * cells].reshape(videos, steps, cells, dim)
    scores = DensePredictiveLoss().score(20 * true, true)  # each prediction points at its own true cell
    assert scores.metrics()["accuracy"] == 1.0 and scores.loss() < 1e-3
    rows = torch.arange(videos * steps * cells)
    assert torch.equal(scores.positive, rows)
    assert torch.equal(scores.kinds[rows, scores.positive], torch.full((len(rows),), POSITIVE, dtype=torch.int8))
    assert int((scores.kinds == POSITIVE).sum()) == len(rows)  # and nothing else is a positive
    shuffled = DensePredictiveLoss().score(20 * true, true.roll(1, dims=2))  # every cell's truth moved
    assert shuffled.metrics()["accuracy"] == 0.0


@pytest.mark.parametrize(("videos", "all_videos", "first"), [(3, 3, 0), (2, 6, 4)])
def test_each_negative_kind_has_its_count(videos: int, all_videos: int, first: int) -> None:
    """(V - 1) T C other videos, T (C - 1) other cells, T - 1 other steps; a rank's rows (first > 0)
    find their positives among the gathered videos at their own offset."""
    steps, cells = 3, 4
    kinds = candidate_kinds(videos, all_videos, steps, cells, first)
    assert kinds.shape == (videos * steps * cells, all_videos * steps * cells)
    counts = {kind: (kinds == kind).sum(1) for kind in (POSITIVE, OTHER_VIDEO, OTHER_CELL, OTHER_STEP)}
    expected = {POSITIVE: 1, OTHER_VIDEO: (all_videos - 1) * steps * cells, OTHER_CELL: steps * (cells - 1),
                OTHER_STEP: steps - 1}
    for kind, count in expected.items():
        assert torch.all(counts[kind] == count), kind
    positives = (kinds == POSITIVE).nonzero()[:, 1]
    assert torch.equal(positives, torch.arange(videos * steps * cells) + first * steps * cells)


def test_a_permutation_of_the_future_blocks_changes_the_loss_and_one_of_the_videos_does_not() -> None:
    task = DPC(SMALL)  # no augmentation: the same input gives the same loss
    net = encoder()
    head = task.build_head(net)
    clips = frames()
    blocks = clips.unflatten(1, (SMALL.num_blocks, SMALL.block_len))
    future_swapped = blocks[:, [0, 1, 3, 2]].flatten(1, 2)
    with torch.no_grad():
        loss = task.loss({"frames": clips}, net, head)["loss"]
        assert not torch.isclose(task.loss({"frames": future_swapped}, net, head)["loss"], loss)
        torch.testing.assert_close(task.loss({"frames": clips[[2, 0, 1]]}, net, head)["loss"], loss)


def test_the_rollout_feeds_its_own_predictions_back() -> None:
    torch.manual_seed(0)
    head = DPCHead(8, DPCConfig(pred_steps=3))
    seen: list[Tensor] = []
    head.aggregators[0].cell.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    context = torch.randn(2, 4, 8, 3, 3)
    predicted = head.rollout(context, 3, head.aggregators[0])
    assert predicted.shape == (2, 3, 8, 3, 3) and len(seen) == 4 + 2
    for t in range(4):
        torch.testing.assert_close(seen[t], context[:, t].relu())
    for k in range(2):
        torch.testing.assert_close(seen[4 + k], predicted[:, k].relu())
    assert not torch.allclose(predicted[:, 0], predicted[:, 1])


def test_memdpc_predicts_convex_combinations_of_its_memory_in_both_directions() -> None:
    config = DPCConfig(num_blocks=4, block_len=2, stride=2, pred_steps=2, memory_size=16, bidirectional=True)
    task = DPC(config)
    net = encoder()
    head = task.build_head(net)
    with torch.no_grad():
        head.memory.copy_(torch.eye(16))  # a prediction is then its own softmax weights
        prediction = head.predict(torch.randn(2, 16, 3, 3))
    torch.testing.assert_close(prediction.sum(1), torch.ones(2, 3, 3))
    assert prediction.min() >= 0
    seen: list[Tensor] = []
    head.aggregators[1].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    clips = frames(config=config)
    with torch.no_grad():
        out = task.loss({"frames": clips}, net, head)
        grid = task.grids(clips, net)
    assert torch.isfinite(out["loss"])
    torch.testing.assert_close(seen[0], grid[:, [3, 2]].relu())  # backwards: the last two blocks, reversed


def test_colours_are_drawn_per_frame_and_batchnorm_keeps_running_statistics() -> None:
    torch.manual_seed(0)
    task = DPC(SMALL, VideoAugment(crop_scale=(1, 1), flip=False))
    net = encoder()
    shown: list[Tensor] = []
    net.features.register_forward_pre_hook(lambda module, args: shown.append(args[0]))
    still = frames(videos=2)[:, :1].expand(2, 8, 16, 16, 3)  # every frame alike
    before = net.features[1].running_mean.clone()
    task.loss({"frames": still}, net, task.build_head(net))
    blocks = shown[0]  # [(B N), C, L, H, W]
    assert not torch.allclose(blocks[:, :, 0], blocks[:, :, 1])  # the two frames of every block differ
    assert net.features[1].track_running_stats and not torch.equal(net.features[1].running_mean, before)


def test_visualize_shows_the_context_and_future_blocks(tiny_synthav: Path, tmp_path: Path) -> None:
    out = visualize.main(["--task", "dpc", "--num", "2", f"data.synthav_dir={tiny_synthav}", "data.frame_size=32",
                          *DPC.smoke_overrides, "--out", str(tmp_path / "dpc.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = random_init_checkpoint("dpc", tiny_synthav, tmp_path / "run/checkpoint_000000.pt")
    predicted = visualize.main(["--task", "dpc", "--num", "2", "--checkpoint", str(checkpoint.parent),
                                "--out", str(tmp_path / "predicted.png")])
    assert predicted.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and predicted.read_bytes() != out.read_bytes()


def test_predicted_views_show_each_future_block_beside_the_block_its_prediction_scores_highest() -> None:
    task, net = DPC(SMALL), encoder().eval()  # no augmentation
    head = task.build_head(net).eval()
    clips = frames(videos=2)
    context, steps, length = SMALL.num_blocks - SMALL.pred_steps, SMALL.pred_steps, SMALL.block_len
    with torch.no_grad():
        views = task.predicted_views({"frames": clips}, net, head)
        grid = task.grids(clips, net, augment=False)
        predicted = head.rollout(grid[:, :context], steps, head.aggregators[0])
    middle = lambda video, block: clips[video, block * length + length // 2]  # noqa: E731
    for b, shown in enumerate(views):
        assert len(shown) == context + 2 * steps
        assert [caption for caption, _ in shown[:context]] == [f"context block {k}" for k in range(context)]
        for p in range(steps):
            (_, true), (caption, nearest) = shown[context + 2 * p:context + 2 * p + 2]
            assert torch.equal(true, middle(b, context + p))
            scores = {(v, s): float((predicted[b, p] * grid[v, context + s]).sum()) for v in range(2) for s in range(steps)}
            best = max(scores, key=scores.get)
            assert torch.equal(nearest, middle(best[0], context + best[1]))
            assert caption.endswith("right") == (best == (b, p))
