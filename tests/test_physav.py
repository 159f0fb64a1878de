"""PhysAV: determinism, label rules, the manifest, audio-contact sync, and pretraining configs reading it."""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import PRETRAINING_CONFIGS, one_config_per_task, shipped_config_batches  # tests/ is on sys.path

from mmssl.cli.make_synthetic import main
from mmssl.data import physav
from mmssl.data.manifest import read_manifest
from mmssl.data.physav import (
    CATEGORIES,
    CLASSES,
    MATERIALS,
    PhysAVConfig,
    ensure_physav,
    generate,
    plan,
    render_video,
    video_rng,
)
from mmssl.io import VideoReader, load_audio, probe

TINY = PhysAVConfig(seed=5, size=32, duration=1.5, num_pretrain=4, train_per_class=1, test_per_class=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset, generated once in parallel processes; returns its manifest."""
    return generate(tmp_path_factory.mktemp("physav") / "tiny", TINY, workers=2)


def decode(path: str) -> tuple[np.ndarray, np.ndarray]:
    """All frames (uint8 [T, H, W, 3]) and the whole audio of a file, via mmssl.io."""
    with VideoReader(path) as reader:
        frames = reader.get_frames(np.arange(reader.num_frames)).numpy()
    return frames, load_audio(path, 0.0, probe(path).duration).numpy()


def test_plan_balances_labels_and_draws_material_apart_from_category() -> None:
    config = PhysAVConfig()
    specs = plan(config)
    assert Counter(s.split for s in specs) == config.split_sizes()
    for split in ("pretrain", "train", "test"):
        in_split = [s for s in specs if s.split == split]
        for column, names in (("action", CLASSES), ("category", CATEGORIES), ("material", MATERIALS)):
            counts = Counter(getattr(s, column) for s in in_split)
            assert set(counts) == set(names) and max(counts.values()) - min(counts.values()) <= 1, (split, column)
    # independence: a chi-square test of category x material, far below its 99.9% quantile (df 35: 66.6)
    table = np.zeros((len(CATEGORIES), len(MATERIALS)))
    for s in specs:
        table[list(CATEGORIES).index(s.category), list(MATERIALS).index(s.material)] += 1
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    assert table.min() > 0 and ((table - expected) ** 2 / expected).sum() < 66.6
    with pytest.raises(ValueError):
        PhysAVConfig(fps=7.0)  # frames must fall on physics steps


def test_manifest_columns_labels_and_media(tiny: Path) -> None:
    with open(tiny, newline="") as f:
        header = next(csv.reader(f))
    assert {"path", "label", "split", "num_frames", "has_audio", "action", "object", "material",
            "impacts"} <= set(header)
    rows = read_manifest(tiny)
    assert Counter(r.split for r in rows) == {"pretrain": 4, "train": 8, "test": 8}
    for split in ("train", "test"):
        assert Counter(r.label for r in rows if r.split == split) == Counter(CLASSES)
    assert all(r.label == ("" if r.split == "pretrain" else r.extra["action"]) for r in rows)
    assert {r.extra["object"] for r in rows} == set(CATEGORIES)
    assert {r.extra["material"] for r in rows} == set(MATERIALS)
    for row in rows:
        assert row.has_audio and row.num_frames == 24 and row.duration == pytest.approx(1.5, abs=1e-3)
        assert probe(row.path).width == 32
        impacts = [int(k) for k in row.extra["impacts"].split(";") if k]
        assert all(0 <= k < row.num_frames for k in impacts)
    dropped = [r for r in rows if r.extra["action"] in ("drop", "stack")]
    assert all(r.extra["impacts"] for r in dropped)  # what falls at the first frame lands in view of the clip


def test_same_seed_same_media_different_seed_different(tiny: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", TINY, workers=1)  # other worker count, same result
    assert again.read_text() == tiny.read_text()
    for first, second in zip(read_manifest(tiny), read_manifest(again), strict=True):
        for a, b in zip(decode(first.path), decode(second.path), strict=True):
            np.testing.assert_array_equal(a, b)
    other = replace(TINY, seed=TINY.seed + 1, num_pretrain=2, train_per_class=0, test_per_class=0)
    for first, second in zip(read_manifest(tiny), read_manifest(generate(tmp_path / "other", other, workers=1))):
        frames_a, audio_a = decode(first.path)
        frames_b, audio_b = decode(second.path)
        assert np.abs(frames_a.astype(int) - frames_b.astype(int)).mean() > 5
        assert not np.allclose(audio_a, audio_b, atol=1e-3)


def test_ensure_takes_a_physav_folder_as_it_is_and_fills_an_empty_one(tiny: Path, tmp_path: Path) -> None:
    made = tiny.stat().st_mtime_ns
    assert ensure_physav(tiny.parent) == tiny and tiny.stat().st_mtime_ns == made  # TINY, not the default config
    small = replace(TINY, num_pretrain=1, train_per_class=0, test_per_class=0)
    assert len(read_manifest(ensure_physav(tmp_path / "d", small, workers=1))) == 1


def test_contact_clicks_are_in_sync_with_contact_frames(tiny: Path) -> None:
    """The decoded audio's click starts within one frame of every isolated contact of the main object
    (no other contact of any object within 3 frames: the simulation, re-run for the row, says where the
    distractors' are). The start: the steepest rise of the 2 ms energy within 2 frames of the contact
    (the energy's own peak may be an earlier contact's glass or metal ring, which lasts for frames)."""
    checked, specs = 0, {spec.name: spec for spec in plan(TINY)}
    for row in read_manifest(tiny):
        spec = specs[Path(row.path).stem]
        info = render_video(TINY, spec.action, spec.category, spec.material, video_rng(TINY, spec.index))[2]
        impacts = [int(k) for k in row.extra["impacts"].split(";") if k]
        assert impacts == info["impacts"] and set(impacts) <= set(info["all_impacts"])
        audio = load_audio(row.path, 0.0, row.duration, sample_rate=16000).numpy()
        energy = np.convolve(audio ** 2, np.ones(32), mode="valid")  # 2 ms windows starting at n
        rise = energy[32:] - energy[:-32]  # from the window before n + 32 to the one starting there
        frame_samples = round(16000 / row.fps)
        for frame in impacts:
            if any(0 < abs(other - frame) <= 3 for other in info["all_impacts"]):
                continue
            centre = frame * frame_samples
            lo = max(centre - 2 * frame_samples, 0)
            onset = lo + 32 + int(np.argmax(rise[lo:centre + 2 * frame_samples]))
            assert abs(onset - centre) <= frame_samples, (row.path, frame, onset - centre)
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("action", CLASSES)
def test_every_event_is_seen_and_heard(action: str) -> None:
    """The main object is in view on most frames, and the event makes a sound."""
    config = replace(TINY, duration=2.0)
    frames, audio, info = render_video(config, action, "box", "wood", np.random.default_rng(1))
    assert frames.shape == (32, 32, 32, 3) and audio.shape == (32000,)
    assert info["visible"] >= 0.5, info
    assert np.abs(audio).max() > 0.02 and np.abs(audio).max() <= 1.0
    if action in ("drop", "throw", "stack"):
        assert info["impacts"], info


@pytest.mark.parametrize("category", CATEGORIES)
def test_objects_wear_their_colour_only(category: str) -> None:
    """No mesh shows a texture of its own (the duck's and the torus's would name the category): the
    object's lit pixels keep one chromaticity, whatever the shading does to their brightness."""
    import pybullet as pb

    client = physav._client()
    pb.resetSimulation(physicsClientId=client)
    body = physav._add_object(np.random.default_rng(0), client, CATEGORIES[category], "wood", (0.0, 0.0))
    view = pb.computeViewMatrixFromYawPitchRoll([0, 0, 0.03], 0.25, 30, -30, 0, 2)
    projection = pb.computeProjectionMatrixFOV(40, 1.0, 0.05, 10)
    _, _, rgba, _, mask = pb.getCameraImage(64, 64, view, projection, renderer=pb.ER_TINY_RENDERER,
                                            physicsClientId=client)
    pixels = np.reshape(rgba, (64, 64, 4))[..., :3][np.reshape(mask, (64, 64)) == body.uid].astype(float)
    pixels = pixels[pixels.sum(1) > 60]  # dark pixels' chromaticity is rounding noise
    chromaticity = pixels / pixels.sum(1, keepdims=True)
    assert len(pixels) > 200 and chromaticity.std(0).max() < 0.003  # the torus's own texture: 0.24, the duck's 0.008


def frame_share(kind: physav.Category, distance: tuple[float, float], rng: np.random.Generator, views: int) -> float:
    """The mean share of a 64x64 frame that an object of `kind`, settled on the floor, covers over
    `views` random views from `distance` (m)."""
    import pybullet as pb

    client, covered = physav._client(), []
    for _ in range(views):
        pb.resetSimulation(physicsClientId=client)
        pb.setGravity(0, 0, -physav.GRAVITY, physicsClientId=client)
        physav._floor(rng, client)
        body = physav._add_object(rng, client, kind, "wood", (0.0, 0.0))
        for _ in range(60):  # settle
            pb.stepSimulation(physicsClientId=client)
        view, projection, _ = physav._camera(rng, np.array([*physav._position(client, body)[:2], 0.05]), distance)
        mask = pb.getCameraImage(64, 64, view, projection, renderer=pb.ER_TINY_RENDERER, physicsClientId=client)[4]
        covered.append((np.reshape(mask, -1) == body.uid).mean())
    return float(np.mean(covered))


def test_apparent_size_does_not_name_the_category() -> None:
    """Over random views, every category covers the same share of the frame on average (within 30%):
    the categories' `scale` undoes their shapes' differences (a teddy's thin limbs, a box's bulk)."""
    rng, distance = np.random.default_rng(0), (PhysAVConfig.camera_near, PhysAVConfig.camera_far)
    shares = {name: frame_share(kind, distance, rng, 12) for name, kind in CATEGORIES.items()}
    assert max(shares.values()) < 1.3 * min(shares.values()), shares  # unscaled: teddy 4.7%, box 14.6%


def test_a_nearer_camera_shows_the_object_larger() -> None:
    """At 0.7 times the distance an object covers about twice the share of the frame (1 / 0.7^2)."""
    near, far = (frame_share(CATEGORIES["box"], distance, np.random.default_rng(0), 8)
                 for distance in ((0.245, 0.42), (0.35, 0.6)))
    assert 1.6 < near / far < 2.5, (near, far)
    with pytest.raises(ValueError, match="camera_near <= camera_far"):
        PhysAVConfig(camera_near=0.6, camera_far=0.35)


@pytest.mark.parametrize("path", one_config_per_task(PRETRAINING_CONFIGS), ids=lambda p: p.stem)
def test_pretraining_configs_read_physav(path: Path, tiny: Path) -> None:
    model, (batch,) = shipped_config_batches(path, tiny.parent, overrides=[f"data.manifest={tiny}",
                                                                           "data.split=pretrain"])
    assert model(batch)["loss"].isfinite()


def test_cli_makes_physav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dataset", "physav", "--out", str(tmp_path / "cli"), "--size", "32", "--duration", "0.5",
                 "--num-pretrain", "2", "--train-per-class", "0", "--test-per-class", "0", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["pretrain", "2", "0", "0"] and lines[4].split() == ["all", "2", "0", "0"]
    assert (tmp_path / "cli" / "physav.json").is_file()
    with pytest.raises(SystemExit):
        main(["--dataset", "physav", "--out", str(tmp_path / "x"), "--layout", "shared"])  # a SynthAV knob
