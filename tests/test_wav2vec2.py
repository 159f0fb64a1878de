"""wav2vec 2.0: span masking, distractors, logits, the Gumbel quantiser and its losses, the feature
encoder's frame count, a training step and the audio linear probe (docs/methods.md#wav2vec2)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchaudio.models.wav2vec2 import components

from mmssl.config import TransferConfig, load_config
from mmssl.data.dataset import PretextDataset, collate
from mmssl.data.manifest import read_manifest
from mmssl.engine.trainer import pretrain
from mmssl.eval.transfer import Transfer, load_encoder, random_encoder
from mmssl.models.audio import PAPER_CONV_LAYERS, WAV2VEC2_SPECS, Wav2Vec2Encoder, build_audio_encoder, feature_frames
from mmssl.models.quantizer import GumbelQuantizer, diversity_loss, gumbel_temperature, perplexity
from mmssl.tasks import build_task
from mmssl.tasks.model import TaskModel
from mmssl.tasks.wav2vec2 import contrastive_logits, sample_distractors, scale_gradient, span_mask

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def wav2vec2_config(synthav: Path, *overrides: str):
    return load_config(ROOT / "configs/pretrain/wav2vec2.yaml",
                       [f"data.synthav_dir={synthav}", "data.batch_size=4", "data.num_workers=0", *overrides])


# --- feature encoder --------------------------------------------------------------------------------


def test_feature_encoder_frame_count() -> None:
    assert feature_frames(16000, PAPER_CONV_LAYERS) == 49  # the paper's 20 ms stride, 25 ms field
    assert WAV2VEC2_SPECS["wav2vec2_base"].conv_layers == PAPER_CONV_LAYERS
    paper_stack = components._get_feature_extractor("group_norm", list(PAPER_CONV_LAYERS), False)
    tiny = build_audio_encoder("wav2vec2_tiny").eval()
    with torch.no_grad():
        assert paper_stack(torch.randn(1, 16000), None)[0].shape == (1, 49, 512)
        for samples in (400, 401, 12345, 16000):
            features, lengths = tiny.extract(torch.randn(2, samples), torch.tensor([samples, samples]))
            assert features.shape == (2, feature_frames(samples, tiny.conv_layers), tiny.conv_dim)
            assert lengths.tolist() == [features.shape[1]] * 2
        assert tiny(torch.randn(3, 16000)).shape == (3, tiny.feature_dim)


def test_masked_steps_are_replaced_by_the_mask_embedding() -> None:
    encoder = build_audio_encoder("wav2vec2_tiny").eval()
    x = torch.randn(2, 49, encoder.feature_dim)
    mask = torch.zeros(2, 49, dtype=torch.bool)
    mask[:, 10:25] = True
    changed = x.clone()
    changed[mask] = torch.randn(int(mask.sum()), encoder.feature_dim)
    with torch.no_grad():
        assert torch.allclose(encoder.context(x, mask), encoder.context(changed, mask), atol=1e-6)
        assert not torch.allclose(encoder.context(x), encoder.context(changed), atol=1e-3)


# --- span masking -----------------------------------------------------------------------------------


def runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of the maximal runs of masked steps."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def test_span_mask_statistics_match_the_paper() -> None:
    rng = np.random.default_rng(0)
    masks = [span_mask(781, 0.65, 10, 2, rng) for _ in range(2000)]
    lengths = np.concatenate([runs(m) for m in masks])
    assert np.mean(masks) == pytest.approx(0.49, abs=0.01)  # "about 49% of all time steps are masked"
    assert lengths.mean() == pytest.approx(14.7, abs=0.3)  # "mean span length of 14.7"
    assert lengths.min() >= 10  # whole spans: each start masks M steps, runs are unions of spans


def test_span_mask_draws_at_least_min_masks_spans() -> None:
    rng = np.random.default_rng(1)
    counts = np.array([span_mask(1000, 0.0, 10, 2, rng).sum() for _ in range(500)])
    assert counts.min() >= 10 and counts.max() <= 20  # two spans of 10, overlapping at most fully
    assert (counts == 20).mean() > 0.9  # distinct starts: two disjoint spans unless they overlap
    short = [span_mask(49, 0.65, 10, 2, rng) for _ in range(200)]
    assert all(m.shape == (49,) and 10 <= m.sum() <= 40 for m in short)


# --- distractors and logits -------------------------------------------------------------------------


def test_distractors_are_the_other_masked_steps_of_the_same_window_uniformly() -> None:
    mask = torch.zeros(3, 40, dtype=torch.bool)
    mask[0, 5:17] = True  # 12 masked steps
    mask[1, [0, 3, 9, 20, 21, 22, 30, 31, 32, 33, 39]] = True  # 11
    mask[2, 10:35] = True  # 25
    window = mask.nonzero()[:, 0]
    generator = torch.Generator().manual_seed(0)
    assert sample_distractors(mask, 4, generator).shape == (48, 4)
    draws = torch.cat([sample_distractors(mask, 100, generator) for _ in range(30)], 1)
    assert draws.shape == (48, 30 * 100)  # K = 100 although a window has only 10 other masked steps
    steps = torch.arange(48)[:, None]
    assert (draws != steps).all()
    assert (window[draws] == window[:, None]).all()
    # uniform over the other masked steps: chi-square over (step, distractor) cells of window 0
    table = torch.zeros(12, 12)
    for i in range(12):
        table[i] = torch.bincount(draws[i], minlength=48)[:12].float()
    assert table.diagonal().sum() == 0
    expected = draws.shape[1] / 11
    off_diagonal = ~torch.eye(12, dtype=torch.bool)
    chi2 = ((table[off_diagonal] - expected) ** 2 / expected).sum().item()
    dof = 12 * 10
    assert chi2 < dof + 5 * math.sqrt(2 * dof)


def test_distractors_equal_to_the_positive_get_minus_infinity() -> None:
    torch.manual_seed(0)
    targets = torch.randn(4, 8)
    targets[2] = targets[0]  # steps 0 and 2 were quantised to the same codewords
    context = torch.randn(4, 8)
    distractors = torch.tensor([[1, 2], [0, 3], [0, 1], [2, 1]])
    logits = contrastive_logits(context, targets, distractors, 0.1)
    cosine = torch.nn.functional.cosine_similarity
    assert logits.shape == (4, 3)
    assert torch.allclose(logits[:, 0], cosine(context, targets, dim=-1) / 0.1, atol=1e-5)
    assert logits[1, 1] == pytest.approx(cosine(context[1], targets[0], dim=0).item() / 0.1, abs=1e-5)
    infinite = torch.isinf(logits)
    assert infinite.tolist() == [[False, False, True], [False, False, False], [False, True, False],
                                 [False, False, False]]
    assert (logits[infinite] < 0).all()


# --- quantiser -----------------------------------------------------------------------------------------


def test_feature_gradient_scaling_leaves_the_forward_values_exact() -> None:
    """fairseq's GradMultiply (feature_grad_mult 0.1): values unchanged, bf16 included; gradient x 0.1."""
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float32, torch.bfloat16):
        leaf = x.to(dtype).detach().requires_grad_()
        scaled = scale_gradient(leaf, 0.1)
        assert torch.equal(scaled, leaf.detach())
        scaled.sum().backward()
        torch.testing.assert_close(leaf.grad, torch.full_like(leaf, 0.1))


