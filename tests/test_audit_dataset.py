"""The static-cue audit (mmssl audit-dataset) on tiny videos whose labels are seen, heard, or neither."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mmssl.cli.audit_dataset import AUDIO_CUES, CUES, DEFAULT_CONFIG, main
from mmssl.config import TransferConfig, load_config
from mmssl.data.manifest import ManifestRow, write_manifest
from mmssl.eval.transfer import Transfer, random_encoder
from mmssl.io import probe, write_media

FPS, SIZE, SAMPLE_RATE = 16.0, 32, 16000
COLOURS = ((200, 40, 40), (40, 200, 40), (40, 40, 200))
PITCHES = (300.0, 900.0, 2500.0)  # Hz
PROBE = ["linear_penalty=[0.1]"]


def write_video(path: Path, colour: int, pitch: int | None, rng: np.random.Generator) -> Path:
    """1 s of a background of colour `colour` (noisy, with a moving grey square) and, unless `pitch` is
    None, a tone of pitch `pitch` at a random phase."""
    frames = np.clip(np.array(COLOURS[colour]) + rng.normal(0, 20, (16, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    for t, x in enumerate(rng.integers(0, SIZE - 8, 16)):
        frames[t, 12:20, x:x + 8] = 128
    time = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    audio = None if pitch is None else 0.3 * np.sin(2 * np.pi * PITCHES[pitch] * time + rng.uniform(0, 6.3))
    return write_media(path, frames, FPS, None if audio is None else audio.astype(np.float32), SAMPLE_RATE)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 train and 18 test videos: `colour` seen, `pitch` heard (one test video has no audio), `noise`
    random."""
    folder = tmp_path_factory.mktemp("audit")
    rng = np.random.default_rng(0)
    rows = []
    for split, count in (("train", 36), ("test", 18)):
        for i in range(count):
            colour, pitch = i % 3, i // 3 % 3
            silent = split == "test" and i == 0
            path = write_video(folder / f"{split}_{i}.mp4", colour, None if silent else pitch, rng)
            rows.append(ManifestRow.from_info(path, probe(path), "", split, colour=str(colour),
                                              pitch=str(pitch), noise=str(rng.integers(3))))
    return write_manifest(rows, folder / "manifest.csv")


@pytest.fixture(scope="module")
def report(manifest: Path) -> dict:
    """The audit of `manifest`, its linear probe with one penalty (no cross-validation: fast)."""
    out = manifest.parent / "audit.json"
    main(["--manifest", str(manifest), "--labels", "colour", "pitch", "noise", "--train-splits", "train",
          "--workers", "0", "--out", str(out), *PROBE])
    return json.loads(out.read_text())


def test_report_has_every_label_cue_and_protocol_with_chance(report: dict) -> None:
    audit = report["audits"]["train"]
    assert list(audit) == ["colour", "pitch", "noise"] and report["left_out"] == {} and report["videos"] == 54
    for label in audit.values():
        assert label["classes"] == ["0", "1", "2"] and label["chance"] == pytest.approx(100 / 3)
        assert set(label["cues"]) == set(CUES)
        for name, cue in label["cues"].items():
            assert cue["num_train_videos"] == 36
            assert cue["num_test_videos"] == (17 if name in AUDIO_CUES else 18)  # the silent video
            assert 0 <= cue["linear"]["video_top1"] <= 100 and 0 <= cue["knn"]["video_top1"] <= 100
            assert cue["linear"]["probe"]["penalty"] == 0.1 and len(cue["knn"]["confusion"]) == 3


def test_a_seen_label_is_found_in_one_frame_a_heard_one_in_the_audio_and_noise_nowhere(report: dict) -> None:
    audit = report["audits"]["train"]

    def top1(label: str, cue: str) -> list[float]:
        return [audit[label]["cues"][cue][protocol]["video_top1"] for protocol in ("linear", "knn")]

    assert min(top1("colour", "one_frame") + top1("colour", "mean_frame")) >= 90
    assert min(top1("pitch", "audio_logmel")) >= 90
    assert max(top1("pitch", "one_frame")) <= 60  # the colour does not name the pitch
    noise = [score for cue in CUES for score in top1("noise", cue)]
    assert np.mean(noise) <= 100 / 3 + 15


def test_the_random_tiny3d_cue_is_the_transfer_protocol_at_random_init(manifest: Path, report: dict) -> None:
    config = load_config(DEFAULT_CONFIG, PROBE, root=TransferConfig)
    transfer = Transfer(replace(config, manifest=str(manifest), label_column="noise", num_workers=0))
    expected = transfer.frozen_protocol(random_encoder("tiny3d", config.seed), "clip", "linear")
    assert report["audits"]["train"]["noise"]["cues"]["tiny3d_random"]["linear"]["confusion"] == expected["confusion"]
