"""Audio-visual correspondence (L3 + AVTS): alignment, hard negatives, pairing rules, gradients."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmssl.config import ConfigError, TransferConfig, load_config, to_dict
from mmssl.data.dataset import PretextDataset, collate, decode_window
from mmssl.data.manifest import ManifestRow, read_manifest
from mmssl.data.synthetic import SHAPES
from mmssl.engine.checkpoint import save_checkpoint
from mmssl.engine.trainer import pretrain
from mmssl.eval.av import evaluate_av, retrieval_recall
from mmssl.eval.transfer import Transfer, load_audio_encoder
from mmssl.io import probe, write_media
from mmssl.models import build_video_encoder
from mmssl.models.audio import build_audio_encoder
from mmssl.models.heads import AudioVisualHead
from mmssl.tasks import build_task
from mmssl.tasks.avc import NO_HARD
from mmssl.tasks.model import TaskModel, build_run_encoder
from mmssl.transforms.audio import LogMel, SpecAugment
from mmssl.transforms.video import to_model_input

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def avts(synthav: Path, *overrides: str):
    """avts.yaml (AVC with hard negatives) at test sizes: its windows hold both the positive and the hard audio."""
    config = load_config(ROOT / "configs/pretrain/avts.yaml",
                         [f"data.synthav_dir={synthav}", "data.frame_size=32", "task.avc.clip_len=4", *overrides])
    return config, build_task(config)


def click_time(audio: torch.Tensor) -> float:
    """Seconds to the strongest click: the peak of high-passed energy in 2 ms windows."""
    energy = np.convolve(np.abs(np.diff(audio.numpy())), np.ones(32), mode="same")
    return float(np.argmax(energy)) / SR


def test_positive_audio_is_aligned_with_its_frames(tiny_synthav: Path) -> None:
    _, task = avts(tiny_synthav)
    rows = [r for r in read_manifest(tiny_synthav / "manifest.csv") if r.has_audio and r.extra["impacts"]]
    dataset = PretextDataset(rows, task, 32)
    checked = 0
    for index, row in enumerate(rows):
        impact_s = int(row.extra["impacts"].split(";")[0]) / row.fps
        for seed in range(20):
            rng = np.random.default_rng(seed)
            clip = dataset.decode(index, rng)
            window = clip.window
            start = window.audio_start_s + window.targets["positive_offset"] / SR
            if start + 0.1 < impact_s < start + 0.9 and not _other_impact_near(row, start):
                sample = task.make_sample(clip, rng)
                assert sample["audio"].shape == (SR,)
                assert abs(click_time(sample["audio"]) - (impact_s - start)) < 1 / row.fps
                # the clip's frames surround the same moment
                assert window.frames[0] / row.fps <= start + 0.5 <= (window.frames[-1] + 1) / row.fps
                checked += 1
                break
    assert checked >= 2


@pytest.mark.parametrize("name", ["av_contrastive", "avc"])
def test_positive_audio_stays_with_its_frames_at_a_variable_frame_rate(tmp_path: Path, name: str) -> None:
    # 20 frames 0.2 s apart, then 20 frames 0.02 s apart: frame number / average fps is up to ~1.3 s
    # off the frames' own times. A click at the middle frame of a late clip is heard mid-window.
    times = np.concatenate([np.arange(20) * 0.2, 4.0 + np.arange(20) * 0.02])
    audio = np.zeros(5 * SR, dtype=np.float32)
    clip_frames = np.arange(28, 36)
    audio[round(times[clip_frames].mean() * SR):][:16] = np.where(np.arange(16) % 2, -0.9, 0.9)
    path = write_media(tmp_path / "vfr.mp4", np.zeros((40, 32, 32, 3), np.uint8), 10, audio, frame_times=times)
    row = ManifestRow.from_info(path, probe(path))
    task = build_task(load_config(ROOT / f"configs/pretrain/{name}.yaml"))
    window = dataclasses.replace(task.window(row, np.random.default_rng(0)), frames=clip_frames)
    window.audio_start_s = float(np.clip(clip_frames.mean() / row.fps - 0.5, 0, row.num_frames / row.fps - 1))
    if name == "avc":
        window.targets = {"positive_offset": 0, "hard_offset": NO_HARD}
        window.audio_duration_s = 1.0
    sample = task.make_sample(decode_window(row, window, 32), np.random.default_rng(0))
    assert abs(click_time(sample["audio"]) - 0.5) < 0.02


def _other_impact_near(row, start: float) -> bool:
    impacts = [int(k) / row.fps for k in row.extra["impacts"].split(";")]
    return sum(start < t < start + 1 for t in impacts) > 1


def test_hard_negatives_never_overlap_the_positive(tiny_synthav: Path) -> None:
    _, task = avts(tiny_synthav)
    rows = [r for r in read_manifest(tiny_synthav / "manifest.csv") if r.has_audio]
    hard_found = 0
    for row in rows:
        for seed in range(10):
            window = task.window(row, np.random.default_rng(seed))
            positive, hard = window.targets["positive_offset"], window.targets["hard_offset"]
            end = window.audio_start_s + window.audio_duration_s
            assert window.audio_start_s >= 0 and end <= row.num_frames / row.fps + 1e-6
            if hard != NO_HARD:
                assert abs(hard - positive) >= task.config.min_offset_s * SR - 1 >= SR - 1
                hard_found += 1
    assert hard_found > 0
    # a minimum shift shorter than the window would let a hard negative overlap its positive
    with pytest.raises(ValueError, match="min_offset_s=1.0 is shorter than audio_s=2.0"):
        build_task(load_config(None, ["task.name=avc", "task.avc.audio_s=2.0"]))
    assert build_task(load_config(None, ["task.name=avc", "task.avc.audio_s=2.0", "task.avc.hard_negatives=false"]))


def test_pairs_balance_and_never_pair_a_clip_with_its_own_audio() -> None:
    config = load_config(ROOT / "configs/pretrain/avts.yaml")
    task = build_task(config)
    task.set_step(99, 100)  # past the curriculum: hard negatives allowed
    size = 4000
    audio = torch.arange(size, dtype=torch.float32)[:, None].repeat(1, 8)  # sample i's audio is all i
    batch = {"audio": audio, "hard_audio": -audio - 1, "has_hard": torch.rand(size) < 0.8}
    torch.manual_seed(0)
    chosen, labels, hard = task.pairs(batch)
    own = torch.arange(size, dtype=torch.float32)
    assert labels.float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert torch.equal(chosen[labels == 1, 0], own[labels == 1])
    easy = (labels == 0) & ~hard
    assert (chosen[easy, 0] != own[easy]).all() and (chosen[easy, 0] >= 0).all()
    assert torch.equal(chosen[hard, 0], -own[hard] - 1) and batch["has_hard"][hard].all()
    assert hard.sum() / (labels == 0).sum() == pytest.approx(0.25 * 0.8, abs=0.04)


def test_a_batch_of_one_is_positive_and_never_counted_hard() -> None:
    """No other sample to draw an easy negative from: the pair is positive, so not hard (the logged hard_share)."""
    task = build_task(load_config(ROOT / "configs/pretrain/avts.yaml",
                                  ["task.avc.positive_share=0.0", "task.avc.hard_share=1.0"]))
    task.set_step(99, 100)  # every pair would be a hard negative but for the batch of one
    audio = torch.ones(1, 8)
    chosen, labels, hard = task.pairs({"audio": audio, "hard_audio": -audio, "has_hard": torch.tensor([True])})
    assert torch.equal(chosen, audio) and labels.tolist() == [1] and hard.tolist() == [False]


def test_curriculum_starts_with_easy_negatives_only() -> None:
    task = build_task(load_config(ROOT / "configs/pretrain/avts.yaml"))
    task.set_step(0, 100)
    assert task.hard_share == 0.0
    task.set_step(30, 100)
    assert task.hard_share == 0.25


def test_avc_without_hard_negatives_decodes_only_the_positive_audio(tiny_synthav: Path) -> None:
    config = load_config(ROOT / "configs/pretrain/avc.yaml", [f"data.synthav_dir={tiny_synthav}"])
    task = build_task(config)
    task.set_step(99, 100)
    assert task.hard_share == 0.0
    for row in [r for r in read_manifest(tiny_synthav / "manifest.csv") if r.has_audio]:
        window = task.window(row, np.random.default_rng(0))
        assert window.targets == {"positive_offset": 0, "hard_offset": NO_HARD}
        assert window.audio_duration_s == config.task.avc.audio_s


@pytest.mark.parametrize("name", ["avc", "avts"])
def test_av_configs_see_the_whole_frame(tiny_synthav: Path, name: str) -> None:
    # SynthAV's pitch follows the shape's height: these configs turn the crop (area and aspect) and the
    # flip off, so a clip reaches the encoder as decoded (brightness/contrast jitter aside).
    task = build_task(load_config(ROOT / f"configs/pretrain/{name}.yaml", [f"data.synthav_dir={tiny_synthav}"]))
    frames = torch.randint(0, 256, (4, 8, 32, 32, 3), dtype=torch.uint8)
    augment = dataclasses.replace(task.augment, brightness=0.0, contrast=0.0)
    torch.testing.assert_close(to_model_input(frames, augment), to_model_input(frames), atol=1e-5, rtol=0)


def test_log_mel_shape_and_audio_encoder() -> None:
    spectrogram = LogMel()(torch.randn(3, SR))
    assert spectrogram.shape == (3, 1, 64, 101)
    encoder = build_audio_encoder("logmel_cnn")
    assert encoder.feature_dim == 512 and encoder(torch.randn(2, SR)).shape == (2, 512)


def test_spec_augment_fills_its_masks_with_the_mean_in_training_only() -> None:
    spectrogram = LogMel()(0.3 * torch.sin(torch.arange(2 * SR) / SR * 2 * torch.pi * 440).view(2, SR))
    augment = SpecAugment(freq_mask=8, time_mask=20)
    torch.manual_seed(0)
    masked = augment(spectrogram)
    changed = masked != spectrogram
    assert changed.any() and torch.all(masked[changed] == spectrogram.mean())  # not 0: a loud band
    assert torch.equal(augment.eval()(spectrogram), spectrogram)


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_gradient_reaches_both_towers(tiny_synthav: Path, loss: str) -> None:
    _, task = avts(tiny_synthav, f"task.avc.loss={loss}")
    task.set_step(99, 100)
    rows = [r for r in read_manifest(tiny_synthav / "manifest.csv", "pretrain") if r.has_audio][:6]
    batch = collate([PretextDataset(rows, task, 32)[i] for i in range(6)])
    del batch["skipped"]
    model = TaskModel(task, build_video_encoder("tiny3d"))
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    video_grad = model.encoder.features[0].weight.grad
    audio_grad = model.head.audio.blocks[0][0].weight.grad
    assert video_grad is not None and video_grad.abs().sum() > 0
    assert audio_grad is not None and audio_grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())  # DDP needs no unused parameters


def test_av_heads_declare_what_they_hold() -> None:
    """L3's fusion classifier or the shared contrastive head, passed in, never attached from outside;
    the state_dict keys checkpoints hold stay audio.*, shared.*, fusion.*."""
    encoder = build_video_encoder("tiny3d")
    held = {}
    for name, loss in [("avc", "ce"), ("avc", "margin"), ("av_contrastive", None)]:
        overrides = [f"task.name={name}", *([f"task.avc.loss={loss}"] if loss else [])]
        head = build_task(load_config(None, overrides)).build_head(encoder)
        assert isinstance(head, AudioVisualHead)
        held[name, loss] = {key.split(".")[0] for key in head.state_dict()}
        assert (head.fusion is None) == (head.shared is not None)
    assert held == {("avc", "ce"): {"audio", "fusion"}, ("avc", "margin"): {"audio", "shared"},
                    ("av_contrastive", None): {"audio", "shared"}}


def test_one_training_step_skips_silent_videos(tiny_synthav: Path, tmp_path: Path) -> None:
    config, _ = avts(tiny_synthav, "data.batch_size=4", "data.num_workers=0", "train.max_steps=1")
    pretrain(config, tmp_path)
    summary = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "excluded" in line]
    assert '"no_audio"' in summary[0]


@pytest.mark.parametrize("learn_temperature", [False, True])
def test_av_contrastive_step_trains_both_towers_and_the_temperature(tiny_synthav: Path,
                                                                    learn_temperature: bool) -> None:
    config = load_config(ROOT / "configs/pretrain/av_contrastive.yaml",
                         [f"data.synthav_dir={tiny_synthav}", "data.frame_size=32", "task.av_contrastive.clip_len=4",
                          f"task.av_contrastive.learn_temperature={str(learn_temperature).lower()}",
                          "task.av_contrastive.temperature=0.2"])
    task = build_task(config)
    rows = [r for r in read_manifest(tiny_synthav / "manifest.csv", "pretrain") if r.has_audio][:6]
    dataset = PretextDataset(rows, task, 32)
    sample = dataset[0]
    assert sample["audio"].shape == (SR,) and sample["frames"].shape[0] == 4
    batch = collate([dataset[i] for i in range(6)])
    del batch["skipped"]
    model = TaskModel(task, build_video_encoder("tiny3d"))
    out = model(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and 0 <= out["v2a_top1_in_batch"] <= 1
    assert model.encoder.features[0].weight.grad.abs().sum() > 0
    assert model.head.audio.blocks[0][0].weight.grad.abs().sum() > 0
    assert (model.head.shared.log_scale.grad is not None) == learn_temperature
    if learn_temperature:  # the learnable temperature starts at the configured one
        assert float(model.head.shared.scale) == pytest.approx(1 / 0.2)
    assert all(p.grad is not None for p in model.parameters())  # DDP needs no unused parameters


def test_eval_av_reports_heldout_accuracy_and_retrieval(tiny_synthav: Path, tmp_path: Path) -> None:
    for task_name in ("avc", "av_contrastive"):
        config = load_config(ROOT / f"configs/pretrain/{task_name}.yaml",
                             [f"data.synthav_dir={tiny_synthav}", "data.frame_size=32", f"task.{task_name}.clip_len=4",
                              "data.batch_size=4", "data.num_workers=0", "train.max_steps=1"])
        result = evaluate_av(pretrain(config, tmp_path / task_name), split="test")
        assert result["task"] == result["av_task"] == task_name
        assert 0 <= result["retrieval_v2a_r1"] <= result["retrieval_v2a_r5"] <= 100
        assert result["retrieval_candidates"] == 16  # 20 test videos, 20% without audio
        assert result["left_out"] == {"no_audio": 4} and result["manifest"] == str(tiny_synthav / "manifest.csv")
        assert any(key.startswith("heldout_") for key in result)


def test_retrieval_recall_ranks_ties_against_the_own_item() -> None:
    assert retrieval_recall(torch.eye(8), (1, 5)) == {1: 100.0, 5: 100.0}
    ranks = [0, 0, 1, 4, 5, 9, 3, 7, 2, 0]  # each row's own item's place among its scores, best first
    n = len(ranks)
    similarity = torch.empty(n, n)
    for i, rank in enumerate(ranks):
        others = [j for j in range(n) if j != i]
        similarity[i, others[:rank] + [i] + others[rank:]] = torch.arange(n, 0, -1.0)
    assert retrieval_recall(similarity, (1, 5)) == pytest.approx({1: 30.0, 5: 70.0})
    # a constant similarity retrieves nothing (not everything): every own item is tied with all others
    assert retrieval_recall(torch.ones(8, 8), (1, 5, 8)) == {1: 0.0, 5: 0.0, 8: 100.0}
    tied = torch.eye(8)
    tied[:, 0] = 1  # rows 1-7: the own item tied with item 0 at the top, so second
    assert retrieval_recall(tied, (1, 2)) == pytest.approx({1: 12.5, 2: 100.0})


def random_init_checkpoint(synthav: Path, path: Path, *overrides: str) -> Path:
    """A pretraining checkpoint of a test-sized config at random init (no step trained)."""
    config = load_config(None, [f"data.synthav_dir={synthav}", "data.frame_size=32", *overrides])
    torch.manual_seed(0)
    return save_checkpoint(path, model=TaskModel(build_task(config), build_run_encoder(config)), config=to_dict(config))


def test_eval_av_evaluates_the_av_task_of_a_multitask_run_and_refuses_a_run_without_one(
        tiny_synthav: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = importlib.util.spec_from_file_location("eval_av", ROOT / "tools/eval_av.py")
    eval_av = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_av)
    multitask = ["task.name=multitask", "task.multitask.weights=[1.0, 1.0]"]
    checkpoint = random_init_checkpoint(tiny_synthav, tmp_path / "multitask.pt", *multitask,
                                        "task.multitask.tasks=[order, avc]", "task.avc.clip_len=4")
    result = eval_av.main(["--checkpoint", str(checkpoint)])
    assert result["task"] == "multitask" and result["av_task"] == "avc"
    assert result["retrieval_candidates"] == 16 and 0 <= result["heldout_accuracy"] <= 1
    assert json.loads((tmp_path / "av_eval.json").read_text()) == result

    for name, overrides in (("order", []), ("multitask", [*multitask, "task.multitask.tasks=[order, vcop]"])):
        checkpoint = random_init_checkpoint(tiny_synthav, tmp_path / f"{name}.pt", *overrides)
        with pytest.raises(ConfigError, match=f"task '{name}'.* no audio-visual correspondence.*avc, av_contrastive"):
            evaluate_av(checkpoint)
        with pytest.raises(SystemExit):
            eval_av.main(["--checkpoint", str(checkpoint)])
        assert "avc, av_contrastive" in capsys.readouterr().err


def test_audio_tower_of_an_av_checkpoint_is_probed_on_the_shape_labels(tiny_synthav: Path, tmp_path: Path) -> None:
    config, _ = avts(tiny_synthav, "data.batch_size=4", "data.num_workers=0", "train.max_steps=1")
    checkpoint = pretrain(config, tmp_path / "avc")
    encoder, name = load_audio_encoder(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)["model"]
    assert name == config.model.audio_encoder
    assert all(torch.equal(value, saved[f"head.audio.{key}"]) for key, value in encoder.state_dict().items())

    transfer = Transfer(TransferConfig(synthav_dir=str(tiny_synthav), label_column="shape", num_clips=2,
                                       num_workers=0, linear_epochs=5), torch.device("cpu"))
    shapes = {row.path: row.extra["shape"] for row in read_manifest(tiny_synthav / "manifest.csv", "test")}
    assert set(transfer.classes) <= set(SHAPES) and len(transfer.classes) > 1
    assert all(row.label == shapes[row.path] for row in transfer.test_rows)
    result = transfer.frozen_protocol(encoder, "audio", "linear")
    assert result["num_test_videos"] == 16 and result["skipped"] == {"no_audio": 8}

    order = load_config(None, [f"data.synthav_dir={tiny_synthav}", "data.frame_size=32", "data.batch_size=4",
                               "data.num_workers=0", "train.max_steps=1"])
    with pytest.raises(ValueError, match="trains no audio encoder"):
        load_audio_encoder(pretrain(order, tmp_path / "order"))
