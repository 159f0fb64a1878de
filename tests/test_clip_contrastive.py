"""Clip contrastive task: CVRL and independent clip samplers, per-clip augmentation, every loss through
the trainer, the momentum (target) network's EMA, MoCo's queue, and a 2-process gloo DDP run."""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from helpers import SpyEncoder, join_gloo, run_ranks  # tests/ is on sys.path under pytest

from mmssl.config import load_config
from mmssl.data.dataset import PretextDataset, collate
from mmssl.data.manifest import ManifestRow, read_manifest
from mmssl.data.sampling import clip_span, cvrl_clips, independent_clips
from mmssl.engine import distributed as mdist
from mmssl.engine.optim import build_optimizer
from mmssl.engine.trainer import pretrain
from mmssl.eval.transfer import load_encoder
from mmssl.losses import LOSSES as LOSS_CLASSES
from mmssl.models import build_video_encoder
from mmssl.tasks import build_task
from mmssl.tasks.clip_contrastive import METHODS, ClipContrastive, ClipContrastiveConfig, Momentum, pair_mean
from mmssl.tasks.model import TaskModel
from mmssl.transforms.video import MEAN, STD, VideoAugment, colour_distortion, to_model_input

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"nt_xent": "simclr", "moco": "moco", "byol": "byol", "simsiam": "simsiam",
           "barlow_twins": "barlow_twins", "vicreg": "vicreg"}
DRAWS = 20000
KS_LIMIT = 1.95 / math.sqrt(DRAWS)  # Kolmogorov-Smirnov at the 0.1% level (several tests per run)
LONG = 1000  # frames: with 8-frame clips every 2 frames, M = 986 possible starts


def ks_distance(samples: np.ndarray, cdf) -> float:
    """sup |empirical CDF - cdf| of continuous samples."""
    x = np.sort(samples)
    n = len(x)
    expected = cdf(x)
    return float(max((np.arange(1, n + 1) / n - expected).max(), (expected - np.arange(n) / n).max()))


def spread(values: np.ndarray, num_starts: int, rng: np.random.Generator) -> np.ndarray:
    """Integer frame offsets in [0, M) -> continuous values in [0, 1) (uniform within each integer)."""
    return (values + rng.random(len(values))) / num_starts


def triangular_cdf(x: np.ndarray) -> np.ndarray:
    """CDF of the density 2 (1 - x) on [0, 1]: linearly decreasing to 0 at the largest gap."""
    return 1 - (1 - x) ** 2


# --- samplers ----------------------------------------------------------------------------------------


def test_cvrl_gap_density_decreases_linearly_to_zero_at_the_largest_gap() -> None:
    rng = np.random.default_rng(0)
    num_starts = LONG - clip_span(8, 2) + 1
    starts = np.array([cvrl_clips(LONG, 8, 2, rng)[:, 0] for _ in range(DRAWS)])  # [draws, 2]
    gaps = np.abs(starts[:, 0] - starts[:, 1])
    assert gaps.max() <= num_starts - 1 and starts.max() <= num_starts - 1
    x = spread(gaps, num_starts, rng)
    assert ks_distance(x, triangular_cdf) < KS_LIMIT
    assert ks_distance(x, lambda v: v) > 10 * KS_LIMIT  # a uniform gap fails the same test
    # the histogram's density is a line 2 - 2x: slope -2, zero at the largest gap
    density, edges = np.histogram(x, bins=10, range=(0, 1), density=True)
    slope, intercept = np.polyfit((edges[:-1] + edges[1:]) / 2, density, 1)
    assert slope == pytest.approx(-2, abs=0.15) and intercept == pytest.approx(2, abs=0.1)
    assert -intercept / slope == pytest.approx(1, abs=0.05)
    # given the gap, the earlier clip starts uniformly where both fit; the order is shuffled
    earlier = starts.min(axis=1)
    assert ks_distance(spread(earlier, 1, rng) / (num_starts - gaps), lambda v: v) < KS_LIMIT
    assert np.mean(starts[:, 0] < starts[:, 1]) == pytest.approx(0.5, abs=0.02)


