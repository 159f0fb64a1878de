"""Every task's declared pretext metric and chance level, `eval_pretext` on held-out videos, and the encoder
input front end that a checkpoint saves and transfer applies."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PRETRAINING_CONFIGS, SpyEncoder, one_config_per_task, shipped_config_batches

from mmssl.config import TransferConfig, load_config, to_dict
from mmssl.data.dataset import PretextDataset, collate
from mmssl.data.manifest import ManifestRow, read_manifest, write_manifest
from mmssl.engine.checkpoint import save_checkpoint
from mmssl.engine.trainer import pretrain
from mmssl.eval.pretext import _with_error, evaluate_pretext
from mmssl.eval.transfer import Transfer, encode, load_encoder
from mmssl.io import probe, write_media
from mmssl.registry import TASKS, register_task
from mmssl.tasks import build_task
from mmssl.tasks.model import TaskModel, build_run_encoder, checkpoint_encoder_input
from mmssl.tasks.multitask import MultiTask
from mmssl.tasks.order import OrderConfig, OrderVerification
from mmssl.transforms.inputs import luma
from mmssl.transforms.video import to_model_input

ROOT = Path(__file__).resolve().parents[1]
MEASURED = "measured on the batch"
# the chance level of each task's metric in its first shipped config, on a batch of 4 (None: unknown)
CHANCE = {"av_contrastive": {"v2a_top1_in_batch": 1 / 4}, "avc": {"accuracy": 0.5},
          "barlow_twins": {"top1_in_batch": 1 / 4}, "cubic_puzzle": {"accuracy": 1 / 48}, "masked_video": {"loss": MEASURED},
          "multitask": {"loss": None, "order/accuracy": 0.5, "avc/accuracy": 0.5, "masked_video/loss": MEASURED},
          "jigsaw": {"accuracy": 1 / 24},
          "opn": {"accuracy": 1 / 3}, "order": {"accuracy": 0.5}, "pace": {"accuracy": 1 / 4},
          "relative_position": {"accuracy": 1 / 8},
          "rotation": {"accuracy": 1 / 4}, "vcop": {"accuracy": 1 / 6},
          "wav2vec2": {"accuracy": 1 / 101}, "deepcluster": {"accuracy": 1 / 4},
          "selavi": {"video_accuracy": 1 / 4}, "xdc": {"video_accuracy": 1 / 4},
          "dpc": {"accuracy": 1 / 32},  # 4 videos x 2 future steps x 2x2 cells: 32 candidates
          "flow_similarity": {"loss": math.log(255)},  # a uniform column over the other 255 pixels
          "inpainting": {"loss": MEASURED}, "super_resolution": {"loss": MEASURED},
          "colorization": {"loss": MEASURED}, "video_colorization": {"loss": MEASURED},
          "dino": {"kl": None}}  # a collapsed teacher reaches 0 too: no chance level


@pytest.mark.parametrize("path", one_config_per_task(PRETRAINING_CONFIGS), ids=lambda p: p.stem)
def test_every_task_reports_its_declared_metric_beside_its_chance_level(tiny_synthav: Path, path: Path) -> None:
    model, (batch,) = shipped_config_batches(path, tiny_synthav)
    with torch.no_grad():
        out = model.eval()(batch)
    declared = model.task.pretext_metrics()
    assert set(declared) == set(CHANCE[path.stem])
    for key, (metric, owner) in declared.items():
        level = metric.level(owner, 4, out)
        assert metric.key == key and key in out
        if CHANCE[path.stem][key] == MEASURED:  # the trivial predictor's error (VideoMAE: the best constant's)
            # an untrained model does no better (a restoration's zero-initialised decoder returns its input)
            assert metric.chance_key in out and 0 < level <= float(out[key]) * (1 + 1e-3)
        elif CHANCE[path.stem][key] is None:  # a multi-task run's weighted total loss, DINO's KL
            assert level is None and not metric.higher_is_better
        else:
            assert level == pytest.approx(CHANCE[path.stem][key])
        assert 0 <= float(out[key]) <= 1 or not metric.higher_is_better


def fade_videos(folder: Path, rng: np.random.Generator) -> Path:
    """A manifest of 32 px, 16-frame videos whose frame order is plain to see (red fades out, the other
    channels drift, a fixed noise texture): 24 `pretrain`, 12 `test` and one `test` video too short
    for Shuffle and Learn's tuple."""
    folder.mkdir()
    rows = []
    for split, count, frames in (("pretrain", 24, 16), ("test", 12, 16), ("test", 1, 8)):
        for i in range(count):
            t = np.linspace(0, 1, frames)[:, None, None, None]
            start, end = rng.uniform(0.2, 0.8, 3), rng.uniform(0.2, 0.8, 3)
            start[0], end[0] = 0.8 + 0.2 * start[0], 0.2 * end[0]
            clip = start * (1 - t) + end * t + rng.normal(0, 0.05, (1, 32, 32, 3))
            path = write_media(folder / f"{split}_{frames}_{i}.mp4", (clip.clip(0, 1) * 255).astype(np.uint8), 8.0)
            rows.append(ManifestRow.from_info(path, probe(path), split=split))
    return write_manifest(rows, folder / "manifest.csv")


