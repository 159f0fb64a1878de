"""Multi-task pretraining: one decode per sample serves every task exactly as its own decode would,
the loss is the weighted sum, and each task's loss is logged."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmssl.config import load_config
from mmssl.data.clip import DecodedClip, Window
from mmssl.data.dataset import PretextDataset, collate, decode_window
from mmssl.data.manifest import read_manifest
from mmssl.engine.trainer import pretrain
from mmssl.models import build_video_encoder
from mmssl.tasks import build_task
from mmssl.tasks.model import TaskModel
from mmssl.tasks.multitask import MultiTask

ROOT = Path(__file__).resolve().parents[1]


def multitask(synthav: Path, *overrides: str) -> MultiTask:
    config = load_config(None, ["task.name=multitask", "task.multitask.tasks=[order, vcop, avc]",
                                "task.multitask.weights=[1.0, 0.5, 2.0]", "task.vcop.clip_len=4",
                                "task.vcop.interval=2", f"data.synthav_dir={synthav}", *overrides])
    task = build_task(config)
    assert isinstance(task, MultiTask)
    return task


@pytest.mark.parametrize("tasks", [(), ("task.multitask.tasks=[rotation, pace, order]", "task.pace.clip_len=6"),
                                   ("task.multitask.tasks=[jigsaw, relative_position, cubic_puzzle]",
                                    "task.multitask.weights=[1.0, 1.0, 1.0]", "task.jigsaw.num_permutations=24",
                                    "task.cubic_puzzle.cell_len=5"),
                                   ("task.multitask.tasks=[dpc, flow_similarity, order]",
                                    "task.multitask.weights=[1.0, 1.0, 1.0]", "task.dpc.num_blocks=3",
                                    "task.dpc.block_len=2", "task.dpc.stride=2", "task.dpc.pred_steps=1")],
                         ids=["order-vcop-avc", "rotation-pace-order", "jigsaw-relative_position-cubic_puzzle",
                              "dpc-flow_similarity-order"])
def test_one_decode_serves_every_task_as_its_own_decode(tiny_synthav: Path, tasks: tuple[str, ...]) -> None:
    task = multitask(tiny_synthav, *tasks)
    rows = [r for r in read_manifest(tiny_synthav / "manifest.csv", "pretrain") if r.has_audio][:3]
    for seed, row in enumerate(rows):
        window = task.window(row, np.random.default_rng(seed))
        assert np.array_equal(window.frames, np.unique(np.concatenate([w.frames for w in window.parts.values()])))
        avc = window.parts.get("avc", Window(np.array([])))
        assert window.audio_start_s == avc.audio_start_s and window.audio_duration_s == avc.audio_duration_s
        clip = decode_window(row, window, 32)
        assert len(clip.video) == len(window.frames)  # each frame decoded once
        sample = task.make_sample(clip, np.random.default_rng(seed))
        streams = np.random.default_rng(seed).spawn(3)
        for (name, sub), stream in zip(task.tasks.items(), streams):
            alone = sub.make_sample(decode_window(row, window.parts[name], 32), stream)
            assert set(alone) == {key.split("/", 1)[1] for key in sample if key.startswith(f"{name}/")}
            for key, value in alone.items():
                assert torch.equal(sample[f"{name}/{key}"], value), (name, key)


def test_audio_parts_have_the_length_of_their_own_decode(tiny_synthav: Path) -> None:
    """Two tasks' audio spans at fractional times (AVTS's shifts are): each part cut from the union's
    decode is as long as its own decode, and starts within a sample of its own start."""
    task = multitask(tiny_synthav)
    row = read_manifest(tiny_synthav / "manifest.csv", "pretrain")[0]
    rate, rng = task.sample_rate, np.random.default_rng(0)
    for _ in range(500):
        starts, durations = rng.uniform(0, 2, 2), rng.uniform(0.5, 1.5, 2)
        parts = {name: Window(np.array([0]), start, duration) for name, start, duration in zip("ab", starts, durations)}
        start = starts.min()
        union = Window(np.array([0]), start, max(starts + durations) - start, parts=parts)
        audio = torch.arange(round(union.audio_duration_s * rate), dtype=torch.float32)
        cut = task.parts(DecodedClip(torch.zeros(1, 2, 2, 3, dtype=torch.uint8), audio, union, row))
        for name, part in parts.items():
            assert len(cut[name].audio) == round(part.audio_duration_s * rate)
            assert abs(float(cut[name].audio[0]) - (part.audio_start_s - start) * rate) <= 1


def test_loss_is_the_weighted_sum_and_each_task_is_logged(tiny_synthav: Path) -> None:
    task = multitask(tiny_synthav)
    rows = read_manifest(tiny_synthav / "manifest.csv", "pretrain")
    dataset = PretextDataset(rows, task, 32)
    assert task.needs_audio and dataset.excluded["no_audio"] > 0  # AVC leaves out silent videos
    batch = collate([dataset[i] for i in range(6)])
    batch.pop("skipped")
    torch.manual_seed(0)
    model = TaskModel(task, build_video_encoder("tiny3d")).eval()  # no dropout: the sum is exact
    torch.manual_seed(1)
    out = model(batch)
    assert {"order/loss", "vcop/loss", "avc/loss", "order/accuracy", "avc/hard_share"} <= set(out)
    expected = out["order/loss"] + 0.5 * out["vcop/loss"] + 2.0 * out["avc/loss"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    out["loss"].backward()
    for name in task.tasks:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head[name].parameters()), name


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="one weight each"):
        build_task(load_config(None, ["task.name=multitask", "task.multitask.tasks=[order, vcop]",
                                      "task.multitask.weights=[1.0]"]))
    with pytest.raises(ValueError, match="share one encoder"):
        build_task(load_config(None, ["task.name=multitask", "task.multitask.tasks=[order, wav2vec2]",
                                      "task.multitask.weights=[1.0, 1.0]", "model.audio_encoder=wav2vec2_tiny"]))


def test_shipped_config_trains_one_step_and_logs_each_task(tiny_synthav: Path, tmp_path: Path) -> None:
    config = load_config(ROOT / "configs/pretrain/multitask.yaml", [
        "data.frame_size=32", "data.batch_size=4", "data.num_workers=0", "train.max_steps=1",
        "train.log_every=1", f"data.synthav_dir={tiny_synthav}"])
    assert pretrain(config, tmp_path).exists()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    for name in config.task.multitask.tasks:
        assert np.isfinite(record[f"{name}/loss"])


def test_shipped_config_sets_each_task_as_its_own_config_does() -> None:
    config = load_config(ROOT / "configs/pretrain/multitask.yaml")
    for name in config.task.multitask.tasks:
        single = load_config(ROOT / f"configs/pretrain/{name}.yaml")
        assert getattr(config.task, name) == getattr(single.task, name), name