def test_independent_clips_have_uniform_independent_starts() -> None:
    rng = np.random.default_rng(1)
    num_starts = LONG - clip_span(8, 2) + 1
    starts = np.array([independent_clips(LONG, 8, 2, 3, rng)[:, 0] for _ in range(DRAWS)])  # [draws, 3]
    for column in starts.T:
        assert ks_distance(spread(column, num_starts, rng), lambda v: v) < KS_LIMIT
    correlation = np.corrcoef(starts.T)
    assert np.abs(correlation[np.triu_indices(3, 1)]).max() < 0.03
    # the gap between two independent uniform starts has CVRL's density (up to discretisation)
    gaps = spread(np.abs(starts[:, 0] - starts[:, 1]), num_starts, rng)
    assert ks_distance(gaps, triangular_cdf) < KS_LIMIT


@pytest.mark.parametrize("sampler, num_clips", [("cvrl", 2), ("uniform", 2), ("uniform", 3)])
@pytest.mark.parametrize("num_frames", [5, 15, 16, 48])
def test_clips_stay_inside_the_video(sampler: str, num_clips: int, num_frames: int) -> None:
    task = ClipContrastive(ClipContrastiveConfig(num_clips=num_clips, clip_len=8, stride=2, sampler=sampler))
    rng = np.random.default_rng(0)
    for _ in range(200):
        frames = task.window(ManifestRow("v.mp4", fps=16.0, num_frames=num_frames), rng).frames
        clips = frames.reshape(num_clips, 8)
        assert frames.min() >= 0 and frames.max() <= num_frames - 1
        if num_frames >= clip_span(8, 2):  # the clip fits: 8 frames every 2
            assert np.all(np.diff(clips, axis=1) == 2)
        else:  # too short: the last frame repeats
            assert np.all(np.diff(clips, axis=1) >= 0) and np.all(clips[:, -1] == num_frames - 1)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="uniform"):
        ClipContrastive(ClipContrastiveConfig(num_clips=3, sampler="cvrl"))
    with pytest.raises(ValueError, match="unknown loss"):
        ClipContrastive(ClipContrastiveConfig(loss="swav"))
    with pytest.raises(ValueError, match="unknown sampler"):
        ClipContrastive(ClipContrastiveConfig(sampler="dense"))


def test_batchnorm_is_global_on_several_gpus_except_under_moco() -> None:
    """SimCLR, BYOL, SimSiam, Barlow Twins and VICReg normalise over the global batch in their
    reference code; MoCo's shuffling BN needs per-GPU BatchNorm. One process keeps plain BN."""
    wanted = {loss: ClipContrastive(ClipContrastiveConfig(loss=loss)).global_batchnorm for loss in METHODS}
    assert wanted == {loss: loss != "moco" for loss in METHODS}
    assert not build_task(load_config(None)).global_batchnorm  # Shuffle and Learn: per-GPU BN
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 1), torch.nn.BatchNorm3d(4))
    assert mdist.global_batchnorm(model, torch.device("cpu")) is model


def test_each_method_declares_its_papers_parts() -> None:
    """A target network only for MoCo (constant m 0.999) and BYOL (0.996 on a cosine schedule); a
    predictor only for BYOL and SimSiam; every entry's loss is a registered one."""
    assert {name: method.momentum for name, method in METHODS.items() if method.momentum is not None} == {
        "moco": Momentum(0.999, "constant"), "byol": Momentum(0.996, "cosine")}
    assert {name for name, method in METHODS.items() if method.predictor is not None} == {"byol", "simsiam"}
    assert {name for name, method in METHODS.items() if not method.global_bn} == {"moco"}
    assert all(method.loss in LOSS_CLASSES for method in METHODS.values())


def test_unset_settings_are_the_methods_own() -> None:
    encoder = SpyEncoder()
    moco = ClipContrastive(ClipContrastiveConfig(loss="moco"))
    criterion = moco.build_head(encoder).criterion
    assert criterion.temperature == 0.07 and criterion.queue.shape == (65536, 128)
    assert ClipContrastive(ClipContrastiveConfig(loss="nt_xent")).build_head(encoder).criterion.temperature == 0.1
    moco.set_step(7, 10)
    assert moco.momentum == 0.999  # constant
    byol = ClipContrastive(ClipContrastiveConfig(loss="byol"))
    byol.set_step(1, 10)  # the update at step 1 takes tau_0 = tau_base
    assert byol.momentum == pytest.approx(0.996)
    byol.set_step(11, 10)
    assert byol.momentum == 1.0
    configured = ClipContrastive(ClipContrastiveConfig(loss="byol", momentum=0.9))
    configured.set_step(1, 10)
    assert configured.momentum == pytest.approx(0.9)
    assert ClipContrastive(ClipContrastiveConfig(loss="simsiam")).momentum is None