def test_eval_pretext_tells_a_trained_model_from_an_untrained_one(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    spec = importlib.util.spec_from_file_location("eval_pretext", ROOT / "tools/eval_pretext.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    manifest = fade_videos(tmp_path / "videos", np.random.default_rng(0))
    config = load_config(ROOT / "configs/pretrain/order.yaml",
                         [f"data.manifest={manifest}", "data.frame_size=32", "data.batch_size=8",
                          "data.num_workers=0", "train.max_steps=80", "train.log_every=80",
                          "monitor.every=0"])  # no kNN monitor: it would generate the default SynthAV
    torch.manual_seed(0)
    untrained = save_checkpoint(tmp_path / "untrained/checkpoint.pt", config=to_dict(config),
                                model=TaskModel(build_task(config), build_run_encoder(config)))
    pretrain(config, tmp_path / "run")

    trained = tool.main([str(tmp_path / "run"), "--passes", "4", "--batch-size", "16"])
    table = capsys.readouterr().out
    assert "order at step 80" in table and "48 samples of 12 'test' videos" in table
    assert "videos left out: {'too_short': 1}" in table
    assert json.loads((tmp_path / "run/pretext_eval.json").read_text()) == trained
    accuracy = trained["metrics"]["accuracy"]
    assert accuracy["chance"] == 0.5 and accuracy["higher_is_better"]
    assert accuracy["value"] >= 0.8, trained  # 0.9-1.0 after these 80 steps
    assert (trained["label_family"], trained["encoder_input"], trained["split"]) == ("action", "rgb", "test")

    before = evaluate_pretext(untrained, passes=4, batch_size=16)
    assert before["step"] == 0 and before["samples"] == 48
    assert abs(before["metrics"]["accuracy"]["value"] - 0.5) <= 0.15, before  # 0.55 at this seed
    assert before["loss_dict"]["loss"] > trained["loss_dict"]["loss"]
    with pytest.raises(SystemExit):  # a split without a video the task can use
        tool.main([str(untrained), "--split", "pretrain", "--manifest", str(tmp_path / "empty.csv")])


def test_an_in_batch_chance_level_follows_the_batch_sizes(tiny_synthav: Path, tmp_path: Path) -> None:
    """BYOL at random init (step 0, its target network): 20 test videos in batches of 8, 8 and 4."""
    config = load_config(ROOT / "configs/pretrain/byol.yaml", [f"data.synthav_dir={tiny_synthav}", "data.frame_size=32",
                                                               "task.clip_contrastive.clip_len=4"])
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "byol.pt", config=to_dict(config),
                                 model=TaskModel(build_task(config), build_run_encoder(config)))
    result = evaluate_pretext(checkpoint, batch_size=8)
    top1 = result["metrics"]["top1_in_batch"]
    assert result["samples"] == 20 and top1["chance"] == pytest.approx(3 / 20)  # (8 * 1/8 + 8 * 1/8 + 4 * 1/4) / 20
    assert 0 <= top1["value"] <= 1 and result["label_family"] == "object"
    assert top1["units"] == 3 and top1["se"] > 0 and top1["z"] == pytest.approx((top1["value"] - top1["chance"]) / top1["se"])


def test_the_standard_error_counts_batches_of_distinct_videos_over_the_passes() -> None:
    """Two batches of 10 samples, each seen in two passes: the units are the batches, with their
    passes' mean; their distances from chance 0.1 and 0.3 give the SE of a mean of two, 0.1."""
    values = [[2 * 0.6 * 10, 20], [2 * 0.8 * 10, 20]]  # [value x samples, samples] summed over 2 passes
    levels = [[2 * 0.5 * 10, 20]] * 2
    metric = _with_error({"value": 0.7, "higher_is_better": True, "chance": 0.5}, values, levels)
    assert metric["units"] == 2 and metric["se"] == pytest.approx(0.1) and metric["z"] == pytest.approx(2.0)
    lower = _with_error({"value": 0.7, "higher_is_better": False, "chance": 0.5}, values, levels)
    assert lower["z"] == pytest.approx(-2.0)  # a loss above its trivial level is on the worse side
    unequal = _with_error({"value": 0.6, "higher_is_better": True, "chance": None}, [[6.0, 10], [3.0, 5], [9.0, 15]], [])
    assert unequal["se"] == pytest.approx(0.0) and "z" not in unequal  # every batch at 0.6: no spread


class LumaOrder(OrderVerification):
    """Shuffle and Learn on luminance only: its encoder sees the luma front end."""


def test_luma_keeps_the_luminance_only_in_all_three_channels() -> None:
    x = to_model_input(torch.randint(0, 256, (2, 5, 8, 8, 3), dtype=torch.uint8))
    gray = luma(x)
    assert gray.shape == x.shape and torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    weights = torch.tensor([0.2989, 0.587, 0.114])
    assert torch.allclose(gray[:, 0], torch.einsum("c,bcthw->bthw", weights, x), atol=1e-5)
    chroma = torch.stack([weights[1], -weights[0], torch.tensor(0.0)]).view(1, 3, 1, 1, 1)  # luma 0: the same luma
    assert torch.allclose(luma(x + chroma), gray, atol=1e-5)
    # the normalisation is the same for every channel and the weights sum to 1: luma commutes with it
    pixels = torch.rand(1, 3, 2, 4, 4)
    assert torch.allclose(luma((pixels - 0.45) / 0.225), (luma(pixels) - 0.45) / 0.225, atol=1e-3)


def test_a_luma_task_trains_saves_and_is_probed_on_luma(tiny_synthav: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TASKS, "_builders", dict(TASKS._builders))  # the registration ends with the test
    register_task("luma_order", label_family="action", encoder_input="luma")(LumaOrder)
    config = load_config(None, ["task.name=luma_order", f"data.synthav_dir={tiny_synthav}", "data.frame_size=32",
                                "data.batch_size=4", "data.num_workers=0", "train.max_steps=1"])
    checkpoint = pretrain(config, tmp_path / "run")
    assert torch.load(checkpoint, weights_only=True)["encoder_input"] == "luma" == checkpoint_encoder_input(checkpoint)
    loaded = load_encoder(checkpoint)
    assert (loaded.feature_mode, loaded.encoder_input) == ("frames", "luma")
    assert evaluate_pretext(checkpoint)["encoder_input"] == "luma"

    def gray(x: torch.Tensor) -> bool:
        return torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])

    task, spy = build_task(config), SpyEncoder()  # in training, the encoder sees luma
    rows = read_manifest(tiny_synthav / "manifest.csv", "test")
    batch = collate([PretextDataset(rows, task, 32)[i] for i in range(2)])
    batch.pop("skipped")
    task.loss(batch, spy, task.build_head(spy))
    assert len(spy.inputs) == 1 and gray(spy.inputs[0])
    frames = torch.randint(0, 256, (2, 1, 4, 8, 8, 3), dtype=torch.uint8)  # and in transfer
    encode(spy, frames, "clip", encoder_input="luma")
    assert torch.equal(spy.inputs[-1], luma(to_model_input(frames[:, 0])))
    transfer = Transfer(TransferConfig(synthav_dir=str(tiny_synthav), frame_size=32, clip_len=2, num_clips=1,
                                       num_workers=0), torch.device("cpu"))
    transfer.features(spy, rows[:3], "clip", "luma")
    assert len(spy.inputs) == 3 and gray(spy.inputs[-1])
    transfer.features(spy, rows[:3], "clip")  # a checkpoint without a front end: the input as it is
    assert not gray(spy.inputs[-1])
    with pytest.raises(ValueError, match="share one encoder, so one input"):
        MultiTask({"order": OrderVerification(OrderConfig()), "luma_order": LumaOrder(OrderConfig())},
                  {"order": 1.0, "luma_order": 1.0})