def test_gumbel_temperature_schedule() -> None:
    assert gumbel_temperature(0) == 2.0
    assert gumbel_temperature(1000) == pytest.approx(2 * 0.999995 ** 1000)
    crossing = math.log(0.25) / math.log(0.999995)  # 2 * 0.999995 ** s = 0.5 at s ~ 277258
    assert gumbel_temperature(int(crossing) - 100) > 0.5
    assert gumbel_temperature(int(crossing) + 100) == 0.5 == gumbel_temperature(10 ** 7)
    task = build_task(load_config(ROOT / "configs/pretrain/wav2vec2.yaml"))
    task.set_step(100, 315)
    assert task.temperature == pytest.approx(2 * 0.995 ** 100)
    task.set_step(300, 315)
    assert task.temperature == 0.5


def test_quantizer_is_straight_through_one_hot() -> None:
    torch.manual_seed(0)
    quantizer = GumbelQuantizer(in_dim=8, dim=6, codebooks=2, entries=5)
    x = torch.randn(64, 8)
    out = quantizer(x, temperature=2.0)
    parts = out.vectors.view(64, 2, 1, 3)
    matches = (parts - quantizer.codewords[None]).abs().amax(-1) < 1e-6  # [N, G, V]
    assert (matches.sum(-1) == 1).all()  # each codebook contributes exactly one codeword
    assert out.probs.shape == (64, 2, 5) and torch.allclose(out.probs.sum(-1), torch.ones(64, 2))
    assert torch.equal(out.codes, out.probs.argmax(-1))  # noise-free codes
    (out.vectors * torch.randn(64, 6)).sum().backward()
    assert quantizer.logits.weight.grad.abs().sum() > 0  # the gradient reaches the logits
    assert quantizer.codewords.grad.abs().sum() > 0
    quantizer.eval()
    with torch.no_grad():
        out = quantizer(x, temperature=2.0)
    chosen = quantizer.codewords[torch.arange(2), out.codes]  # [N, G, 3]: argmax codewords, no noise
    assert torch.equal(out.vectors, chosen.flatten(1))


