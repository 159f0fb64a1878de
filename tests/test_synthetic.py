"""SynthAV: determinism, splits, robustness shares, motion semantics, audio model and A/V sync."""
from __future__ import annotations

import importlib.util
import json
from collections import Counter
from dataclasses import asdict, replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from mmssl.data.manifest import read_manifest
from mmssl.data.synthetic import (
    CLASSES,
    GENERATOR_VERSION,
    LAYOUTS,
    PITCH_LOW_HZ,
    PITCH_OCTAVES,
    SHAPES,
    SynthAVConfig,
    ensure_synthav,
    generate,
    plan,
    render_video,
)
from mmssl.io import NoAudioStreamError, VideoReader, load_audio, probe

REPO = Path(__file__).resolve().parents[1]
TINY = SynthAVConfig(seed=3, size=48, fps=16.0, duration=2.0, short_duration=0.5,
                     num_pretrain=20, train_per_class=2, test_per_class=2,
                     no_audio_share=0.5, short_share=0.5)
RENDER = SynthAVConfig(size=48, distractor_prob=1.0)  # for frame-level checks, no encoding
# long paths and large changes of size: wide contrasts in pitch and loudness for the audio checks
WIDE = replace(RENDER, layout="by_class")
COLOUR_TOLERANCE = 40  # uint8 per channel: SynthAV keeps shapes >= ~50 away from their surroundings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset, generated once in parallel processes; returns its manifest."""
    return generate(tmp_path_factory.mktemp("synthav") / "tiny", TINY, workers=2)


