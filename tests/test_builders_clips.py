"""The Something-Something v2, VGG-Sound and AudioSet builders on small copies in their official layouts
(real encoded media made here), and a clip cut from a longer file: its manifest row and its decoding."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import put, tool_module  # tests/ is on sys.path under pytest

from mmssl.data.builders import build_audioset, build_vggsound, list_audioset, list_ssv2, list_vggsound
from mmssl.data.clip import Window
from mmssl.data.dataset import decode_window
from mmssl.data.manifest import SEGMENT_START, ManifestError, first_frame, read_manifest, write_manifest
from mmssl.data.motion import row_motion, video_motion
from mmssl.io import VideoReader, load_audio, write_media

REPO = Path(__file__).resolve().parents[1]
FPS, RATE = 8.0, 16000


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 1 s clip with audio and one without (mp4), a 1 s VP9 webm (Something-Something v2's codec), a
    13 s video with audio (a whole YouTube video, of which the annotations name a 10 s clip) whose frames
    and audio differ all along, and a file that is no video."""
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (int(FPS), 32, 32, 3), dtype=np.uint8)
    (folder / "corrupt.webm").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return {
        "av": write_media(folder / "av.mp4", frames, FPS, audio=(0.1 * np.sin(np.arange(RATE) / 10)).astype(np.float32)),
        "silent": write_media(folder / "silent.mp4", frames, FPS),
        "webm": write_media(folder / "clip.webm", frames, FPS, video_codec="libvpx-vp9"),
        "whole": write_media(folder / "whole.mp4", rng.integers(0, 256, (int(13 * FPS), 32, 32, 3), dtype=np.uint8),
                             FPS, audio=rng.uniform(-0.5, 0.5, 13 * RATE).astype(np.float32), gop=8),
        "corrupt": folder / "corrupt.webm",
    }


@pytest.fixture(scope="module")
def tool():
    return tool_module("build_manifest")


def rows_of(manifest: Path) -> list[tuple[str, str, str]]:
    """(path relative to the manifest's folder, label, split) of each row."""
    return [(Path(r.path).relative_to(manifest.parent).as_posix(), r.label, r.split) for r in read_manifest(manifest)]


# --- Something-Something v2 ---------------------------------------------------------------------

def make_ssv2(media: dict[str, Path], root: Path) -> None:
    """The labels archive's labels/ beside the folder the video archive's parts extract to."""
    videos = root / "20bn-something-something-v2"
    for video_id in ("78687", "42326"):
        put(media, "webm", videos / f"{video_id}.webm")
    put(media, "corrupt", videos / "1001.webm")
    put(media, "webm", videos / "2002.webm")  # a test video: test.json has no labels, not listed
    labels = root / "labels"
    labels.mkdir()
    (labels / "labels.json").write_text(json.dumps({"Holding something next to something": "0",
                                                    "Pushing something from left to right": "1"}))
    (labels / "train.json").write_text(json.dumps([
        {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
         "template": "Holding [something] next to [something]", "placeholders": ["potato", "vicks vaporub bottle"]},
        {"id": "99999", "label": "pushing a cup from left to right",  # not downloaded
         "template": "Pushing [something] from left to right", "placeholders": ["a cup"]},
    ]))
    (labels / "validation.json").write_text(json.dumps([
        {"id": "42326", "label": "pushing a pen from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a pen"]},
        {"id": "1001", "label": "pushing a box from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a box"]},
    ]))
    (labels / "test.json").write_text(json.dumps([{"id": "2002"}]))


def test_ssv2_builder(media: dict[str, Path], tmp_path: Path, tool, capsys: pytest.CaptureFixture) -> None:
    make_ssv2(media, tmp_path)
    out = tmp_path / "ssv2.csv"
    assert tool.main([str(tmp_path), "--format", "ssv2", "--out", str(out), "--workers", "1"]) == 0
    assert rows_of(out) == [
        ("20bn-something-something-v2/78687.webm", "Holding something next to something", "train"),
        ("20bn-something-something-v2/42326.webm", "Pushing something from left to right", "val"),
    ]
    report = capsys.readouterr().out
    assert "ssv2: 4 listed, 3 on disk" in report and "usable: 2 (no audio: 2)" in report
    assert f"[missing] {tmp_path / '20bn-something-something-v2/99999.webm'}: listed in train.json" in report
    assert f"[corrupt] {tmp_path / '20bn-something-something-v2/1001.webm'}" in report