def test_diversity_loss_at_its_limits() -> None:
    g, v = 2, 320
    uniform = torch.full((100, g, v), 1 / v)
    assert diversity_loss(uniform).item() == pytest.approx(0.0, abs=1e-5)
    one_code = torch.zeros(100, g, v)
    one_code[:, :, 7] = 1
    assert perplexity(one_code).item() == pytest.approx(g)
    assert diversity_loss(one_code).item() == pytest.approx((g * v - g) / (g * v))  # = (V - 1) / V
    # each sample one code, all codes used equally: the batch average is uniform -> no penalty
    spread = torch.nn.functional.one_hot(torch.arange(v).repeat(2, 1).T, v).float()
    assert perplexity(spread).item() == pytest.approx(g * v, rel=1e-4)
    mixed = torch.stack([uniform[:, 0], one_code[:, 1]], 1)
    assert diversity_loss(mixed).item() == pytest.approx((g * v - v - 1) / (g * v), rel=1e-4)


# --- the task end to end -----------------------------------------------------------------------------


def test_samples_decode_audio_only_and_the_quantiser_sees_unmasked_features(tiny_synthav: Path) -> None:
    config = wav2vec2_config(tiny_synthav)
    task = build_task(config)
    rows = [r for r in read_manifest(tiny_synthav / "manifest.csv", "pretrain") if r.has_audio][:4]
    dataset = PretextDataset(rows, task)
    clip = dataset.decode(0, np.random.default_rng(0))
    assert clip.video.shape[0] == 0 and clip.audio.shape == (SR,)
    batch = collate([dataset[i] for i in range(4)])
    del batch["skipped"]
    assert set(batch) == {"audio", "mask"} and batch["mask"].shape == (4, 49) and batch["mask"].dtype == torch.bool
    model = TaskModel(task, build_audio_encoder("wav2vec2_tiny")).eval()
    seen = []
    model.head["quantizer"].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        out = model(batch)
        normalized = model.encoder.normalize(model.encoder.extract(batch["audio"])[0])
    assert torch.allclose(seen[0], normalized[batch["mask"]], atol=1e-5)  # masked steps, unmasked features
    model.train()
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert all(p.grad is not None for p in model.parameters())  # DDP needs no unused parameters
    assert {"perplexity", "prob_perplexity", "accuracy", "temperature", "diversity"} <= set(out)


def test_one_training_step_then_the_audio_probe_via_tools_transfer(tiny_synthav: Path, tmp_path: Path) -> None:
    final = pretrain(wav2vec2_config(tiny_synthav, "train.max_steps=2", "train.log_every=1"), tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert steps[1]["temperature"] == pytest.approx(2 * 0.995)
    assert 2 <= steps[0]["perplexity"] <= 2 * 320
    assert any(r.get("excluded") == {"no_audio": 5} for r in records)  # 20% of the 24 pretraining videos
    encoder, name, mode, encoder_input = load_encoder(final)
    assert isinstance(encoder, Wav2Vec2Encoder) and (name, mode, encoder_input) == ("wav2vec2_tiny", "audio", "waveform")
    saved = torch.load(final, weights_only=True)["model"]["encoder.mask_embedding"]
    assert torch.equal(encoder.mask_embedding, saved)

    spec = importlib.util.spec_from_file_location("transfer_tool", ROOT / "tools/transfer.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    report = tool.main(["--checkpoint", str(tmp_path / "run"), "--compare-random", f"synthav_dir={tiny_synthav}",
                        "num_clips=2", "num_workers=0", "linear_epochs=20"])
    assert report["feature_mode"] == "audio"
    assert list(report["results"]) == ["pretrained (checkpoint_000002.pt)", "random init (wav2vec2_tiny)"]
    for result in report["results"].values():
        assert result["skipped"] == {"no_audio": 8}  # 20% of the 20 train and of the 20 test videos
        assert (result["num_train_videos"], result["num_test_videos"]) == (16, 16)
        assert np.asarray(result["confusion"]).sum() == 16
        assert 0 <= result["video_top1"] <= result["video_top5"] <= 100


def test_audio_linear_probe_windows_and_random_audio_encoder(tiny_synthav: Path) -> None:
    config = TransferConfig(synthav_dir=str(tiny_synthav), num_clips=3, audio_s=0.5, num_workers=0, linear_epochs=5)
    transfer = Transfer(config, torch.device("cpu"))
    loader = transfer.loader(transfer.test_rows, random=False, shuffle=False, audio=True)
    batch = next(iter(loader))
    assert batch["audio"].shape == (config.batch_size, 3, SR // 2)
    clip = loader.dataset.decode(0, np.random.default_rng(0))
    last = clip.audio[-SR // 2:]
    assert torch.equal(batch["audio"][0, 0], clip.audio[:SR // 2]) and torch.equal(batch["audio"][0, 2], last)
    first, second = random_encoder("wav2vec2_tiny", 3), random_encoder("wav2vec2_tiny", 3)
    assert isinstance(first, Wav2Vec2Encoder)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    result = transfer.frozen_protocol(first, "audio", "linear")
    assert result["skipped"] == {"no_audio": 8} and result["num_test_videos"] == 16
