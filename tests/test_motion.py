"""Motion profiles (datasets/README.md#motion-profiles): stored once per video by `build-manifest
--motion` and the generators and read memory-mapped, or computed by each worker into a bounded cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmssl.cli.build_manifest import main as build_manifest
from mmssl.config import load_config
from mmssl.data.manifest import ManifestRow, read_manifest, write_manifest
from mmssl.data.motion import (
    CACHE_VIDEOS,
    DECODE_CHUNK,
    MOTION_COLUMN,
    MotionWeighting,
    ProfileCache,
    frame_motion,
    profile_file,
    use_stored_profiles,
    video_motion,
    write_profiles,
)
from mmssl.engine.data import pretraining_data
from mmssl.io import MediaError, VideoReader, write_media
from mmssl.tasks import build_task

FPS = 16.0
ORDER_CONFIG = Path(__file__).resolve().parents[1] / "configs/pretrain/order.yaml"


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folder `a`: a square that moves only in the second half of 48 frames, 300 frames of
    noise (more than one decode chunk), and a clip garbled near its end (its probe passes, a full
    decode fails)."""
    root = tmp_path_factory.mktemp("motion") / "videos"
    (root / "a").mkdir(parents=True)
    frames = np.full((48, 32, 32, 3), 40, dtype=np.uint8)
    for t in range(48):
        x = 4 + max(t - 24, 0)
        frames[t, 12:20, x:x + 8] = 220
    write_media(root / "a" / "square.mp4", frames, FPS)
    rng = np.random.default_rng(0)
    write_media(root / "a" / "long.mp4", rng.integers(0, 256, (DECODE_CHUNK + 44, 32, 32, 3), dtype=np.uint8), FPS)
    garbled = bytearray(write_media(root / "a" / "garbled.mp4", rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8),
                                    FPS, gop=4).read_bytes())
    start = garbled.find(b"mdat") + int((len(garbled) - garbled.find(b"mdat")) * 0.9)
    garbled[start:start + 200] = rng.bytes(200)
    (root / "a" / "garbled.mp4").write_bytes(bytes(garbled))
    return root


def test_stored_profiles_equal_the_ones_a_worker_computes(videos: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "manifest.csv"
    assert build_manifest([str(videos), "--format", "folder", "--out", str(out), "--workers", "2",
                           "--probe-timeout", "60", "--motion"]) == 0
    printed = capsys.readouterr().out
    assert "motion profiles of 2 videos at 32 px" in printed
    assert f"[corrupt] {videos / 'a' / 'garbled.mp4'}: " in printed
    rows = {Path(row.path).stem: row for row in read_manifest(out)}
    stored, computing = MotionWeighting(), MotionWeighting()
    assert use_stored_profiles([stored], out, rows.values()) is None
    assert stored.stored.path == profile_file(out) == tmp_path / "manifest.motion32.npy"
    for name in ("square", "long"):
        steps = stored.stored.get(rows[name])
        assert steps.dtype == np.float16 and len(steps) == rows[name].num_frames - 1
        np.testing.assert_array_equal(stored.profile(rows[name]), computing.profile(rows[name]))
    assert len(stored.cache) == 0 and len(computing.cache) == 2  # read, never decoded; decoded once each

    steps = np.diff(stored.profile(rows["square"]))
    assert steps[26:].mean() > 5 * steps[:22].mean()  # the square moves in the second half only
    with VideoReader(rows["long"].path, size=(32, 32), keep_aspect=True) as reader:  # one decode, not by chunks
        whole = frame_motion(reader.get_frames(np.arange(reader.num_frames)).numpy())
    np.testing.assert_array_equal(video_motion(rows["long"].path), whole.astype(np.float16))

    assert MOTION_COLUMN in rows["garbled"].extra and stored.stored.get(rows["garbled"]) is None
    with pytest.raises(MediaError):  # computed then, failing as the sample's decode would
        stored.profile(rows["garbled"])


def test_a_run_without_stored_profiles_computes_them_and_says_so(tiny_synthav: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The generator stores SynthAV's profiles; a copy of its manifest without them still trains, after
    one message at start."""
    rows = read_manifest(tiny_synthav / "manifest.csv")
    assert profile_file(tiny_synthav / "manifest.csv").is_file() and all(r.extra[MOTION_COLUMN] for r in rows)
    plain = write_manifest([ManifestRow(r.path, r.label, r.split, r.duration, r.fps, r.num_frames, r.has_audio)
                            for r in rows], tmp_path / "plain.csv")
    for manifest, says in ((tiny_synthav / "manifest.csv", False), (plain, True)):
        config = load_config(ORDER_CONFIG, [f"data.manifest={manifest}", "data.split=pretrain", "data.frame_size=32"])
        task = build_task(config)
        dataset, _ = pretraining_data(config, task)
        printed = capsys.readouterr().out
        assert ("has no stored motion profiles at 32 px" in printed) == says
        assert printed.count("\n") == says  # once
        assert dataset[(0, 0)]["frames"].shape == (3, 32, 32, 3)
        assert len(task.motion.cache) == says  # decoded the video only without stored profiles
    assert use_stored_profiles([MotionWeighting(candidates=1)], plain, rows) is None  # uniform: needs none


def rss_anon_mb() -> float:
    """This process's anonymous resident memory (not the file pages a memory map shares) in MB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["RssAnon"].split()[0]) / 1024


def test_memory_stays_flat_over_distinct_videos(tmp_path: Path) -> None:
    """Stored: 20,000 distinct videos of 10 s at 30 fps read memory-mapped cost no memory of the
    worker's own. Computed: the cache keeps CACHE_VIDEOS of them and stops growing."""
    count, frames = 2 * CACHE_VIDEOS, 300
    rows = [ManifestRow(f"v{i}.mp4", fps=30.0, num_frames=frames) for i in range(count)]
    profiles = np.random.default_rng(0).random((count, frames - 1), dtype=np.float32).astype(np.float16)
    manifest = tmp_path / "many.csv"
    rows = write_profiles(rows, list(profiles), manifest)
    weighting = MotionWeighting()
    use_stored_profiles([weighting], manifest, rows)
    weighting.profile(rows[0])
    before = rss_anon_mb()
    for row in rows:
        weighting.profile(row)
    assert rss_anon_mb() - before < 4 and len(weighting.cache) == 0  # unbounded: ~16 MB
    np.testing.assert_array_equal(np.diff(weighting.profile(rows[7])), profiles[7].astype(np.float64))

    cache, start = ProfileCache(), rss_anon_mb()
    for i in range(CACHE_VIDEOS):
        cache.get(f"a{i}.mp4", lambda i=i: profiles[i].copy())
    full = rss_anon_mb()
    for i in range(CACHE_VIDEOS):
        cache.get(f"b{i}.mp4", lambda i=i: profiles[CACHE_VIDEOS + i].copy())
    assert len(cache) == CACHE_VIDEOS and full - start < 50
    assert rss_anon_mb() - full < 4  # unbounded: ~10 MB more
    hit = cache.get(f"b{CACHE_VIDEOS - 1}.mp4", lambda: pytest.fail("cached, not computed again"))
    np.testing.assert_array_equal(hit, profiles[-1])
