"""Colorization (docs/methods.md#colorization): Lab through kornia, the soft targets over the in-gamut
bins, the rebalancing weights, near-grey frames, and an encoder that sees the lightness only; video
colorization by pointing (docs/methods.md#video_colorization)."""
from __future__ import annotations

import numpy as np
import torch
from kornia.color import lab_to_rgb, rgb_to_lab

from mmssl.cli import visualize
from mmssl.cluster import kmeans
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.manifest import ManifestRow
from mmssl.models import build_video_encoder
from mmssl.tasks.colorization import (
    Colorization,
    ColorizationConfig,
    in_gamut_bins,
    rebalanced_constant,
    rebalancing_weights,
    smooth_prior,
    soft_encode,
)
from mmssl.tasks.video_colorization import VideoColorization, VideoColorizationConfig, pointing, pointing_nll
from mmssl.transforms.inputs import front_end
from mmssl.transforms.video import lab, normalize

TINY = dict(clip_len=2, decoder_width=16, decoder_stages=1)


def test_lab_round_trip_and_known_colours() -> None:
    rgb = torch.rand(2, 3, 3, 8, 8)
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(rgb.flatten(2, 3))).view_as(rgb), rgb, atol=1e-4, rtol=0)
    known = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).T.reshape(1, 3, 1, 1, 3)
    expected = torch.tensor([[100.0, 0.0, 0.0], [53.24, 80.09, 67.20], [32.30, 79.19, -107.86]])  # sRGB, D65
    torch.testing.assert_close(lab(known)[0, :, 0, 0].T, expected, atol=0.05, rtol=0)


def test_the_in_gamut_bins_come_from_the_colour_space() -> None:
    centres = in_gamut_bins(10.0)
    assert 200 < len(centres) < 320 and torch.all(centres.remainder(10) == 0)  # Zhang et al. count 313
    assert (centres == 0).all(1).any()  # grey
    assert not (centres == torch.tensor([-100.0, 100.0])).all(1).any()  # no sRGB colour is that green-yellow
    ab = lab(torch.rand(1, 3, 1, 32, 32))[:, 1:].flatten(2).squeeze(0).T
    assert torch.cdist(ab, centres).min(1).values.max() <= 10 / 2 ** 0.5 + 1e-4  # every colour has its cell


def test_the_soft_target_sums_to_1_and_peaks_at_the_true_bin() -> None:
    centres = in_gamut_bins(10.0)
    ab = lab(torch.rand(1, 3, 1, 16, 16))[:, 1:].flatten(2).squeeze(0).T
    index, weights = soft_encode(ab, centres, neighbours=5, sigma=5.0)
    torch.testing.assert_close(weights.sum(1), torch.ones(len(ab)))
    true_bin = torch.cdist(ab, centres).argmin(1)
    assert torch.equal(index[torch.arange(len(ab)), weights.argmax(1)], true_bin)
    assert torch.all(weights[:, 0] >= weights[:, 1:].max(1).values)


def test_the_rebalancing_weights_have_mean_1_under_the_prior() -> None:
    centres = in_gamut_bins(10.0)
    counts = torch.zeros(len(centres))
    counts[:20] = torch.arange(1.0, 21.0) ** 3  # a few common colours
    prior = smooth_prior(counts, centres, sigma=5.0)
    torch.testing.assert_close(prior.sum(), torch.tensor(1.0))
    for share in (0.1, 0.5, 1.0):
        w = rebalancing_weights(prior, share)
        torch.testing.assert_close((prior * w).sum(), torch.tensor(1.0))
    w = rebalancing_weights(prior, 0.5)
    assert w[prior.argmax()] < 1 < w[prior.argmin()]  # rare colours weigh more
    torch.testing.assert_close(rebalancing_weights(prior, 1.0), torch.ones(len(centres)))