def test_ssv2_refuses_a_template_not_in_labels_json(media: dict[str, Path], tmp_path: Path) -> None:
    """The label files where the labels archive extracts them when unzipped into a folder of its name."""
    make_ssv2(media, tmp_path)
    labels = tmp_path / "20bn-something-something-download-package-labels" / "labels"
    labels.parent.mkdir()
    (tmp_path / "labels").rename(labels)
    entries = json.loads((labels / "train.json").read_text())
    entries[0]["template"] = "Holding [something] far from [something]"
    (labels / "train.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match="class 'Holding something far from something' of video 78687 is not in"):
        list_ssv2(tmp_path)
    with pytest.raises(FileNotFoundError, match="labels.json: no Something-Something v2 label file"):
        list_ssv2(tmp_path / "20bn-something-something-v2")


# --- VGG-Sound ----------------------------------------------------------------------------------

def test_vggsound_builder(media: dict[str, Path], tmp_path: Path) -> None:
    """The release's own names (its tarballs extract to scratch/.../VGGSound_final/video/), a Kinetics-style
    name, a whole video named by its id (cut to its clip) and a clip not downloaded; no header, as released."""
    root = tmp_path / "vggsound"
    release = root / "scratch/shared/beegfs/hchen/train_data/VGGSound_final/video"
    put(media, "av", release / "---g-f_I2yQ_000001.mp4")
    put(media, "silent", root / "extra" / "bbb_000030_000040.mkv")
    put(media, "whole", root / "extra" / "ccc.mp4")
    annotations = tmp_path / "vggsound.csv"
    annotations.write_text('---g-f_I2yQ,1,people marching,test\nbbb,30,"male speech, man speaking",train\n'
                           "ccc,2,people marching,train\nddd,0,dog barking,train\n")
    result = build_vggsound(root, annotations, workers=2)
    assert [(Path(r.path).relative_to(root).as_posix(), r.label, r.split, r.has_audio) for r in result.rows] == [
        ("scratch/shared/beegfs/hchen/train_data/VGGSound_final/video/---g-f_I2yQ_000001.mp4", "people marching",
         "test", True),
        ("extra/bbb_000030_000040.mkv", "male speech, man speaking", "train", False),
        ("extra/ccc.mp4", "people marching", "train", True),
    ]
    assert [r.extra for r in result.rows] == [
        {"youtube_id": "---g-f_I2yQ", "time_start": "1", "time_end": "11"},
        {"youtube_id": "bbb", "time_start": "30", "time_end": "40"},
        {"youtube_id": "ccc", "time_start": "2", "time_end": "12", SEGMENT_START: "2.000"},
    ]
    whole = result.rows[2]
    assert (whole.num_frames, whole.duration, first_frame(whole)) == (80, 10.0, 16)  # frames 16..95 of 104
    assert [(s.path, s.kind) for s in result.skipped] == [(str(root / "ddd_000000"), "missing")]
    header = tmp_path / "with_header.csv"
    header.write_text("youtube_id,start_seconds,label,split\nbbb,30,speech,train\n")
    assert [c.label for c in list_vggsound(root, header).candidates] == ["speech"]
    header.write_text("bbb,30,speech\n")
    with pytest.raises(ValueError, match=r"with_header.csv:1: expected youtube_id,start_seconds,label,split"):
        list_vggsound(root, header)


def test_vggsound_without_a_usable_clip_exits_non_zero(media: dict[str, Path], tmp_path: Path, tool,
                                                      capsys: pytest.CaptureFixture) -> None:
    put(media, "av", tmp_path / "videos" / "zzz.mp4")  # no row names it
    (tmp_path / "vggsound.csv").write_text("aaa,5,dog barking,train\n")
    out = tmp_path / "vggsound_manifest.csv"
    with pytest.raises(SystemExit) as exited:
        tool.main([str(tmp_path / "videos"), "--format", "vggsound", "--annotations", str(tmp_path / "vggsound.csv"),
                   "--out", str(out), "--workers", "1"])
    assert exited.value.code == 2 and not out.exists()
    assert "no usable video among the 1 listed (missing: 1)" in capsys.readouterr().err


# --- AudioSet -----------------------------------------------------------------------------------

def make_audioset(media: dict[str, Path], root: Path) -> list[Path]:
    """Segment CSVs as released (comment header, quoted label lists) with class_labels_indices.csv beside them."""
    put(media, "av", root / "balanced" / "--PJHxphWEs_30.000_40.000.mp4")  # times as in the CSV
    put(media, "silent", root / "balanced" / "-0RWZT-miFs_420000_430000.mkv")  # milliseconds (audiosetdl)
    put(media, "whole", root / "eval" / "Yeee.mp4")  # PANNs-style name, here the whole video
    (root / "eval" / "Yfff.wav").write_bytes(b"RIFF")  # an audio-only download: not probed, counted
    csvs = root / "csv"
    csvs.mkdir()
    (csvs / "class_labels_indices.csv").write_text('index,mid,display_name\n0,/m/09x0r,"Speech"\n'
                                                   '1,/m/05zppz,"Male speech, man speaking"\n2,/m/03v3yw,"Keys jangling"\n')
    header = ("# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=2, num_segs=2, num_unique_labels=3, "
              "num_positive_labels=3\n# YTID, start_seconds, end_seconds, positive_labels\n")
    (csvs / "balanced_train_segments.csv").write_text(
        header + '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/05zppz"\n-0RWZT-miFs, 420.000, 430.000, "/m/03v3yw"\n')
    (csvs / "eval_segments.csv").write_text(
        header + 'eee, 1.000, 2.500, "/m/09x0r"\nfff, 0.000, 10.000, "/m/09x0r"\n')
    return [csvs / "balanced_train_segments.csv", csvs / "eval_segments.csv"]


def test_audioset_builder(media: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "audioset"
    annotations = make_audioset(media, root)
    result = build_audioset(root, annotations, workers=1)
    assert [(Path(r.path).relative_to(root).as_posix(), r.label, r.split, r.extra["labels"]) for r in result.rows] == [
        ("balanced/--PJHxphWEs_30.000_40.000.mp4", "", "balanced_train", "Speech|Male speech, man speaking"),
        ("balanced/-0RWZT-miFs_420000_430000.mkv", "", "balanced_train", "Keys jangling"),
        ("eval/Yeee.mp4", "", "eval", "Speech"),
    ]
    cut = result.rows[2]
    assert (cut.extra[SEGMENT_START], cut.extra["time_start"], cut.extra["time_end"]) == ("1.000", "1", "2.5")
    assert (cut.num_frames, cut.duration, first_frame(cut)) == (12, 1.5, 8)
    assert [(Path(s.path).name, s.kind) for s in result.skipped] == [("fff_0.000_10.000", "missing")]
    assert result.not_videos == {".csv": 3, ".wav": 1} and "unlabeled: 3" in result.summary()
    (annotations[1].parent / "class_labels_indices.csv").write_text("index,mid,display_name\n0,/m/09x0r,Speech\n")
    with pytest.raises(ValueError, match=r"balanced_train_segments.csv:4: class ids \['/m/05zppz'\] are not in"):
        list_audioset(root, annotations)


# --- a clip cut from a longer file --------------------------------------------------------------

def test_a_clip_of_a_longer_file_decodes_within_its_segment(media: dict[str, Path], tmp_path: Path) -> None:
    """The row of AudioSet's eee (1 to 2.5 s of a 13 s file), read back from its manifest: its frames,
    audio and motion profile are those of frames 8..19 of the file, from 1 s."""
    root = tmp_path / "audioset"
    result = build_audioset(root, make_audioset(media, root), workers=1)
    (row,) = [r for r in read_manifest(write_manifest(result.rows, root / "audioset.csv")) if r.split == "eval"]
    window = Window(frames=np.array([0, 5, 11]), audio_start_s=0.25, audio_duration_s=1.0)
    clip = decode_window(row, window)
    with VideoReader(row.path) as reader:
        assert np.array_equal(clip.video.numpy(), reader.get_frames(np.array([8, 13, 19])).numpy())
    assert np.array_equal(clip.audio.numpy(), load_audio(row.path, 1.25, 1.0).numpy())
    assert not np.array_equal(clip.audio.numpy(), load_audio(row.path, 0.25, 1.0).numpy())
    np.testing.assert_array_equal(row_motion(row), video_motion(row.path)[8:19])


@pytest.mark.parametrize("value", ["-1", "soon", "inf"])
def test_a_bad_segment_start_is_refused_naming_the_line(media: dict[str, Path], tmp_path: Path, value: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label,split,duration,fps,num_frames,has_audio,{SEGMENT_START}\n"
                        f"{media['whole']},x,train,1.0,8.0,8,1,{value}\n")
    with pytest.raises(ManifestError, match=rf"m.csv, line 2: {SEGMENT_START} must be a number of seconds >= 0"):
        read_manifest(manifest)
