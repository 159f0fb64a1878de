"""Cross-pixel optical-flow similarity (docs/methods.md#flow_similarity): the loss is least where the
embedding kernel reproduces the flow kernel, the flow of an encoded video points the way its square
moves, static pixels do not dominate the sample, the encoder never sees the flow's second frame, the
flow's cost against the decode (tools/bench_flow.py)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_init_checkpoint  # tests/ is on sys.path

from mmssl.cli import visualize
from mmssl.data.dataset import decode_window
from mmssl.data.manifest import ManifestRow
from mmssl.io import write_media
from mmssl.losses import CrossPixelFlowLoss
from mmssl.models import Tiny3D
from mmssl.tasks.flow_similarity import FlowSimilarity, FlowSimilarityConfig, balanced_pixels

ROOT = Path(__file__).resolve().parents[1]
SIZE, SIDE, STEP = 64, 10, 3  # frame side, the square's side, its step per frame (px)


def row(num_frames: int = 48) -> ManifestRow:
    return ManifestRow("video.mp4", fps=16.0, num_frames=num_frames, duration=num_frames / 16)


def two_groups(cosine: float, distance: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """8 pixels: 4 still, 4 moving `distance` px; embeddings e1 for the still ones and a unit vector at
    `cosine` to e1 for the moving ones."""
    flow = torch.tensor([[0.0, 0.0]] * 4 + [[distance, 0.0]] * 4)
    moving = torch.tensor([cosine, math.sqrt(1 - cosine ** 2), 0.0])
    embeddings = torch.stack([torch.tensor([1.0, 0.0, 0.0])] * 4 + [moving] * 4)
    return embeddings[None], flow[None]


def test_the_loss_is_least_where_the_embedding_kernel_reproduces_the_flow_kernel() -> None:
    loss_fn = CrossPixelFlowLoss(scale=10.0, sigma=1.0)
    matched = 1 - 2.0 ** 2 / (2 * 1.0 ** 2) / 10.0  # s (1 - cos) = d^2 / (2 sigma^2): the same columns
    embeddings, flow = two_groups(matched)
    log_phi, target = loss_fn.kernels(embeddings, flow)
    torch.testing.assert_close(log_phi.exp().masked_fill(torch.eye(8, dtype=torch.bool), 0), target)
    entropy = -(target * target.clamp_min(1e-30).log()).sum(1).mean()  # the least cross-entropy
    torch.testing.assert_close(loss_fn(embeddings, flow), entropy)
    for cosine in (matched - 0.3, matched + 0.15, -0.5):
        assert loss_fn(*two_groups(cosine)) > entropy + 1e-3
    noisy = (embeddings + 0.05 * torch.randn(embeddings.shape, generator=torch.Generator().manual_seed(0)))
    assert loss_fn(noisy, flow) > entropy


def test_balanced_pixels_half_moving_whatever_the_moving_area() -> None:
    rng = np.random.default_rng(0)
    moving = np.zeros(64 * 64, bool)
    moving[:40] = True  # 1% of the frame
    pixels = balanced_pixels(moving, 256, 0.5, rng)
    assert len(pixels) == 256 and moving[pixels].sum() == 128 and len(set(pixels[~moving[pixels]])) == 128
    for still in (True, False):  # nothing moves, or everything does: the whole sample from the one group
        assert len(set(balanced_pixels(np.full(100, not still), 16, 0.5, rng))) == 16


@pytest.fixture(scope="module")
def square_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An encoded video: a still textured background and a bright 10 px square moving 3 px right a frame."""
    rng = np.random.default_rng(0)
    background = np.repeat(np.repeat(rng.integers(40, 120, (SIZE // 4, SIZE // 4, 3)), 4, 0), 4, 1)
    frames = np.repeat(background[None], 8, 0).astype(np.uint8)
    for t in range(8):
        frames[t, 27:27 + SIDE, 10 + STEP * t:10 + STEP * t + SIDE] = 230
    return write_media(tmp_path_factory.mktemp("flow") / "square.mp4", frames, 16.0)


def test_the_flow_follows_the_square_and_static_pixels_do_not_dominate_the_sample(square_video: Path) -> None:
    task = FlowSimilarity(FlowSimilarityConfig(gap=1, num_pixels=64, motion_threshold=1.0))
    video = ManifestRow(str(square_video), fps=16.0, num_frames=8, duration=0.5)
    window = task.window(video, np.random.default_rng(0))
    assert np.array_equal(window.frames[1:] - window.frames[:1], [1])
    sample = task.make_sample(decode_window(video, window), np.random.default_rng(1))
    flow, pixels = sample["flow"], sample["pixels"]
    moving = flow.norm(dim=1) > 1.0
    assert sample["frames"].shape == (2, SIZE, SIZE, 3) and pixels.shape == (64,) and flow.shape == (64, 2)
    assert int(moving.sum()) == 32  # of the sample; the square is 2.4% of the frame
    x, y = pixels % SIZE, pixels // SIZE
    start = 10 + STEP * int(window.frames[0])
    margin = 6  # Farneback's flow spreads half its window onto the still pixels around the square
    assert torch.all((y[moving] >= 27 - margin) & (y[moving] < 27 + SIDE + margin))
    assert torch.all((x[moving] >= start - margin) & (x[moving] < start + SIDE + STEP + margin))
    assert flow[moving, 0].median() > 1.5 and flow[moving, 1].abs().median() < 0.5  # it moves right


@pytest.mark.parametrize("clip_len", [1, 3])
def test_the_encoder_never_sees_the_flows_second_frame(clip_len: int) -> None:
    task = FlowSimilarity(FlowSimilarityConfig(gap=4, clip_len=clip_len, stride=2, num_pixels=16))
    window = task.window(row(), np.random.default_rng(0))
    assert np.array_equal(np.diff(window.frames), [2] * (clip_len - 1) + [4])
    assert task.min_frames(16.0) == 2 * (clip_len - 1) + 1 + 4 and task.feature_mode == ("frames", "clip")[clip_len > 1]
    torch.manual_seed(0)
    encoder = Tiny3D(widths=(8, 16), dim=16)
    shown: list[torch.Tensor] = []
    encoder.features.register_forward_pre_hook(lambda module, args: shown.append(args[0]))
    frames = torch.randint(0, 256, (2, clip_len + 1, 32, 32, 3), dtype=torch.uint8)
    batch = {"frames": frames, "pixels": torch.randint(0, 32 * 32, (2, 16)), "flow": torch.randn(2, 16, 2)}
    out = task.loss(batch, encoder, task.build_head(encoder))
    assert shown[0].shape[2] == clip_len and torch.isfinite(out["loss"])
    assert 0 <= out["neighbour_share"] <= 1 and 0 <= out["neighbour_accuracy"] <= 1


def test_visualize_shows_the_sampled_pixels_and_the_flow(tiny_synthav: Path, tmp_path: Path) -> None:
    out = visualize.main(["--task", "flow_similarity", "--num", "2", f"data.synthav_dir={tiny_synthav}",
                          "data.frame_size=32", "--out", str(tmp_path / "flow.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = random_init_checkpoint("flow_similarity", tiny_synthav, tmp_path / "run/checkpoint_000000.pt")
    predicted = visualize.main(["--task", "flow_similarity", "--num", "2", "--checkpoint", str(checkpoint),
                                "--out", str(tmp_path / "predicted.png")])
    assert predicted.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and predicted.read_bytes() != out.read_bytes()


def test_predicted_views_colour_each_pixel_by_its_embeddings_principal_components() -> None:
    """A square moving right on a still background: the frame, its flow (the square's pixels coloured),
    and every pixel's embedding as colours, the first component spanning the full range."""
    task = FlowSimilarity(FlowSimilarityConfig(gap=1, embed_dim=4, hidden_dim=8))
    torch.manual_seed(0)
    encoder = Tiny3D(widths=(8, 16), dim=16).eval()
    frames = torch.zeros(1, 2, 32, 32, 3, dtype=torch.uint8)
    frames[0, 0, 8:18, 8:18], frames[0, 1, 8:18, 11:21] = 255, 255
    with torch.no_grad():
        ((_, frame), (flow_caption, flow), (caption, colours)), = task.predicted_views(
            {"frames": frames}, encoder, task.build_head(encoder))
    assert torch.equal(frame, frames[0, 0]) and flow_caption == "flow to +1"
    assert flow.shape == colours.shape == (32, 32, 3) and colours.dtype == torch.uint8
    assert flow[12, 12].max() > 0 and flow[28, 28].max() == 0  # the square moves, the corner does not
    assert colours[..., 0].min() == 0 and colours[..., 0].max() == 255  # 2nd-98th percentile stretched
    assert 0 < float(caption.split("(")[1].split("%")[0]) <= 100


def test_bench_flow_measures_the_flow_against_the_decode(tiny_synthav: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench_flow.json"
    spec = importlib.util.spec_from_file_location("bench_flow", ROOT / "tools/bench_flow.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # in this process: a subprocess would spend its time importing torch
    bench.main(["--synthav-dir", str(tiny_synthav), "--videos", "4", "--frame-sizes", "32", "--out", str(out)])
    (result,) = json.loads(out.read_text())["results"]
    assert result["frame_size"] == 32 and result["decode_ms"] > 0 and result["flow_ms"] > 0
    assert result["flow_over_decode"] == pytest.approx(result["flow_ms"] / result["decode_ms"])