def test_changing_the_chroma_but_not_the_lightness_changes_nothing_the_model_outputs() -> None:
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 2, 16, 16) * 0.6 + 0.2
    lab_pixels = lab(pixels)
    shifted = lab_pixels.clone()
    shifted[:, 1:] = shifted[:, 1:] * -0.5 + 3  # other hues, same lightness
    rgb = lab_to_rgb(shifted.transpose(1, 2).flatten(0, 1)).unflatten(0, (2, 2)).transpose(1, 2)
    assert (rgb - pixels).abs().max() > 0.1 and rgb.min() >= 0 and rgb.max() <= 1
    task = Colorization(ColorizationConfig(**TINY))
    encoder = build_video_encoder("tiny3d", widths=(8, 16)).eval()
    head = task.build_head(encoder).eval()
    torch.nn.init.normal_(head.decoder.out[-1].weight)  # not the zero start: an output that can differ
    with torch.no_grad():
        a, b = (task.predict(normalize(p), encoder, head) for p in (pixels, rgb))
    torch.testing.assert_close(a, b, atol=1e-3, rtol=0)
    assert task.encoder_input == "lightness"
    luma = front_end("luma")
    assert (luma(normalize(pixels)) - luma(normalize(rgb))).abs().max() > 1e-2  # BT.601 luma would leak chroma


def test_near_grey_frames_are_weighted_out_and_the_prior_counts_training_pixels() -> None:
    task = Colorization(ColorizationConfig(**TINY))
    encoder = build_video_encoder("tiny3d", widths=(8, 16))
    head = task.build_head(encoder)
    frames = torch.randint(0, 256, (2, 2, 16, 16, 3), dtype=torch.uint8)
    frames[1, 0] = frames[1, 0, :, :, :1]  # a grey frame: R = G = B
    weight = task.targets(torch.rand(1, 3, 1, 16, 16), head)[2]
    assert head.counts.sum() == 16 and len(weight) == 16  # a 4x4 output grid
    out = task.loss({"frames": frames}, encoder, head)
    assert torch.isfinite(out["loss"]) and head.counts.sum() == 16 + 2 * 2 * 16
    weight = task.targets(frames.float().div(255).permute(0, 4, 1, 2, 3), head)[2].view(2, 2, 16)
    assert torch.all(weight[1, 0] == 0) and torch.all(weight[0] > 0) and torch.all(weight[1, 1] > 0)
    head.eval()
    task.targets(torch.rand(1, 3, 1, 16, 16), head)
    assert head.counts.sum() == 16 + 2 * 2 * 16 + 2 * 2 * 16  # counted in training only


def test_the_trivial_constant_is_the_best_one_and_an_untrained_model_starts_there() -> None:
    """p w minimises the rebalanced cross-entropy of pixels drawn from the prior (any other constant
    does worse), and the model's logits start at it, so its loss starts at the trivial level."""
    centres = in_gamut_bins(10)
    prior = smooth_prior(torch.rand(len(centres)) ** 4, centres, sigma=0.0)
    constant = rebalanced_constant(prior, 0.5)
    torch.testing.assert_close(constant.sum(), torch.tensor(1.0))
    weights = rebalancing_weights(prior, 0.5)

    def expected_loss(q: torch.Tensor) -> torch.Tensor:  # E_p[w(y) (-log q_y)] / E_p[w] (= 1)
        return -(prior * weights * q.log()).sum()

    for other in (prior, torch.full_like(prior, 1 / len(prior)), constant * (1 + 0.2 * torch.rand(len(prior)))):
        assert expected_loss(constant) < expected_loss(other / other.sum())
    task = Colorization(ColorizationConfig(**TINY))
    encoder = build_video_encoder("tiny3d", widths=(8, 16))
    head = task.build_head(encoder)
    task.loss({"frames": torch.randint(0, 256, (2, 2, 16, 16, 3), dtype=torch.uint8)}, encoder, head)  # counts
    out = task.loss({"frames": torch.randint(0, 256, (2, 2, 16, 16, 3), dtype=torch.uint8)}, encoder, head.eval())
    torch.testing.assert_close(out["loss"], out["trivial_loss"])


# --- video colorization by pointing ------------------------------------------------------------------


def test_with_identical_target_and_reference_frames_pointing_reaches_its_minimum() -> None:
    """Embeddings that tell every pixel apart, a target frame equal to its reference: each target pixel
    points at its own copy, so its colour's likelihood is 1 and the loss is at its minimum, 0. The same
    embeddings with the colours shuffled are far from it, and uniform attention gives the histogram's."""
    torch.manual_seed(0)
    pixels, k = 64, 8
    embedding = 20 * torch.linalg.qr(torch.randn(pixels, pixels))[0][None]  # orthogonal rows, norm 20
    colours = torch.randint(0, k, (1, pixels))
    probabilities = pointing(embedding, embedding, colours, k)
    assert float(pointing_nll(probabilities, colours)) < 1e-6
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(1, pixels))
    assert float(pointing_nll(probabilities, colours[:, torch.randperm(pixels)])) > 5
    uniform = pointing(torch.zeros(1, pixels, 4), torch.zeros(1, pixels, 4), colours, k)
    histogram = torch.bincount(colours[0], minlength=k).float() / pixels
    torch.testing.assert_close(uniform[0], histogram.expand(pixels, k))


