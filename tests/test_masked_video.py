"""VideoMAE: tube masks, tubelet targets, loss on masked tokens only, visible-only encoder, decoder
width, ViT presets, learning to fill masked tubes, one training step and the reconstruction drawing."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange, repeat

from mmssl.config import load_config
from mmssl.data.clip import DecodedClip, Window
from mmssl.engine.trainer import pretrain
from mmssl.eval.transfer import load_encoder
from mmssl.models import VIT_PRESETS, VideoViT, build_video_encoder
from mmssl.models.vit import gather_tokens, sincos_3d, split_tokens
from mmssl.tasks import build_task
from mmssl.tasks.masked_video import (
    MaskedVideo,
    MaskedVideoConfig,
    masked_mse,
    reconstruct,
    tube_mask,
    tubelet_targets,
    unnormalize,
)
from mmssl.transforms.video import VideoAugment, to_model_input

ROOT = Path(__file__).resolve().parents[1]


def clip_of(frames: torch.Tensor) -> DecodedClip:
    return DecodedClip(frames, None, Window(np.arange(len(frames))), None)


def test_videomae_tube_mask_16x224() -> None:
    task = MaskedVideo(MaskedVideoConfig(clip_len=16, mask_ratio=0.9), (2, 16, 16))
    sample = task.make_sample(clip_of(torch.zeros(16, 224, 224, 3, dtype=torch.uint8)), np.random.default_rng(0))
    mask = sample["mask"]
    assert mask.dtype == torch.bool and mask.shape == (8, 14, 14) and mask.numel() == 1568
    assert int(mask.sum()) == 1408 and int((~mask).sum()) == 160
    assert all(torch.equal(mask[t], mask[0]) for t in range(8))  # a tube: the same patches in every slot
    assert sample["frames"].dtype == torch.uint8
    again = task.make_sample(clip_of(sample["frames"]), np.random.default_rng(0))["mask"]
    assert torch.equal(again, mask)  # drawn from the sample's rng


def test_every_patch_is_masked_equally_often() -> None:
    rng = np.random.default_rng(1)
    draws = torch.stack([tube_mask((2, 14, 14), 0.9, rng) for _ in range(3000)])
    assert torch.all(draws.sum((2, 3)) == 176)  # int(0.9 * 196) per slot, every draw
    assert int(tube_mask((2, 8, 8), 0.9, rng).sum()) == 2 * 57  # int(57.6): rounded down, as VideoMAE
    assert torch.equal(draws[:, 0], draws[:, 1])
    share = draws[:, 0].float().mean(0)
    assert float((share - 176 / 196).abs().max()) < 0.03  # binomial std 0.0055 per patch
    assert len({m.numpy().tobytes() for m in draws[:50, 0]}) == 50


def test_a_ratio_that_masks_no_patch_is_rejected() -> None:
    """int(ratio * h * w) = 0 would leave the loss empty (NaN): mask_ratio 0, or 0.05 of a 4x4 grid."""
    with pytest.raises(ValueError, match="0 < mask_ratio < 1"):
        MaskedVideo(MaskedVideoConfig(mask_ratio=0.0), (2, 16, 16))
    task = MaskedVideo(MaskedVideoConfig(clip_len=4, mask_ratio=0.05), (2, 8, 8))
    with pytest.raises(ValueError, match="masks no patch of a 4x4"):
        task.make_sample(clip_of(torch.zeros(4, 32, 32, 3, dtype=torch.uint8)), np.random.default_rng(0))
    assert int(task.make_sample(clip_of(torch.zeros(4, 64, 64, 3, dtype=torch.uint8)),
                                np.random.default_rng(0))["mask"].sum()) == 2 * 3  # int(0.05 * 64) per slot


@pytest.mark.parametrize("normalize", [True, False])
def test_targets_per_tubelet_and_channel(normalize: bool) -> None:
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 4, 16, 24, dtype=torch.float64) ** 2  # B, C, T, H, W; tubelet 2x8x8
    target = tubelet_targets(pixels, (2, 8, 8), normalize).numpy()
    assert target.shape == (2, 2 * 2 * 3, 2 * 8 * 8 * 3)
    x = pixels.numpy()
    for b, t, h, w in [(0, 0, 0, 0), (1, 1, 1, 2), (0, 1, 0, 1), (1, 0, 1, 0)]:
        token = (t * 2 + h) * 3 + w  # (t, h, w) grid order
        for c in range(3):
            block = x[b, c, 2 * t:2 * t + 2, 8 * h:8 * h + 8, 8 * w:8 * w + 8].reshape(-1)  # (t, p, p) order
            if normalize:
                block = (block - block.mean()) / (block.std(ddof=1) + 1e-6)
            np.testing.assert_allclose(target[b, token, c::3], block, rtol=1e-10, atol=1e-12)
    mask = torch.stack([tube_mask((2, 2, 3), 0.5, np.random.default_rng(s)).flatten() for s in (0, 1)])
    visible = ~mask
    _, masked = split_tokens(mask, 6)
    perfect = torch.from_numpy(target)[mask].reshape(2, 6, -1)  # a prediction equal to the masked targets
    torch.testing.assert_close(reconstruct(perfect, pixels, masked, (2, 8, 8), normalize), pixels)
    grey = reconstruct(torch.full_like(perfect, 0.5), pixels, masked, (2, 8, 8), normalized=False)
    assert torch.equal(grey == 0.5, repeat(~visible, "b (t h w) -> b 3 (t 2) (h 8) (w 8)", t=2, h=2))


def test_split_tokens_indexes_visible_then_masked_in_grid_order() -> None:
    mask = torch.stack([tube_mask((2, 3, 3), 0.6, np.random.default_rng(s)).reshape(-1) for s in range(4)])
    keep, masked = split_tokens(mask, 2 * 5)
    assert keep.shape == (4, 8) and masked.shape == (4, 10)
    for row, k, m in zip(mask, keep, masked):
        assert k.tolist() == torch.nonzero(~row).flatten().tolist()
        assert m.tolist() == torch.nonzero(row).flatten().tolist()


def test_loss_is_the_mse_over_masked_tokens_only() -> None:
    torch.manual_seed(0)
    mask = torch.stack([tube_mask((2, 3, 3), 0.6, np.random.default_rng(s)).reshape(-1) for s in (0, 1)])
    visible = ~mask
    _, masked = split_tokens(mask, int(mask[0].sum()))
    target = torch.randn(2, 18, 5)
    prediction = torch.randn(2, int(mask[0].sum()), 5)
    loss = masked_mse(prediction, target, masked)
    direct = np.mean([((prediction[b, i] - target[b, n]) ** 2).mean() for b in range(2)
                      for i, n in enumerate(torch.nonzero(~visible[b]).flatten())])
    assert loss.item() == pytest.approx(float(direct), rel=1e-6)
    changed = target.clone()
    changed[visible] += 10.0  # every unmasked target
    assert torch.equal(masked_mse(prediction, changed, masked), loss)
    changed = target.clone()
    changed[0, torch.nonzero(mask[0])[0, 0]] += 1.0  # one masked target
    assert masked_mse(prediction, changed, masked) != loss


def tiny_batch(frame_size: int = 32, clip_len: int = 8, seed: int = 0) -> tuple[MaskedVideo, dict]:
    task = MaskedVideo(MaskedVideoConfig(clip_len=clip_len, mask_ratio=0.75), (2, 8, 8),
                       VideoAugment(crop_scale=(0.3, 0.6)))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    samples = [task.make_sample(clip_of(torch.randint(0, 256, (clip_len, frame_size, frame_size, 3),
                                                      dtype=torch.uint8, generator=gen)), rng) for _ in range(3)]
    return task, {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def test_encoder_sees_visible_tokens_only() -> None:
    task, batch = tiny_batch()
    task.augment = None  # the model input is the decoded clip itself
    torch.manual_seed(0)
    encoder = build_video_encoder("vit_tiny").eval()
    decoder = task.build_head(encoder)
    mask = batch["mask"]  # [3, 4, 4, 4]
    visible, _ = task.split(mask)
    tokens = encoder.forward_features(to_model_input(batch["frames"]), visible)
    assert tokens.shape == (3, 4 * 4, 192)  # 4 visible patches x 4 temporal slots
    in_masked_tube = repeat(mask, "b t h w -> b (t 2) (h 8) (w 8) 1")  # the frames' [B, T, H, W, C] layout
    noise = torch.randint_like(batch["frames"], 256)
    masked_changed = {**batch, "frames": torch.where(in_masked_tube, noise, batch["frames"])}
    visible_changed = {**batch, "frames": torch.where(in_masked_tube, batch["frames"], noise)}
    assert torch.equal(encoder.forward_features(to_model_input(masked_changed["frames"]), visible), tokens)
    assert not torch.allclose(encoder.forward_features(to_model_input(visible_changed["frames"]), visible), tokens)
    assert not torch.allclose(encoder.forward_features(to_model_input(masked_changed["frames"])),
                              encoder.forward_features(to_model_input(batch["frames"])))  # all tokens: it does see them
    with torch.no_grad():  # the masked tubes are what the loss asks for
        assert task.loss(masked_changed, encoder, decoder)["loss"] != task.loss(batch, encoder, decoder)["loss"]


@torch.no_grad()
def test_task_loss_uses_the_cropped_clip_and_masked_tubelets() -> None:
    task, batch = tiny_batch(seed=3)
    assert task.augment.brightness == task.augment.contrast == 0 and task.augment.crop_scale == (0.3, 0.6)
    torch.manual_seed(0)
    encoder = build_video_encoder("vit_tiny")
    decoder = task.build_head(encoder)
    torch.manual_seed(7)
    loss = task.loss(batch, encoder, decoder)["loss"]
    torch.manual_seed(7)  # the same crop and flip
    x = to_model_input(batch["frames"], task.augment)
    assert x.shape[-3:] == (8, 32, 32)  # the crop keeps the token grid
    keep, masked = task.split(batch["mask"])
    prediction = decoder(encoder.forward_features(x, keep), keep, masked, (4, 4, 4))
    pixels = unnormalize(x)
    assert float(pixels.min()) > -1e-5 and float(pixels.max()) < 1 + 1e-5
    target = tubelet_targets(pixels, (2, 8, 8), normalize=True)[batch["mask"].flatten(1)].reshape(prediction.shape)
    assert float(loss) == pytest.approx(float(((prediction - target) ** 2).mean()), rel=1e-5)


def test_vit_presets_decoder_width_and_any_grid() -> None:
    assert VIT_PRESETS["vit_base"].dim == 768 and VIT_PRESETS["vit_base"].depth == 12
    assert VIT_PRESETS["vit_base"].heads == 12 and VIT_PRESETS["vit_base"].tubelet == (2, 16, 16)
    small = VIT_PRESETS["vit_small"]
    assert (small.dim, small.depth, small.heads) == (384, 12, 6)
    task = MaskedVideo(MaskedVideoConfig(), (2, 16, 16))
    with torch.device("meta"):  # shapes and sizes without allocating or initialising weights
        base = build_video_encoder("vit_base")
        assert 86e6 < sum(p.numel() for p in base.parameters()) < 87e6  # ViT-B on 2x16x16 tubelets (VideoMAE: 87M)
        assert base(torch.randn(1, 3, 16, 224, 224)).shape == (1, 768)
        assert base.forward_features(torch.randn(1, 3, 16, 224, 224)).shape == (1, 1568, 768)
        small = build_video_encoder("vit_small")
    for encoder in (small, base):
        decoder = task.build_head(encoder)
        assert decoder.dim == encoder.feature_dim // 2 and len(decoder.blocks) == 4
        assert decoder.head.out_features == 3 * 2 * 16 * 16
        assert decoder.blocks[0].heads == encoder.heads // 2  # 64-dim heads, as VideoMAE's decoder
    with pytest.raises(ValueError, match="tubelet"):
        task.build_head(build_video_encoder("vit_tiny"))
    tiny = build_video_encoder("vit_tiny")
    assert tiny.feature_dim == 192 and tiny.tubelet == (2, 8, 8)
    for shape in [(2, 3, 16, 64, 64), (2, 3, 8, 32, 48), (2, 3, 1, 64, 64)]:  # any grid; T=1 is stretched
        assert tiny(torch.randn(shape)).shape == (2, 192)
    learned = build_video_encoder("vit_tiny", pos_embed="learned")
    assert learned.pos_embed.table.shape == (1, 192, 8, 8, 8)
    assert learned.forward_features(torch.randn(1, 3, 4, 32, 32)).shape == (1, 2 * 4 * 4, 192)
    code = sincos_3d((2, 3, 4), 12)  # 4 channels each for t, h, w
    assert code.shape == (24, 12)
    grid = code.reshape(2, 3, 4, 12)
    assert torch.equal(grid[:, :1, :1, :4].expand(2, 3, 4, 4), grid[..., :4])  # depends on t only
    assert torch.equal(grid[:1, :, :1, 4:8].expand(2, 3, 4, 4), grid[..., 4:8])
    assert torch.equal(grid[:1, :1, :, 8:].expand(2, 3, 4, 4), grid[..., 8:])
    assert torch.allclose(code[0], torch.tensor([0, 0, 1, 1] * 3, dtype=torch.float))  # sin 0, cos 0


def test_one_training_step_and_drawing(tiny_synthav: Path, tmp_path: Path) -> None:
    config = load_config(ROOT / "configs/pretrain/masked_video.yaml", [
        "data.frame_size=32", "data.batch_size=4", "data.num_workers=0", "train.max_steps=1",
        "train.log_every=1", f"data.synthav_dir={tiny_synthav}"])
    assert isinstance(build_task(config), MaskedVideo)
    checkpoint = pretrain(config, tmp_path / "run")
    record = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[0])
    assert record["step"] == 1 and np.isfinite(record["loss"])
    state = torch.load(checkpoint, weights_only=True)["model"]
    assert any(k.startswith("head.mask_token") for k in state) and any(k.startswith("encoder.blocks") for k in state)
    encoder, name, mode, _ = load_encoder(checkpoint)
    assert isinstance(encoder, VideoViT) and name == "vit_tiny" and mode == "clip"
    spec = importlib.util.spec_from_file_location("visualize", ROOT / "tools/visualize.py")
    visualize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(visualize)
    out = visualize.main(["--task", "masked_video", "--num", "2", "--checkpoint", str(tmp_path / "run"),
                          "--out", str(tmp_path / "recon.png")])  # the run's config.json: its SynthAV and frame size
    assert out.stat().st_size > 0


def ramp_clips(count: int, frames: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 [count, frames, size, size, 3]: per clip a random colour plus a linear ramp of random
    direction (0.25 from the centre to an edge), the same in every frame."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    colour = torch.rand(count, 3, generator=generator) * 0.5 + 0.25
    angle = torch.rand(count, generator=generator) * 2 * torch.pi
    ramp = 0.25 * (angle.cos()[:, None, None] * xs + angle.sin()[:, None, None] * ys)
    pixels = colour[:, None, None, None, :] + ramp[:, None, :, :, None]
    return repeat(pixels, "n 1 h w c -> n t h w c", t=frames).mul(255).round().clamp(0, 255).to(torch.uint8)


def test_training_fills_masked_tubes_from_the_visible_ones() -> None:
    """End to end (mask, visible-only encoder, decoder, targets): on clips whose masked tubes follow
    from the visible ones (a colour and a ramp), training takes the masked MSE far below the best
    that ignores position, the clip's own mean colour (a predictor that sees the masked pixels too)."""
    torch.manual_seed(0)
    frames, size, tubelet = 4, 16, (2, 4, 4)
    encoder = VideoViT(dim=64, depth=2, heads=2, tubelet=tubelet, num_frames=frames, image_size=size)
    task = MaskedVideo(MaskedVideoConfig(clip_len=frames, mask_ratio=0.75, decoder_depth=1, norm_target=False),
                       tubelet)
    head = task.build_head(encoder)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=2e-3, weight_decay=0.0)
    steps = 600
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.02, total_iters=steps)
    generator, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    grid = (frames // tubelet[0], size // tubelet[1], size // tubelet[2])

    def batch(count: int) -> dict[str, torch.Tensor]:
        masks = torch.stack([tube_mask(grid, task.config.mask_ratio, rng) for _ in range(count)])
        return {"frames": ramp_clips(count, frames, size, generator), "mask": masks}

    for _ in range(steps):
        loss = task.loss(batch(32), encoder, head)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    test = batch(256)
    with torch.no_grad():
        trained = task.loss(test, encoder, head)["loss"].item()
    pixels = rearrange(test["frames"].float() / 255, "n t h w c -> n c t h w")
    _, masked = task.split(test["mask"])
    clip_mean = pixels.mean((2, 3, 4), keepdim=True).expand_as(pixels)
    mean_colour = masked_mse(gather_tokens(tubelet_targets(clip_mean, tubelet, False), masked),
                             tubelet_targets(pixels, tubelet, False), masked).item()
    assert trained < 0.3 * mean_colour, (trained, mean_colour)  # 0.13 here; 0.64 with a misaligned decoder
