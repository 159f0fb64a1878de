"""Super-resolution (docs/methods.md#super_resolution): the low-resolution input is the blurred frame
sampled at the block centres, blurred by the drawn kernel; frame interpolation's target is exactly the
dropped frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmssl.cli import visualize
from mmssl.config import ConfigError
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.manifest import ManifestRow
from mmssl.models import build_video_encoder
from mmssl.tasks.super_resolution import (
    SuperResolution,
    SuperResolutionConfig,
    kernel_size,
    low_resolution,
    upsample,
)
from mmssl.transforms.video import to_model_input, unnormalize

TINY = dict(decoder_width=16, decoder_stages=1)


def gaussian(sigma: float, size: int) -> np.ndarray:
    """The sampled, normalised 1-d Gaussian of a `size`-tap kernel."""
    x = np.arange(size) - size // 2
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


@pytest.mark.parametrize("factor", [2, 4])
def test_the_low_resolution_frame_is_the_blurred_frame_at_the_block_centres(factor: int) -> None:
    """An impulse in the middle of a frame: its blur is the outer product of the two axes' Gaussians,
    and each low-resolution pixel is the blur at its block's centre (the mean of the 2x2 pixels there)."""
    sigma_y, sigma_x = 0.5 * factor, 0.3 * factor
    size = kernel_size(max(sigma_y, sigma_x))
    frame = torch.zeros(1, 1, 1, 32, 32)
    frame[..., 16, 16] = 1
    small = low_resolution(frame, factor, torch.tensor([[sigma_y, sigma_x]]), size)
    assert small.shape == (1, 1, 1, 32 // factor, 32 // factor)
    blurred = np.zeros((32, 32))
    half = size // 2
    blurred[16 - half:16 + half + 1, 16 - half:16 + half + 1] = np.outer(gaussian(sigma_y, size), gaussian(sigma_x, size))
    centres = np.arange(32 // factor) * factor + factor // 2  # the pixel after each block's centre
    expected = sum(blurred[np.ix_(centres - dy, centres - dx)] for dy in (0, 1) for dx in (0, 1)) / 4
    np.testing.assert_allclose(small[0, 0, 0].numpy(), expected, atol=1e-6)


def test_the_encoder_sees_the_upsampled_degradation_with_the_drawn_kernel() -> None:
    task = SuperResolution(SuperResolutionConfig(**TINY, factor=4, sigma=[0.3, 0.7]))
    frames = torch.randint(0, 256, (3, 4, 32, 32, 3), dtype=torch.uint8)
    clean = unnormalize(to_model_input(frames))
    torch.manual_seed(5)
    degraded = task.degrade(clean, {"frames": frames})
    torch.manual_seed(5)
    sigma = task.draw_sigma(3)
    assert torch.all((sigma >= 0.3 * 4) & (sigma <= 0.7 * 4)) and not torch.equal(sigma[0], sigma[1])
    expected = upsample(low_resolution(clean, 4, sigma, kernel_size(0.7 * 4)), (32, 32))
    assert torch.equal(degraded.pixels, expected) and degraded.region.all()
    # a uniform clip stays uniform: the kernel sums to 1 and the borders are reflected
    grey = torch.full((1, 3, 2, 32, 32), 0.4)
    torch.testing.assert_close(task.degrade(grey, {}).pixels, grey)


def test_frame_interpolation_targets_exactly_the_dropped_frames() -> None:
    task = SuperResolution(SuperResolutionConfig(**TINY, clip_len=5, mode="temporal"))
    clean = torch.rand(2, 3, 5, 8, 8)
    degraded = task.degrade(clean, {})
    for t in range(5):
        assert torch.equal(degraded.pixels[:, :, t], clean[:, :, t - t % 2])  # the kept frame before it
    assert degraded.region.flatten().tolist() == [False, True, False, True, False]
    # the loss reads the dropped frames 1 and 3 and nothing else
    encoder = build_video_encoder("tiny3d", widths=(8, 16))
    frames = torch.randint(0, 256, (2, 5, 16, 16, 3), dtype=torch.uint8)
    out = task.loss({"frames": frames}, encoder, task.build_head(encoder))
    pixels = unnormalize(to_model_input(frames))
    expected = torch.stack([(pixels[:, :, t] - pixels[:, :, t - 1]).pow(2).mean() for t in (1, 3)]).mean()
    torch.testing.assert_close(out["trivial_loss"], expected)
    assert out["loss"] == out["trivial_loss"]  # the decoder starts as the identity: the repeated frame


def test_settings_it_cannot_run_are_refused() -> None:
    with pytest.raises(ConfigError, match="factor"):
        SuperResolution(SuperResolutionConfig(factor=3))
    with pytest.raises(ConfigError, match="clip_len"):
        SuperResolution(SuperResolutionConfig(mode="temporal", clip_len=1))
    with pytest.raises(ValueError, match="divide"):
        SuperResolution(SuperResolutionConfig(factor=4)).degrade(torch.rand(1, 3, 2, 30, 30), {})


def test_visualize_draws_input_restoration_and_target_of_the_dropped_frames(tiny_synthav: Path,
                                                                             tmp_path: Path) -> None:
    task = SuperResolution(SuperResolutionConfig(**TINY, clip_len=6, mode="temporal"))
    video = torch.randint(0, 256, (6, 16, 16, 3), dtype=torch.uint8)
    row = ManifestRow("clip.mp4", split="pretrain", num_frames=12, fps=8.0)
    clip = DecodedClip(video, None, Window(frames=np.arange(0, 12, 2)), row)  # frames 0, 2, ..., 10 of the video
    fig = visualize._draw_restorations(task, [(clip, {"frames": video})], "tiny3d", None, seed=0)
    titles = [ax.get_title(loc="left").split("\n")[0] for ax in fig.axes]
    # the dropped frames are the clip's 2nd, 4th and 6th: frames 2, 6 and 10 of the video
    assert titles == [f"{what} #{frame}" for frame in (2, 6, 10) for what in ("input", "restored", "target")]
    images = [ax.get_images()[0].get_array() for ax in fig.axes]
    np.testing.assert_allclose(images[2], video[1].numpy() / 255, atol=1e-6)  # the target: the dropped frame
    np.testing.assert_allclose(images[0], video[0].numpy() / 255, atol=1e-6)  # the input: the frame before it
    out = visualize.main(["--task", "super_resolution", "--num", "2", f"data.synthav_dir={tiny_synthav}",
                          "data.frame_size=32", "--out", str(tmp_path / "sr.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