def test_the_palette_is_fitted_once_by_the_shared_k_means_and_the_window_keeps_its_gaps() -> None:
    task = VideoColorization(VideoColorizationConfig(num_references=2, gap=5, palette_size=4, decoder_width=16))
    encoder = build_video_encoder("tiny3d", widths=(8, 16))
    head = task.build_head(encoder)
    ab = torch.cat([torch.randn(50, 2) + torch.tensor(centre) for centre in ([30, 0], [-30, 0], [0, 30], [0, -30])])
    assigned = head.colours(ab)
    expected = kmeans(ab.numpy(), 4, seed=0).centroids
    np.testing.assert_allclose(head.palette.numpy(), expected)
    assert len(set(assigned.tolist())) == 4 and bool(head.fitted)
    head.colours(ab + 100)  # a later batch does not refit it
    np.testing.assert_allclose(head.palette.numpy(), expected)
    row = ManifestRow("clip.mp4", split="pretrain", num_frames=40, fps=8.0)
    frames = task.window(row, np.random.default_rng(0)).frames
    assert len(frames) == 3 and set(np.diff(frames)) == {5}
    out = task.loss({"frames": torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)}, encoder, head)
    assert torch.isfinite(out["loss"]) and out["trivial_loss"] > 0 and task.feature_mode == "frames"


def test_visualize_draws_lightness_colours_and_frame() -> None:
    task = Colorization(ColorizationConfig(**TINY))
    video = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    row = ManifestRow("clip.mp4", split="pretrain", num_frames=2, fps=8.0)
    fig = visualize._draw_colorizations(task, [(DecodedClip(video, None, Window(frames=np.arange(2)), row),
                                                {"frames": video})], "tiny3d", None, seed=0)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == [f"{what} #{t}" for t in (0, 1) for what in ("input (L)", "colourised", "target")]
    grey, colourised, frame = (ax.get_images()[0].get_array() for ax in fig.axes[:3])
    assert np.allclose(grey[..., 0], grey[..., 1], atol=1e-5) and np.allclose(grey[..., 0], grey[..., 2], atol=1e-5)
    np.testing.assert_allclose(frame, video[0].numpy() / 255, atol=1e-6)
    # the colourised frame keeps the frame's lightness (but where the colour falls outside sRGB and is clipped)
    kept = lab(torch.from_numpy(np.asarray(colourised)).permute(2, 0, 1)[None, :, None])[:, 0]
    assert ((kept - lab(video[:1].permute(3, 0, 1, 2)[None].float() / 255)[:, 0]).abs() < 0.5).float().mean() > 0.9


def test_video_colorization_views_colour_the_targets_own_lightness() -> None:
    task = VideoColorization(VideoColorizationConfig(num_references=2, gap=2, palette_size=4, decoder_width=16))
    encoder = build_video_encoder("tiny3d", widths=(8, 16)).eval()
    head = task.build_head(encoder).eval()
    frames = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    with torch.no_grad():
        views = task.predicted_views({"frames": frames}, encoder, head)
    assert [caption for caption, _ in views[0]] == ["reference 0", "reference 1", "target: lightness in",
                                                    "coloured by pointing", "uniform attention\n(trivial)", "target"]
    assert torch.equal(views[1][0][1], frames[1, 0]) and torch.equal(views[1][-1][1], frames[1, -1])
    lightness = lab(frames[1:, -1:].permute(0, 4, 1, 2, 3).float() / 255)[0, 0, 0]
    for _, image in views[1][2:5]:  # the grey input and both colourings keep the target's lightness
        kept = lab(image.permute(2, 0, 1)[None, :, None].float() / 255)[0, 0, 0]
        assert ((kept - lightness).abs() < 1.0).float().mean() > 0.9  # (but where a colour is clipped to sRGB)
    trivial = lab(views[1][4][1].permute(2, 0, 1)[None, :, None].float() / 255)[0, 1:, 0]
    assert trivial.flatten(1).std(1).max() < 3  # uniform attention: one colour (the histogram's mean) everywhere
