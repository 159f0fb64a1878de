"""Inpainting and denoising (docs/methods.md#inpainting): the loss reads the hole only, the masks hide
their share, the hole is filled with the visible pixels' mean colour, the decoder starts as the identity."""
from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mmssl.losses.region_mse
from mmssl.config import ConfigError
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.manifest import ManifestRow
from mmssl.losses.region_mse import region_mse
from mmssl.models import build_video_encoder
from mmssl.tasks.inpainting import Inpainting, InpaintingConfig, mean_fill
from mmssl.tasks.multitask import MultiTask
from mmssl.tasks.super_resolution import SuperResolution, SuperResolutionConfig
from mmssl.transforms.video import to_model_input, unnormalize

TINY = dict(clip_len=4, decoder_width=16, decoder_stages=1)


def clip_of(video: torch.Tensor) -> DecodedClip:
    row = ManifestRow("clip.mp4", split="pretrain", num_frames=len(video), fps=8.0)
    return DecodedClip(video, None, Window(frames=np.arange(len(video))), row)


def test_the_loss_ignores_the_targets_of_visible_pixels() -> None:
    """Change every visible pixel of the clean clip: with the same prediction, the loss is the same;
    change one hidden pixel: it is not."""
    torch.manual_seed(0)
    prediction, clean = torch.rand(2, 3, 4, 16, 16), torch.rand(2, 3, 4, 16, 16)
    hidden = torch.zeros(2, 1, 1, 16, 16, dtype=torch.bool)
    hidden[..., 4:10, 3:12] = True
    changed = torch.where(hidden, clean, torch.rand_like(clean))
    assert not torch.equal(changed, clean)
    assert region_mse(prediction, changed, hidden) == region_mse(prediction, clean, hidden)
    changed[0, 1, 2, 5, 5] += 0.5
    assert region_mse(prediction, changed, hidden) != region_mse(prediction, clean, hidden)
    # and the squared error over the hole's pixels, each counted once per channel
    expected = ((prediction - clean)[:, :, :, 4:10, 3:12] ** 2).mean()
    torch.testing.assert_close(region_mse(prediction, clean, hidden), expected)


def test_region_mse_examples_run() -> None:
    failed, attempted = doctest.testmod(mmssl.losses.region_mse)
    assert attempted > 0 and failed == 0


def test_through_the_task_visible_pixels_change_nothing_but_the_fill() -> None:
    """Clips that differ only inside the hole give the encoder the same input; the hole's content
    changes the loss."""
    task = Inpainting(InpaintingConfig(**TINY))
    encoder = build_video_encoder("tiny3d", widths=(8, 16))
    head = task.build_head(encoder).eval()
    encoder.eval()
    frames = torch.randint(0, 256, (2, 4, 16, 16, 3), dtype=torch.uint8)
    mask = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    mask[:, :, 4:10, 4:10] = True
    other = frames.clone()
    other[:, :, 4:10, 4:10] = 255 - other[:, :, 4:10, 4:10]
    with torch.no_grad():
        a, b = (task.restore({"frames": f, "mask": mask}, encoder, head) for f in (frames, other))
        # the fill is the mean of the visible pixels, which did not change
        assert torch.equal(a.degraded.pixels, b.degraded.pixels) and torch.equal(a.restored, b.restored)
        assert task.loss({"frames": frames, "mask": mask}, encoder, head)["loss"] != task.loss(
            {"frames": other, "mask": mask}, encoder, head)["loss"]


@pytest.mark.parametrize("corruption", ["region", "pixels"])
def test_masks_hide_their_share_over_many_draws(corruption: str) -> None:
    task = Inpainting(InpaintingConfig(**TINY, corruption=corruption, share=[0.2, 0.3]))
    rng = np.random.default_rng(0)
    video = torch.zeros(4, 32, 32, 3, dtype=torch.uint8)
    shares = []
    for _ in range(200):
        mask = task.make_sample(clip_of(video), rng)["mask"]
        assert mask.shape == ((1, 32, 32) if corruption == "region" else (4, 32, 32))
        per_frame = mask.flatten(1).float().mean(1)
        assert torch.all(per_frame == per_frame[0])  # every frame hides the same share
        shares.append(float(per_frame[0]))
    shares = np.array(shares)
    assert shares.min() >= 0.2 - 1 / 1024 and shares.max() <= 0.3 + 1 / 1024
    assert abs(shares.mean() - 0.25) < 0.01 and shares.std() > 0.02  # uniform in the range: std 0.029


