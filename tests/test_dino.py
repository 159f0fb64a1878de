"""DINO on clips (docs/methods.md#dino): the centre follows the teacher's batch mean after the loss and
agrees over ranks, the teacher gets no gradient and follows the student on its momentum schedule, the
views span what they should, and a collapsed teacher stops the run."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SpyEncoder, join_gloo, run_ranks  # tests/ is on sys.path under pytest

from mmssl.cli import visualize
from mmssl.data.manifest import ManifestRow
from mmssl.engine import distributed as mdist
from mmssl.losses import DINOLoss
from mmssl.models.ema import cosine_momentum
from mmssl.tasks.dino import DINO, DINOConfig, TeacherCollapseError, teacher_stats
from mmssl.transforms.video import VideoAugment

K = 16
WORLD_SIZE = 2
SMALL = DINOConfig(global_frames=4, local_views=2, local_frames=2, local_size=8, out_dim=K, hidden_dim=16,
                   bottleneck_dim=8, teacher_warmup_epochs=100)  # no collapse check: a toy encoder may collapse


def _outputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Student [4 views, 8, K] and teacher [2 views, 8, K] outputs."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 8, K, generator=g), torch.randn(2, 8, K, generator=g)


def test_the_loss_uses_the_old_centre_then_moves_it_to_the_teachers_mean() -> None:
    loss_fn = DINOLoss(K, student_temp=0.1, center_momentum=0.9)
    old = torch.randn(K)
    loss_fn.center.copy_(old)
    student, teacher = _outputs()
    loss = loss_fn(student, teacher, teacher_temp=0.04)
    p_t = F.softmax((teacher - old) / 0.04, -1)
    log_s = F.log_softmax(student / 0.1, -1)
    expected = torch.stack([-(p_t[t] * log_s[s]).sum(-1).mean() for t in range(2) for s in range(4) if s != t]).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss_fn.center, 0.9 * old + 0.1 * teacher.mean(dim=(0, 1)))
    mean_p = p_t.mean(dim=(0, 1))
    torch.testing.assert_close(teacher_stats(p_t)["batch_entropy"], -(mean_p * mean_p.log()).sum())


def _centre_worker(rank: int, port: int, out_dir: str) -> None:
    join_gloo(rank, WORLD_SIZE, port)
    try:
        loss_fn = DINOLoss(K)
        student, teacher = (x.chunk(WORLD_SIZE, dim=1)[rank] for x in _outputs())
        stats = teacher_stats(loss_fn.teacher_probs(teacher, teacher_temp=0.04))
        loss_fn(student, teacher, teacher_temp=0.04)
        torch.save({"center": loss_fn.center, "batch_entropy": stats["batch_entropy"]}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        mdist.cleanup()


def test_two_ranks_hold_the_centre_of_the_full_batch(tmp_path: Path) -> None:
    """Each of 2 gloo ranks sees half the batch: both end with the centre (and batch-mean entropy) of
    the full batch in one process."""
    loss_fn, (student, teacher) = DINOLoss(K), _outputs()
    full = teacher_stats(loss_fn.teacher_probs(teacher, teacher_temp=0.04))
    loss_fn(student, teacher, teacher_temp=0.04)
    for rank in run_ranks(_centre_worker, tmp_path, WORLD_SIZE, 60.0):
        torch.testing.assert_close(rank["center"], loss_fn.center)
        torch.testing.assert_close(rank["batch_entropy"], full["batch_entropy"])


def _batch(config: DINOConfig, size: int = 4) -> dict[str, torch.Tensor]:
    frames = config.global_views * config.global_frames + config.local_views * config.local_frames
    return {"frames": torch.randint(0, 256, (size, frames, 16, 16, 3), dtype=torch.uint8)}


def test_the_teacher_gets_no_gradient_and_the_last_layer_zero_in_its_first_epoch() -> None:
    torch.manual_seed(0)
    task, encoder = DINO(SMALL, VideoAugment(), epochs=4), SpyEncoder()
    head = task.build_head(encoder)
    last_grads = []
    for step in (1, 3):  # epoch 0.5 (frozen), epoch 1.5
        task.set_step(step, 8)
        task.loss(_batch(SMALL), encoder, head)["loss"].backward()
        assert all(p.grad is None and not p.requires_grad
                   for p in [*head.target_encoder.parameters(), *head.target_projector.parameters()])
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
        last_grads.append(head.projector.last_layer.grad.abs().sum())
        head.zero_grad(set_to_none=True)
    assert last_grads[0] == 0 and last_grads[1] > 0
    assert encoder.inputs[0].shape[-3:] == (4, 16, 16) and encoder.inputs[1].shape[-3:] == (2, 8, 8)


def test_the_teacher_follows_the_student_on_the_cosine_schedule() -> None:
    task, encoder = DINO(SMALL), SpyEncoder()
    head = task.build_head(encoder)
    rates = []
    for step in range(1, 11):
        task.set_step(step, 10)
        rates.append(task.momentum)
        before = head.target_encoder.proj.weight.clone()
        with torch.no_grad():
            encoder.proj.weight.add_(1.0)  # the optimizer's step
        task.loss(_batch(SMALL), encoder, head)
        task.loss(_batch(SMALL), encoder, head)  # a second micro-batch of the step: no second update
        torch.testing.assert_close(head.target_encoder.proj.weight, torch.lerp(before, encoder.proj.weight, 1 - rates[-1]))
    assert rates == [cosine_momentum(k, 10, base=SMALL.momentum) for k in range(10)]
    assert rates[0] == SMALL.momentum and all(a < b for a, b in itertools.pairwise(rates)) and rates[-1] < 1


def test_global_views_span_most_of_the_video_and_local_views_are_short() -> None:
    config = DINOConfig(global_frames=8, global_span=0.8, local_views=4, local_frames=4, local_strides=[1, 3])
    task, row, rng = DINO(config), ManifestRow("v.mp4", num_frames=48), np.random.default_rng(0)
    for _ in range(50):
        frames = task.window(row, rng).frames
        views = np.split(frames, np.cumsum([8, 8, 4, 4, 4]))
        assert all(np.all(np.diff(v) >= 0) and v.min() >= 0 and v.max() < 48 for v in views)
        assert all(v[-1] - v[0] + 1 >= round(0.8 * 48) for v in views[:2])
        assert all(len(set(np.diff(v))) == 1 and np.diff(v)[0] in (1, 3) for v in views[2:])
    assert task.min_frames(8.0) == 10


def test_a_collapsed_teacher_stops_the_run_after_the_warm_up() -> None:
    config = DINOConfig(out_dim=K, teacher_warmup_epochs=1, collapse_patience=2)
    task, loss_fn = DINO(config, epochs=2), DINOLoss(K)
    dominated = torch.zeros(2, 8, K)
    dominated[..., 3] = 1.0  # every sample's output on one dimension: the batch-mean entropy is 0
    task.set_step(1, 4)  # epoch 0.5: still warming up
    for _ in range(3):
        task.check_collapse(teacher_stats(loss_fn.teacher_probs(dominated, teacher_temp=0.04)))
    task.set_step(2, 4)
    task.check_collapse(teacher_stats(loss_fn.teacher_probs(dominated, teacher_temp=0.04)))
    with pytest.raises(TeacherCollapseError, match="one output dominates"):
        task.check_collapse(teacher_stats(loss_fn.teacher_probs(dominated, teacher_temp=0.04)))
    uniform = teacher_stats(torch.full((2, 8, K), 1 / K))
    spread = torch.eye(K)[:8] * 0.5 + 0.5 / K  # each sample half on its own output: healthy
    healthy = teacher_stats(spread[None].repeat(2, 1, 1))
    task.collapsed_steps = 0
    for out in (uniform, healthy, uniform):  # a healthy step resets the count
        task.check_collapse(out)
    with pytest.raises(TeacherCollapseError, match="outputs are uniform"):
        task.check_collapse(uniform)


def test_visualize_shows_each_view_as_the_student_gets_it(tiny_synthav: Path, tmp_path: Path) -> None:
    views = DINO(SMALL, VideoAugment()).views({"frames": _batch(SMALL, size=1)["frames"][0]})
    assert [caption for caption, _ in views] == ["global 1", "global 2", "local 1 (8 px)", "local 2 (8 px)"]
    assert [tuple(image.shape) for _, image in views] == [(16, 64, 3)] * 2 + [(8, 16, 3)] * 2
    out = visualize.main(["--task", "dino", "--num", "1", f"data.synthav_dir={tiny_synthav}", "data.frame_size=32",
                          "--out", str(tmp_path / "dino.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