def decode(row_path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """All frames (uint8 [T, H, W, 3]) and the whole audio (or None) of a file, via mmssl.io."""
    with VideoReader(row_path) as reader:
        frames = reader.get_frames(np.arange(reader.num_frames)).numpy()
    info = probe(row_path)
    audio = load_audio(row_path, 0.0, info.duration).numpy() if info.has_audio else None
    return frames, audio


def object_mask(frames: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Pixels of a shape's colour: bool [T, H, W]."""
    return (np.abs(frames.astype(int) - colour.astype(int)) < COLOUR_TOLERANCE).all(-1)


def reach(mask: np.ndarray, side: str) -> np.ndarray:
    """Per frame: how far toward the frame's `side` ("bottom", "right" or "left") the shape's
    pixels go, in pixels from the opposite side (the frame's size at the edge itself)."""
    axis, flip = {"bottom": (2, False), "right": (1, False), "left": (1, True)}[side]
    seen = mask.any(axis)[:, ::-1] if flip else mask.any(axis)  # [T, pixels along the side's axis]
    return seen.shape[1] - np.argmax(seen[:, ::-1], axis=1)


def touches(mask: np.ndarray, side: str) -> np.ndarray:
    """Per frame: does the shape come within a pixel of the farthest it ever goes toward `side`
    (the floor or the wall it hits)? A pointed tip only partly covers its last pixel, so that pixel
    may not pass the colour test. At >= 1.35 pixels a frame, the frames just before an impact may too."""
    reached = reach(mask, side)
    return reached >= reached.max() - 1


def centroid_and_area(frames: np.ndarray, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centroid x, y and area of the `colour` pixels, in frame units."""
    mask = object_mask(frames, colour)
    size = frames.shape[1]
    area = mask.sum((1, 2))
    assert area.min() > 0, "the shape must be visible in every frame"
    coords = (np.arange(size) + 0.5) / size
    return ((mask * coords[None, None, :]).sum((1, 2)) / area,
            (mask * coords[None, :, None]).sum((1, 2)) / area, area / size ** 2)


# ----------------------------------------------------------------------------- dataset on disk

def test_splits_classes_and_labels(tiny: Path) -> None:
    rows = read_manifest(tiny)
    by_split = {split: [r for r in rows if r.split == split] for split in ("pretrain", "train", "test")}
    assert {split: len(r) for split, r in by_split.items()} == {"pretrain": 20, "train": 20, "test": 20}
    assert all(r.label == "" for r in by_split["pretrain"])
    assert Counter(r.extra["action"] for r in by_split["pretrain"]) == Counter({c: 2 for c in CLASSES})
    for split in ("train", "test"):
        assert Counter(r.label for r in by_split[split]) == Counter({c: 2 for c in CLASSES})
        assert all(r.label == r.extra["action"] for r in by_split[split])
    assert {r.extra["shape"] for r in rows} <= set(SHAPES)
    assert all(Path(r.path).is_file() and Path(r.path).suffix == ".mp4" for r in rows)
    impacts = {r.extra["action"] for r in rows if r.extra["impacts"]}
    assert impacts <= {"fall_bounce", "slide_stop"} and "fall_bounce" in impacts


def test_no_audio_and_short_videos_are_exact_shares_and_real(tiny: Path) -> None:
    rows = read_manifest(tiny)
    for split in ("pretrain", "train", "test"):
        in_split = [r for r in rows if r.split == split]
        assert sum(not r.has_audio for r in in_split) == 10
        assert Counter(r.num_frames for r in in_split) == Counter({32: 10, 8: 10})
    for row in rows:
        assert row.duration == pytest.approx(row.num_frames / 16.0, abs=1e-3)
        with VideoReader(row.path) as reader:
            assert reader.num_frames == row.num_frames
        if not row.has_audio:
            with pytest.raises(NoAudioStreamError):
                load_audio(row.path, 0.0, 0.5)


def test_same_seed_same_media_different_seed_different(tiny: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", TINY, workers=1)  # other worker count, same result
    assert again.read_text() == tiny.read_text()
    for first, second in zip(read_manifest(tiny), read_manifest(again)):
        frames_1, audio_1 = decode(first.path)
        frames_2, audio_2 = decode(second.path)
        np.testing.assert_array_equal(frames_1, frames_2)
        assert (audio_1 is None) == (audio_2 is None)
        if audio_1 is not None:
            assert np.abs(audio_1).max() > 0.01
            np.testing.assert_array_equal(audio_1, audio_2)

    small = replace(TINY, num_pretrain=3, train_per_class=0, test_per_class=0, no_audio_share=0.0,
                    short_share=0.0)
    rows_a = read_manifest(generate(tmp_path / "a", small, workers=1))
    rows_b = read_manifest(generate(tmp_path / "b", replace(small, seed=small.seed + 1), workers=1))
    for row_a, row_b in zip(rows_a, rows_b):
        (frames_a, audio_a), (frames_b, audio_b) = decode(row_a.path), decode(row_b.path)
        assert np.abs(frames_a.astype(int) - frames_b.astype(int)).mean() > 10
        assert not np.allclose(audio_a, audio_b, atol=1e-3)


def test_generate_skips_a_matching_folder_and_redoes_a_changed_one(tmp_path: Path) -> None:
    config = replace(TINY, num_pretrain=2, train_per_class=0, test_per_class=0)
    manifest = generate(tmp_path / "d", config, workers=1)
    stamp = manifest.stat().st_mtime_ns
    assert generate(tmp_path / "d", config) == manifest and manifest.stat().st_mtime_ns == stamp
    assert ensure_synthav(tmp_path / "d") == manifest and manifest.stat().st_mtime_ns == stamp
    # a folder an older generator made is made again, by ensure_synthav with the settings it had
    config_file = tmp_path / "d" / "synthav.json"
    for make in (lambda: generate(tmp_path / "d", config, workers=1), lambda: ensure_synthav(tmp_path / "d")):
        old = {k: v for k, v in json.loads(config_file.read_text()).items() if k != "layout"}  # before layouts
        config_file.write_text(json.dumps({**old, "generator_version": 1}))
        assert make() == manifest
        assert json.loads(config_file.read_text()) == {"generator_version": GENERATOR_VERSION, **asdict(config)}

    generate(tmp_path / "d", replace(config, num_pretrain=1), workers=1)
    assert len(read_manifest(manifest)) == 1
    assert len(list((tmp_path / "d" / "videos").rglob("*.mp4"))) == 1  # stale videos removed

    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("not SynthAV")
    with pytest.raises(FileExistsError):
        generate(tmp_path / "foreign", config)


def test_impact_clicks_are_in_sync_with_impact_frames(tiny: Path) -> None:
    """The decoded audio's short-time energy peaks within one frame of every recorded impact."""
    checked = 0
    for row in read_manifest(tiny):
        if not (row.has_audio and row.extra["impacts"]):
            continue
        rate = 16000
        audio = load_audio(row.path, 0.0, row.duration, sample_rate=rate).numpy()
        energy = np.convolve(audio ** 2, np.ones(32), mode="valid")  # 2 ms windows starting at n
        frame_samples = round(rate / row.fps)
        for frame in map(int, row.extra["impacts"].split(";")):
            centre = frame * frame_samples
            lo = max(centre - 2 * frame_samples, 0)
            peak = lo + int(np.argmax(energy[lo:centre + 2 * frame_samples]))
            assert abs(peak - centre) <= frame_samples, (row.path, frame, peak - centre)
            assert abs(peak - centre) <= 0.005 * rate  # in fact within a few ms
            checked += 1
    assert checked >= 3


def test_cli_prints_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("make_synthetic", REPO / "tools" / "make_synthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path / "cli"), "--size", "32", "--duration", "1",
                        "--short-duration", "0.5", "--num-pretrain", "4", "--train-per-class", "1",
                        "--test-per-class", "0", "--no-audio-share", "0.5", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["pretrain", "4", "2", "0"]
    assert lines[2].split() == ["train", "10", "5", "0"]
    assert lines[4].split() == ["all", "14", "7", "0"]
    assert probe(tmp_path / "cli" / "videos" / "train" / "train_00000.mp4").width == 32


# ----------------------------------------------------------------------------- rendering semantics

@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("forward, backward, measure", [
    ("move_right", "move_left", 0), ("move_down", "move_up", 1), ("grow", "shrink", 2)])
def test_reversible_pairs_are_time_reversals(forward: str, backward: str, measure: int, layout: str) -> None:
    """x (0), y (1) or area (2) of the main shape, measured on the frames, grows steadily in the
    forward class and shrinks in the backward one, by at least (most of) the layout's least change.
    At the dataset's 64 px: the smallest shapes of "shared" (radius 0.04) have a radius of 2.6 pixels."""
    config, ranges = replace(RENDER, layout=layout, size=64), LAYOUTS[layout]
    least_travel = ranges.path_start[0] - ranges.path_end[1]
    least_growth = (ranges.grow_big[0] / ranges.grow_small[1]) ** 2
    for seed in range(4):
        series = {}
        for action in (forward, backward):
            frames, _, info = render_video(config, action, np.random.default_rng([seed, 99]))
            series[action] = centroid_and_area(frames, info["color"])[measure]
        steps = np.arange(len(series[forward]))
        assert np.corrcoef(steps, series[forward])[0, 1] > 0.98
        assert np.corrcoef(steps, series[backward])[0, 1] < -0.98
        if measure == 2:
            assert series[forward][-1] > 0.8 * least_growth * series[forward][0]
            assert series[backward][0] > 0.8 * least_growth * series[backward][-1]
        else:
            assert series[forward][-1] - series[forward][0] > 0.8 * least_travel
            assert series[backward][0] - series[backward][-1] > 0.8 * least_travel


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_rotation_direction_is_visible(layout: str) -> None:
    """The orientation mark turns clockwise on screen (angle grows with y pointing down) for
    rotate_cw and the other way for rotate_ccw, at 1-2 rad/s, while the shape stays in place."""
    config = replace(RENDER, layout=layout)
    for seed in range(3):
        for action, sign in (("rotate_cw", 1), ("rotate_ccw", -1)):
            frames, _, info = render_video(config, action, np.random.default_rng([seed, 7]), shape="square")
            x, y, _ = centroid_and_area(frames, info["color"])
            track = info["track"]
            coords = (np.arange(config.size) + 0.5) / config.size
            dx = coords[None, None, :] - track["x"][:, None, None]
            dy = coords[None, :, None] - track["y"][:, None, None]
            near = np.hypot(dx, dy) < 0.65 * track["radius"][:, None, None]  # inside the square
            mark = object_mask(frames, info["mark_color"]) & near
            angles = np.unwrap(np.arctan2((mark * dy).sum((1, 2)), (mark * dx).sum((1, 2))))
            speed = np.polyfit(np.arange(len(angles)) / config.fps, angles, 1)[0]
            assert 0.8 < sign * speed < 2.2
            assert np.ptp(x) < 0.05 and np.ptp(y) < 0.05  # only the turning mark moves it


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_fall_bounce_hits_the_floor_at_impacts_with_damping(layout: str) -> None:
    """Every impact puts the shape's lowest point on one floor line (the bottom edge in "by_class",
    anywhere in the layout's `edge` range in "shared"); it is never below it."""
    config = replace(RENDER, layout=layout)
    for seed in range(4):
        frames, _, info = render_video(config, "fall_bounce", np.random.default_rng([seed, 5]))
        impacts = info["impacts"]
        assert len(impacts) >= 2 and impacts[0] > 3 and np.all(np.diff(impacts) >= 4)
        _, y, _ = centroid_and_area(frames, info["color"])
        lowest = reach(object_mask(frames, info["color"]), "bottom")
        floor = lowest[impacts].max()
        assert np.ptp(lowest[impacts]) <= 1.5 and lowest.max() <= floor
        assert LAYOUTS[layout].edge[0] * config.size - 1.5 <= floor <= LAYOUTS[layout].edge[1] * config.size
        on_floor = touches(object_mask(frames, info["color"]), "bottom")
        assert on_floor[impacts].all() and not on_floor[:impacts[0] - 1].any()
        apexes = [int(np.argmin(y[a:b])) + a for a, b in pairwise(impacts)]
        assert not on_floor[apexes[0]]  # it leaves the floor between impacts (later hops are low)
        assert np.all(np.diff(y[[0] + apexes]) > 0.02)  # every rebound peaks lower: irreversible


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_slide_stop_decelerates_into_a_wall(layout: str) -> None:
    config = replace(RENDER, layout=layout)
    for seed in range(4):
        frames, _, info = render_video(config, "slide_stop", np.random.default_rng([seed, 3]))
        assert len(info["impacts"]) == 1
        hit = info["impacts"][0]
        x, _, _ = centroid_and_area(frames, info["color"])
        direction = int(np.sign(x[hit] - x[0]))
        speed = direction * np.diff(x[:hit + 1])
        assert speed[:3].mean() > 1.3 * speed[-3:].mean() > 0  # slows down on the way in
        mask = object_mask(frames, info["color"])
        side = "right" if direction > 0 else "left"
        wall = reach(mask, side)[hit]
        assert LAYOUTS[layout].edge[0] * config.size - 1.5 <= wall <= LAYOUTS[layout].edge[1] * config.size
        at_wall = touches(mask, side)
        assert at_wall[hit] and not at_wall[:hit - 2].any() and reach(mask, side)[-1] < wall
        # bounces back, never toward it again (edge pixels blend with the drifting background: the
        # centroid of the pixels of its colour wavers by a fraction of a pixel)
        assert np.all(direction * np.diff(x[hit:]) <= 0.3 / config.size)


# ----------------------------------------------------------------------------- audio model

def dominant_frequency(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


def test_pitch_follows_height_and_loudness_follows_size() -> None:
    rate, quarter = WIDE.sample_rate, WIDE.sample_rate // 4
    _, audio, info = render_video(WIDE, "move_up", np.random.default_rng(1), shape="circle")
    for segment, frame in ((audio[:quarter], 2), (audio[-quarter:], -3)):
        expected = PITCH_LOW_HZ * 2 ** (PITCH_OCTAVES * (1 - info["track"]["y"][frame]))
        assert dominant_frequency(segment, rate) == pytest.approx(expected, rel=0.05)
    assert dominant_frequency(audio[-quarter:], rate) > 2 * dominant_frequency(audio[:quarter], rate)

    _, audio, _ = render_video(WIDE, "grow", np.random.default_rng(2))
    rms = [np.sqrt(np.mean(audio[s:s + quarter] ** 2)) for s in (0, len(audio) - quarter)]
    assert rms[1] > 2 * rms[0]


def test_each_shape_has_its_own_timbre() -> None:
    """Share of spectral energy above the fundamental: none for the circle, distinct otherwise."""
    rate = RENDER.sample_rate
    shares = {}
    for shape in SHAPES:
        _, audio, info = render_video(RENDER, "rotate_cw", np.random.default_rng(4), shape=shape)
        power = np.abs(np.fft.rfft(audio)) ** 2
        f0 = PITCH_LOW_HZ * 2 ** (PITCH_OCTAVES * (1 - info["track"]["y"][0]))
        cut = int(1.5 * f0 * len(audio) / rate)
        shares[shape] = power[cut:].sum() / power.sum()
    assert shares["circle"] < 0.01
    others = sorted(shares[s] for s in SHAPES if s != "circle")
    assert others[0] > 0.1 and np.all(np.diff(others) > 0.05)


# ----------------------------------------------------------------------------- the shared layout

def knn_accuracy(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray,
                 k: int = 15) -> float:
    """Top-1 of a k-nearest-neighbour vote on standardised features."""
    mean, std = train.mean(0), train.std(0) + 1e-9
    distances = ((((test - mean) / std)[:, None] - ((train - mean) / std)[None]) ** 2).sum(-1)
    votes = train_labels[np.argsort(distances, axis=1)[:, :k]]
    predictions = np.array([np.bincount(row, minlength=len(CLASSES)).argmax() for row in votes])
    return float((predictions == test_labels).mean())


def static_cues(layout: str, per_class: int = 60) -> tuple[float, float]:
    """kNN top-1 (10 classes) from the main shape's (x, y, radius) in one random frame, and from their
    mean over the video: what place and size alone tell of the class, with no motion."""
    config = SynthAVConfig(size=8, distractor_prob=0.0, layout=layout)  # only the track is used
    features: dict[str, list[np.ndarray]] = {"frame": [], "mean": []}
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    for label in labels:
        rng = np.random.default_rng([len(features["frame"]), 11])
        _, _, info = render_video(config, CLASSES[label], rng)
        track = np.stack([info["track"][key] for key in ("x", "y", "radius")], axis=1)
        features["frame"].append(track[rng.integers(len(track))])
        features["mean"].append(track.mean(0))
    half = np.arange(len(labels)) % 2 == 0
    return tuple(knn_accuracy(np.stack(f)[half], labels[half], np.stack(f)[~half], labels[~half])
                 for f in features.values())


def test_the_shared_layout_leaves_place_and_size_near_chance() -> None:
    # datasets/synthav.md, "Layouts and static cues": 10.0% / 17.0% here, 31.7% / 39.0% by class
    one_frame, clip_mean = static_cues("shared")
    assert one_frame < 0.22 and clip_mean < 0.27
    one_frame, clip_mean = static_cues("by_class")  # the measure sees the cues where they are
    assert one_frame > 0.28 and clip_mean > 0.35


def test_a_short_video_is_a_window_of_the_full_one() -> None:
    """In the shared layout a short video shows a random stretch of the same full-length video (so
    its first frame does not tell a reversible pair apart): frames, audio and impacts of a window."""
    config = replace(RENDER, layout="shared", short_duration=1.0)
    short_frames = config.num_frames(short=True)
    starts = set()
    for seed in range(6):
        full, full_audio, full_info = render_video(config, "fall_bounce", np.random.default_rng([seed, 2]))
        frames, audio, info = render_video(config, "fall_bounce", np.random.default_rng([seed, 2]),
                                           num_frames=short_frames)
        assert len(frames) == short_frames and len(audio) == config.sample_rate
        start = next(s for s in range(len(full) - short_frames + 1)
                     if np.array_equal(full[s:s + short_frames], frames))
        samples = start * config.sample_rate // round(config.fps)
        np.testing.assert_array_equal(audio, full_audio[samples:samples + len(audio)])
        assert info["impacts"] == [k - start for k in full_info["impacts"] if start <= k < start + short_frames]
        starts.add(start)
    assert len(starts) > 3
    longer = config.num_frames() + 8  # more than a full video: all of it, rendered that long
    assert len(render_video(config, "grow", np.random.default_rng(0), num_frames=longer)[0]) == longer


def test_shared_plan_shuffles_classes_and_spreads_the_shares_over_them() -> None:
    config = SynthAVConfig(num_pretrain=100, train_per_class=4, test_per_class=3, no_audio_share=0.2,
                           short_share=0.1, layout="shared")
    for split, videos in (("pretrain", 100), ("train", 40), ("test", 30)):
        specs = [s for s in plan(config) if s.split == split]
        actions = [s.action for s in specs]
        assert Counter(actions) == Counter({c: videos // len(CLASSES) for c in CLASSES})
        assert actions[:len(CLASSES)] != list(CLASSES)  # not cycling in file order
        for share, flag in ((0.2, lambda s: not s.has_audio), (0.1, lambda s: s.short)):
            per_class = Counter(s.action for s in specs if flag(s))
            assert sum(per_class.values()) == round(share * videos)
            counts = [per_class[c] for c in CLASSES]
            assert max(counts) - min(counts) <= 1
    cycled = plan(replace(config, layout="by_class"))
    assert [s.action for s in cycled[:len(CLASSES)]] == list(CLASSES)
