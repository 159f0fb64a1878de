"""The online kNN monitor: kNN top-1 of the encoder being trained, logged at its steps (drawn with the
other curves: tests/test_plot.py); a run reaches the same weights with it on or off."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from mmssl.config import Config, ConfigError, load_config
from mmssl.data.manifest import read_manifest, write_manifest
from mmssl.engine.monitor import monitor_transfer_config
from mmssl.engine.trainer import pretrain
from mmssl.eval.transfer import Transfer, load_encoder

FAST = ["model.video_encoder=tiny3d", "data.frame_size=32", "data.batch_size=8", "data.num_workers=0",
        "train.log_every=1", "monitor.clip_len=4"]


def fast_config(synthav: Path, *overrides: str) -> Config:
    return load_config(None, [*FAST, f"data.synthav_dir={synthav}", *overrides])


def records(run: Path, key: str) -> list[dict]:
    return [r for line in (run / "metrics.jsonl").read_text().splitlines() if key in (r := json.loads(line))]


def test_knn_top1_is_logged_at_its_steps_and_shown(tiny_synthav: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    config = fast_config(tiny_synthav, "train.max_steps=4", "monitor.every=3")
    final = pretrain(config, tmp_path / "run")
    knn = records(tmp_path / "run", "knn_top1")
    assert [r["step"] for r in knn] == [0, 3, 4]  # random init, every 3 steps, the last
    assert [r["epoch"] for r in knn] == [0, 0, 1]  # 3 steps an epoch
    assert all(0 <= r["knn_top1"] <= 100 and r["knn_s"] > 0 for r in knn)
    assert "knn=" in capsys.readouterr().err  # on the progress bar
    # the last measurement is transfer's kNN of the final checkpoint with the same clips
    encoder, _, mode, encoder_input = load_encoder(final)
    transfer = Transfer(monitor_transfer_config(config), torch.device("cpu"))
    assert transfer.frozen_protocol(encoder, mode, "knn", encoder_input)["video_top1"] == knn[-1]["knn_top1"]


def test_a_run_reaches_the_same_weights_with_the_monitor_on_or_off(tiny_synthav: Path, tmp_path: Path) -> None:
    """tiny3d has BatchNorm: an encoder left in eval mode, or a draw from the training's RNG streams,
    would change the weights."""
    for name, every in (("off", 0), ("on", 2)):
        pretrain(fast_config(tiny_synthav, "train.max_steps=4", f"monitor.every={every}"), tmp_path / name)
    assert len(records(tmp_path / "on", "knn_top1")) == 3 and not records(tmp_path / "off", "knn_top1")
    off, on = (torch.load(tmp_path / name / "checkpoint_000004.pt", weights_only=True)["model"] for name in ("off", "on"))
    assert off.keys() == on.keys()
    for key in off:
        assert torch.equal(off[key], on[key]), key


def test_a_manifest_given_by_config_is_used(tiny_synthav: Path, tmp_path: Path) -> None:
    """Its own split names and label column; every video of one class, so each vote is right."""
    rows = [dataclasses.replace(r, split={"train": "vote", "test": "score"}[r.split], extra={"kind": "one"})
            for r in read_manifest(tiny_synthav / "manifest.csv") if r.split in ("train", "test")]
    manifest = write_manifest(rows, tmp_path / "labeled.csv")
    overrides = [f"monitor.manifest={manifest}", "monitor.train_split=vote", "monitor.test_split=score",
                 "monitor.label_column=kind", "monitor.every=2", "train.max_steps=2"]
    pretrain(fast_config(tiny_synthav, *overrides), tmp_path / "run")
    assert [r["knn_top1"] for r in records(tmp_path / "run", "knn_top1")] == [100.0, 100.0]
    with pytest.raises(ConfigError, match=r"^monitor: .*labeled.csv has no rows in split 'train'"):
        pretrain(fast_config(tiny_synthav, *overrides, "monitor.train_split=train"), tmp_path / "other")


def test_the_monitor_settings() -> None:
    """Their ranges: tests/test_config.py."""
    config = load_config(None, ["data.frame_size=48", "data.num_workers=0", "monitor.k=5", "monitor.temperature=0.1",
                                "monitor.num_clips=2"])
    transfer = monitor_transfer_config(config)
    assert (transfer.protocol, transfer.frame_size, transfer.num_workers) == ("knn", 48, 0)
    assert (transfer.knn_k, transfer.knn_temperature, transfer.num_clips) == (5, 0.1, 2)
    assert Config().monitor.every == 0  # off unless a config turns it on
    with pytest.raises(ConfigError, match=r"unknown config key 'monitor.evry'"):
        load_config(None, ["monitor.evry=10"])


def test_monitor_settings_may_change_on_resume(tiny_synthav: Path, tmp_path: Path) -> None:
    """They change what a run logs, not its weights: `--resume auto` takes the run as it is."""
    final = pretrain(fast_config(tiny_synthav, "train.max_steps=2"), tmp_path)
    assert pretrain(fast_config(tiny_synthav, "train.max_steps=2", "monitor.every=1", "monitor.k=3"),
                    tmp_path, "auto") == final


def test_an_audio_task_is_monitored_on_its_audio_encoder(tiny_synthav: Path, tmp_path: Path) -> None:
    config = load_config(Path(__file__).resolve().parents[1] / "configs/pretrain/wav2vec2.yaml", [
        f"data.synthav_dir={tiny_synthav}", "data.batch_size=4", "data.num_workers=0", "train.max_steps=1",
        "monitor.every=1"])
    pretrain(config, tmp_path)
    assert [r["step"] for r in records(tmp_path, "knn_top1")] == [0, 1]