def test_a_region_is_a_few_blobs_not_scattered_pixels() -> None:
    rng = np.random.default_rng(1)
    mask = Inpainting(InpaintingConfig(**TINY)).make_sample(clip_of(torch.zeros(1, 32, 32, 3, dtype=torch.uint8)),
                                                            rng)["mask"][0]
    # hidden pixels whose four neighbours (past the border: itself) are hidden too: most of a blob's,
    # almost none (0.25^4) of scattered pixels'
    m = F.pad(mask[None].float(), (1, 1, 1, 1), mode="replicate")[0].bool()
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    assert inner.sum() > 0.6 * mask.sum()


def test_the_hole_is_filled_with_the_mean_colour_of_the_visible_pixels() -> None:
    pixels = torch.rand(2, 3, 3, 8, 8)
    hidden = torch.rand(2, 1, 3, 8, 8) < 0.3
    filled = mean_fill(pixels, hidden)
    for b in range(2):
        visible = ~hidden[b, 0]
        for c in range(3):
            torch.testing.assert_close(filled[b, c][hidden[b, 0]],
                                       pixels[b, c][visible].mean().expand(int(hidden[b].sum())))
            assert torch.equal(filled[b, c][visible], pixels[b, c][visible])


def test_the_decoder_starts_at_the_trivial_predictor_and_gaussian_noise_reads_every_pixel() -> None:
    torch.manual_seed(0)
    for corruption in ("region", "gaussian"):
        task = Inpainting(InpaintingConfig(**TINY, corruption=corruption, noise_std=0.2))
        encoder = build_video_encoder("tiny3d", widths=(8, 16))
        frames = torch.randint(0, 256, (2, 4, 16, 16, 3), dtype=torch.uint8)
        batch = {"frames": frames, **({"mask": torch.rand(2, 1, 16, 16) < 0.25} if corruption == "region" else {})}
        out = task.loss(batch, encoder, task.build_head(encoder))
        assert out["loss"] == out["trivial_loss"] > 0
    restored = task.restore({"frames": frames}, encoder, task.build_head(encoder))
    clean = unnormalize(to_model_input(frames))
    torch.testing.assert_close(restored.clean, clean)
    noise = restored.degraded.pixels - clean
    assert 0.1 < float(noise.std()) < 0.2  # N(0, 0.2^2), less where clamping to [0, 1] cuts it
    assert restored.degraded.region.all()


def test_a_share_range_outside_0_1_is_refused() -> None:
    with pytest.raises(ConfigError, match="share"):
        Inpainting(InpaintingConfig(share=[0.3, 0.2]))


def test_inpainting_and_super_resolution_train_together_on_one_encoder() -> None:
    tasks = {"inpainting": Inpainting(InpaintingConfig(**TINY)),
             "super_resolution": SuperResolution(SuperResolutionConfig(clip_len=4, decoder_width=16, decoder_stages=1))}
    task = MultiTask(tasks, {"inpainting": 1.0, "super_resolution": 0.5})
    encoder = build_video_encoder("tiny3d", widths=(8, 16))
    head = task.build_head(encoder)
    frames = torch.randint(0, 256, (2, 4, 16, 16, 3), dtype=torch.uint8)
    mask = torch.stack([tasks["inpainting"].make_sample(clip_of(f), np.random.default_rng(i))["mask"]
                        for i, f in enumerate(frames)])
    out = task.loss({"inpainting/frames": frames, "inpainting/mask": mask, "super_resolution/frames": frames},
                    encoder, head)
    torch.testing.assert_close(out["loss"], out["inpainting/loss"] + 0.5 * out["super_resolution/loss"])
    out["loss"].backward()
    assert set(task.pretext_metrics()) >= {"inpainting/loss", "super_resolution/loss"}