@pytest.mark.parametrize("loss", list(METHODS))
def test_every_method_builds_and_steps(loss: str) -> None:
    """Every entry of the table, with or without a config: its head, one loss, gradients where due."""
    torch.manual_seed(0)
    task = ClipContrastive(ClipContrastiveConfig(loss=loss, clip_len=2, queue_size=64), VideoAugment())
    encoder = SpyEncoder()
    head = task.build_head(encoder)
    task.set_step(1, 10)
    out = task.loss({"frames": torch.randint(0, 256, (4, 4, 32, 32, 3), dtype=torch.uint8)}, encoder, head)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and -1 <= out["positive_cos"] <= 1
    trainable = [*encoder.parameters(), *(p for p in head.parameters() if p.requires_grad)]
    assert all(p.grad is not None for p in trainable)
    assert (head.target_encoder is not None) == (METHODS[loss].momentum is not None)


# --- device side ---------------------------------------------------------------------------------------


def still_clips(batch: int, num_clips: int, clip_len: int, size: int = 32) -> torch.Tensor:
    """uint8 [B, clips * L, H, W, 3]: every frame of clip k of sample b is the same constant 10 b + 40 k."""
    values = 10 * torch.arange(batch)[:, None] + 40 * torch.arange(num_clips)[None, :]
    frames = values[:, :, None, None, None, None].expand(batch, num_clips, clip_len, size, size, 3)
    return frames.reshape(batch, num_clips * clip_len, size, size, 3).to(torch.uint8)


def test_clips_are_regrouped_clip_by_clip() -> None:
    task = ClipContrastive(ClipContrastiveConfig(num_clips=3, sampler="uniform", clip_len=2))  # no augmentation
    encoder = SpyEncoder()
    task.loss({"frames": still_clips(4, 3, 2)}, encoder, task.build_head(encoder))
    x = encoder.inputs[0]
    assert x.shape == (12, 3, 2, 32, 32)  # clips * B, C, L, H, W
    means = x.mean(dim=(1, 2, 3, 4)) * STD[0] + MEAN[0]
    expected = (10 * torch.arange(4)[None, :] + 40 * torch.arange(3)[:, None]).flatten() / 255  # (clip, sample)
    torch.testing.assert_close(means, expected.float())


def test_augmentation_is_shared_within_a_clip_and_independent_between_clips() -> None:
    torch.manual_seed(0)
    task = ClipContrastive(ClipContrastiveConfig(clip_len=4), VideoAugment())
    encoder = SpyEncoder()
    image = torch.randint(0, 256, (3, 1, 32, 32, 3), dtype=torch.uint8)  # one still image per sample
    out = task.loss({"frames": image.expand(3, 8, 32, 32, 3).contiguous()}, encoder, task.build_head(encoder))
    assert torch.isfinite(out["loss"]) and -1 <= out["positive_cos"] <= 1
    x = encoder.inputs[0]
    for clip in x:  # one crop/flip/jitter per clip: its frames stay identical
        assert all(torch.equal(clip[:, 0], clip[:, t]) for t in range(1, 4))
    first, second = x.reshape(2, 3, *x.shape[1:])  # clip-major
    for a, b in zip(first, second, strict=True):  # the two clips of a sample: the same image, new draws
        assert not torch.allclose(a, b)


def test_colour_distortion_shifts_hue_about_the_gray_axis_or_drops_colour() -> None:
    torch.manual_seed(0)
    pixels = torch.rand(64, 3, 2, 4, 4)
    normalised = (pixels - MEAN[0]) / STD[0]
    rotated = colour_distortion(normalised, hue=0.5, grayscale=0.0) * STD[0] + MEAN[0]
    gray_axis = pixels.mean(1, keepdim=True)
    torch.testing.assert_close(rotated.mean(1, keepdim=True), gray_axis)  # the gray component is kept
    torch.testing.assert_close((rotated - gray_axis).norm(dim=1), (pixels - gray_axis).norm(dim=1))  # a rotation
    assert not torch.allclose(rotated, pixels, atol=1e-2)
    cosine = F.cosine_similarity(rotated - gray_axis, pixels - gray_axis, dim=1)  # one angle per clip
    assert torch.allclose(cosine, cosine[:, :1, :1, :1], atol=1e-4)
    gray = colour_distortion(normalised, hue=0.5, grayscale=1.0) * STD[0] + MEAN[0]
    torch.testing.assert_close(gray, gray_axis.expand_as(gray))
    still = torch.full((4, 3, 2, 4, 4), 0.3)  # gray stays gray
    torch.testing.assert_close(colour_distortion(still, hue=0.5, grayscale=0.5), still)


def test_pair_mean_averages_over_every_clip_pair() -> None:
    a, b = torch.arange(3.0)[:, None, None], 10 * torch.arange(3.0)[:, None, None]
    seen = []

    def record(*args: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(int(t.item()) for t in args))
        return sum(args)

    assert pair_mean(record, a, b).item() == pytest.approx(np.mean([0 + 1 + 0 + 10, 0 + 2 + 0 + 20, 1 + 2 + 10 + 20]))
    assert seen == [(0, 1, 0, 10), (0, 2, 0, 20), (1, 2, 10, 20)]


def _perturbed(task: ClipContrastive) -> tuple[SpyEncoder, torch.nn.Module]:
    """An encoder and head whose online weights differ from the target's."""
    torch.manual_seed(0)
    encoder = SpyEncoder()
    head = task.build_head(encoder)
    with torch.no_grad():
        for p in [*encoder.parameters(), *head.projector.parameters()]:
            p.add_(torch.randn_like(p))
    return encoder, head


def _target_weights(head: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in [*head.target_encoder.parameters(), *head.target_projector.parameters()]]


@pytest.mark.parametrize("loss", ["moco", "byol"])
def test_target_network_follows_by_ema_once_per_step_and_gets_no_gradient(loss: str) -> None:
    config = ClipContrastiveConfig(loss=loss, clip_len=2, queue_size=64, momentum=0.9 if loss == "moco" else 0.8)
    task = ClipContrastive(config)
    encoder, head = _perturbed(task)
    online = [p.detach().clone() for p in [*encoder.parameters(), *head.projector.parameters()]]
    before = _target_weights(head)
    batch = {"frames": torch.randint(0, 256, (4, 4, 32, 32, 3), dtype=torch.uint8)}

    task.loss(batch, encoder, head)  # step 0: the target is the initial copy, nothing to take in
    assert all(torch.equal(a, b) for a, b in zip(_target_weights(head), before, strict=True))

    step, total = 5, 10
    task.set_step(step, total)
    out = task.loss(batch, encoder, head)
    # MoCo: constant m; BYOL: tau_{k-1} = 1 - (1 - tau_base)(1 + cos(pi (k - 1) / K)) / 2
    m = 0.9 if loss == "moco" else 1 - (1 - 0.8) * (1 + math.cos(math.pi * (step - 1) / total)) / 2
    after = _target_weights(head)
    for old, new, theta in zip(before, after, online, strict=True):
        torch.testing.assert_close(new, m * old + (1 - m) * theta)
    assert int(head.target_step) == step

    out["loss"].backward()
    target = [*head.target_encoder.parameters(), *head.target_projector.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in target)
    assert all(p.grad is not None for p in encoder.parameters())
    optimized = {id(p) for group in build_optimizer(head, load_config(None).optim).param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in target}

    task.loss(batch, encoder, head)  # a second micro-batch of the same step: no second update
    assert all(torch.equal(a, b) for a, b in zip(_target_weights(head), after, strict=True))


@pytest.mark.parametrize("num_clips", [2, 3])
def test_moco_enqueues_the_keys_after_computing_the_logits(num_clips: int) -> None:
    config = ClipContrastiveConfig(loss="moco", num_clips=num_clips, sampler="uniform", clip_len=2, queue_size=32,
                                   temperature=0.2)
    task = ClipContrastive(config)  # no augmentation: the forward can be repeated
    encoder, head = _perturbed(task)
    frames = torch.randint(0, 256, (4, num_clips * 2, 32, 32, 3), dtype=torch.uint8)
    old_queue = head.criterion.queue.clone()
    out = task.loss({"frames": frames}, encoder, head)

    x = encoder.inputs[0]  # the online encoder saw the query clips (clip 0) only
    clips = _clip_inputs(frames, num_clips)
    torch.testing.assert_close(x, clips[0])
    keys = F.normalize(head.embed_target(clips[1:].flatten(0, 1)), dim=1)
    added = 4 * (num_clips - 1)
    assert int(head.criterion.queue_ptr) == added
    torch.testing.assert_close(head.criterion.queue[:added], keys)
    torch.testing.assert_close(head.criterion.queue[added:], old_queue[added:])
    with torch.no_grad():
        q = head.project(encoder(x)).repeat(num_clips - 1, 1)
        logits = torch.cat([(q * keys).sum(1, keepdim=True), q @ old_queue.T], dim=1) / 0.2
        expected = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
    torch.testing.assert_close(out["loss"].detach(), expected)


def _clip_inputs(frames: torch.Tensor, num_clips: int) -> torch.Tensor:
    """uint8 [B, clips * L, H, W, C] -> unaugmented model input per clip [clips, B, C, L, H, W]."""
    clips = to_model_input(rearrange(frames, "b (k t) h w c -> (k b) t h w c", k=num_clips))
    return rearrange(clips, "(k b) c t h w -> k b c t h w", k=num_clips)


# --- through the trainer ---------------------------------------------------------------------------------


def tiny_config(synthav: Path, loss: str, *overrides: str):
    return load_config(ROOT / f"configs/pretrain/{CONFIGS[loss]}.yaml", [
        f"data.synthav_dir={synthav}", "data.frame_size=32", "data.batch_size=4", "data.num_workers=0",
        "task.clip_contrastive.clip_len=4", "task.clip_contrastive.queue_size=64", "train.log_every=1",
        *overrides])


@pytest.mark.parametrize("loss", list(CONFIGS))
def test_every_loss_trains_through_the_trainer(tiny_synthav: Path, tmp_path: Path, loss: str) -> None:
    config = tiny_config(tiny_synthav, loss, "train.max_steps=2")
    assert config.task.name == "clip_contrastive" and config.task.clip_contrastive.loss == loss
    checkpoint = pretrain(config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    state = torch.load(checkpoint, weights_only=True)["model"]
    has_target = any(k.startswith("head.target_encoder.") for k in state)
    assert has_target == (loss in ("moco", "byol"))
    encoder, _, mode, _ = load_encoder(checkpoint)  # transfer takes the online encoder
    assert mode == "clip"
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, state[f"encoder.{key}"])
    if has_target:
        assert not torch.equal(state["encoder.fc.0.weight"], state["head.target_encoder.fc.0.weight"])
    if loss == "moco":  # the queue advanced by the batch at each step
        assert int(state["head.criterion.queue_ptr"]) == 2 * 4

    # every trainable parameter gets a gradient: DDP finds no unused parameters
    task = build_task(config)
    rows = read_manifest(tiny_synthav / "manifest.csv", "pretrain")[:4]
    batch = collate([PretextDataset(rows, task, 32)[i] for i in range(4)])
    del batch["skipped"]
    model = TaskModel(task, build_video_encoder("tiny3d"))
    model(batch)["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


# --- DDP -------------------------------------------------------------------------------------------------

WORLD_SIZE = 2


def _ddp_worker(synthav: str, rank: int, port: int, out_dir: str) -> None:
    join_gloo(rank, WORLD_SIZE, port)
    try:
        for loss in ("nt_xent", "moco"):
            pretrain(tiny_config(Path(synthav), loss, "train.max_steps=2"), Path(out_dir) / loss)
        torch.save({"rank": rank}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        mdist.cleanup()


def test_two_process_gloo_ddp_steps(tiny_synthav: Path, tmp_path: Path) -> None:
    """Two optimizer steps under DDP: a parameter without gradient would fail the second one."""
    results = run_ranks(functools.partial(_ddp_worker, str(tiny_synthav)), tmp_path, WORLD_SIZE, 120.0)
    assert [r["rank"] for r in results] == [0, 1]
    for loss in ("nt_xent", "moco"):
        state = torch.load(tmp_path / loss / "checkpoint_000002.pt", weights_only=True)
        assert state["step"] == 2
        if loss == "moco":  # keys gathered from both ranks: 2 steps x 2 ranks x 4 samples
            assert int(state["model"]["head.criterion.queue_ptr"]) == 2 * WORLD_SIZE * 4
