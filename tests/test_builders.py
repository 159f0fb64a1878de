"""The dataset builders and tools/build_manifest.py, on tiny real media made here."""
from __future__ import annotations

import faulthandler
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import put, tool_module  # tests/ is on sys.path under pytest

from mmssl.data.builders import (
    BuildResult,
    Listing,
    build_folder,
    build_hmdb51,
    build_kinetics,
    build_ucf101,
    list_folder,
    list_hmdb51,
    list_kinetics,
    list_ucf101,
    probe_candidates,
    probing,
)
from mmssl.data.manifest import read_manifest, write_manifest
from mmssl.io import write_media

REPO = Path(__file__).resolve().parents[1]
FRAMES, FPS = 8, 8.0


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One clip with audio, one without, one whose audio track holds no packet, one garbled near its
    end (its first frames decode), and an unreadable and an empty file, to copy around."""
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (FRAMES, 32, 32, 3), dtype=np.uint8)
    audio = (0.1 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    (folder / "corrupt.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (folder / "empty.mp4").touch()
    with av.open(str(folder / "empty_audio.mkv"), "w") as container:
        video = container.add_stream("mpeg4", rate=int(FPS))
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        container.add_stream("aac", rate=16000)  # declared, never written
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode(None))
    garbled = bytearray(write_media(folder / "garbled.mp4", rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8),
                                    FPS, gop=4).read_bytes())
    start = garbled.find(b"mdat") + int((len(garbled) - garbled.find(b"mdat")) * 0.9)
    garbled[start:start + 200] = rng.bytes(200)
    (folder / "garbled.mp4").write_bytes(bytes(garbled))
    return {
        "av": write_media(folder / "av.mp4", frames, FPS, audio=audio),
        "silent": write_media(folder / "silent.mp4", frames, FPS),
        "empty_audio": folder / "empty_audio.mkv",
        "garbled": folder / "garbled.mp4",
        "corrupt": folder / "corrupt.mp4",
        "empty": folder / "empty.mp4",
    }


@pytest.fixture(scope="module")
def tool():
    return tool_module("build_manifest")


def rel_rows(result: BuildResult, root: Path) -> list[tuple[str, str, str, bool]]:
    """(path under root, label, split, has_audio) of each row, in order."""
    return [(Path(r.path).relative_to(root).as_posix(), r.label, r.split, r.has_audio)
            for r in result.rows]


def rel_skipped(result: BuildResult, root: Path) -> set[tuple[str, str]]:
    return {(Path(s.path).relative_to(root).as_posix(), s.kind) for s in result.skipped}


# --- folder per class -------------------------------------------------------------------------

def test_folder_builder_labels_classes_and_reports_bad_files(media: dict[str, Path],
                                                             tmp_path: Path) -> None:
    root = tmp_path / "videos"
    put(media, "av", root / "climb" / "c1.mp4")
    put(media, "av", root / "climb" / "deeper" / "c2.MKV")  # any depth, any case
    put(media, "silent", root / "swim" / "s1.mov")
    put(media, "empty_audio", root / "swim" / "s2.mkv")  # a usable video: kept, without audio
    put(media, "corrupt", root / "swim" / "broken.mp4")
    put(media, "empty", root / "swim" / "empty.avi")
    put(media, "av", root / "loose.webm")  # above the class level: unlabeled
    put(media, "av", root / "swim" / "._s1.mp4")  # macOS resource fork: ignored
    (root / "swim" / "notes.txt").write_text("not a video")
    put(media, "av", tmp_path / "speech.ogg")
    (root / "swim" / "speech.ogg").symlink_to(tmp_path / "speech.ogg")  # audio only: not a video name
    (root / "swim" / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")  # a link to nothing
    put(media, "av", tmp_path / "elsewhere.mp4")
    (root / "climb" / "linked.mp4").symlink_to(tmp_path / "elsewhere.mp4")
    put(media, "av", tmp_path / "disk2" / "run" / "r1.mp4")
    (root / "run").symlink_to(tmp_path / "disk2" / "run")  # a class folder linked in from elsewhere
    (root / "climb" / "loop").symlink_to(root)  # a link loop: its videos are listed once, the loop reported
    not_utf8 = os.fsdecode(b"caf\xe9.mp4")  # Latin-1 name: the bytes are kept as surrogates
    put(media, "av", root / "swim" / not_utf8)

    result = build_folder(root, workers=2)

    assert rel_rows(result, root) == [
        ("climb/c1.mp4", "climb", "train", True),
        ("climb/deeper/c2.MKV", "climb", "train", True),
        ("climb/linked.mp4", "climb", "train", True),
        ("loose.webm", "", "train", True),
        ("run/r1.mp4", "run", "train", True),
        (f"swim/{not_utf8}", "swim", "train", True),
        ("swim/s1.mov", "swim", "train", False),
        ("swim/s2.mkv", "swim", "train", False),
    ]
    assert rel_skipped(result, root) == {("swim/broken.mp4", "corrupt"), ("swim/empty.avi", "empty"),
                                         ("swim/gone.mp4", "missing"), ("climb/loop", "duplicate")}
    assert (result.usable, result.no_audio) == (8, 2)
    assert result.skipped_by_kind() == {"corrupt": 1, "empty": 1, "missing": 1, "duplicate": 1}
    assert result.rows[-1].extra["audio_error"].startswith("corrupt: ")
    summary = result.summary()
    assert "usable: 8 (no audio: 2, of which an audio track that does not decode: 1, unlabeled: 1)" in summary
    assert f"kept without audio, the audio track does not decode:\n  {root / 'swim' / 's2.mkv'}: corrupt: " in summary
    assert "not probed, not a video file name: .ogg: 1, .txt: 1" in summary
    manifest_path = write_manifest(result.rows, root / "manifest.csv")
    manifest = manifest_path.read_bytes()
    assert b"\nclimb/linked.mp4,climb," in manifest  # a link under the folder stays relative, as named
    assert b"\nswim/caf\xe9.mp4,swim," in manifest  # the file's own bytes
    assert [row.path for row in read_manifest(manifest_path)] == [row.path for row in result.rows]
    row = result.rows[0]
    assert (row.num_frames, row.fps, row.duration) == (FRAMES, pytest.approx(FPS),
                                                       pytest.approx(FRAMES / FPS))


def test_folder_builder_split_class_layout(media: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "videos"
    put(media, "av", root / "train" / "climb" / "a.mp4")
    put(media, "av", root / "val" / "swim" / "b.mp4")
    put(media, "av", root / "val" / "c.mp4")
    put(media, "av", root / "d.mp4")
    listing = list_folder(root, layout="split/class", default_split="all")
    assert [(Path(c.path).relative_to(root).as_posix(), c.label, c.split)
            for c in listing.candidates] == [
        ("d.mp4", "", "all"),
        ("train/climb/a.mp4", "climb", "train"),
        ("val/c.mp4", "", "val"),
        ("val/swim/b.mp4", "swim", "val"),
    ]
    with pytest.raises(ValueError, match="layout"):
        list_folder(root, layout="class/split")


def test_folder_builder_reports_a_class_folder_linked_twice(media: dict[str, Path], tmp_path: Path) -> None:
    """Two class folders that are one folder: the first by name keeps the videos, the other is reported."""
    root = tmp_path / "videos"
    put(media, "av", root / "jog" / "a.mp4")
    (root / "running").symlink_to(root / "jog")
    listing = list_folder(root)
    assert [(Path(c.path).relative_to(root).as_posix(), c.label) for c in listing.candidates] == [("jog/a.mp4", "jog")]
    assert [(s.path, s.kind, s.detail) for s in listing.skipped] == [
        (str(root / "running"), "duplicate", f"same folder as {root / 'jog'}")]


def test_unexpected_probe_failure_is_reported_not_raised(media: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "videos"
    put(media, "av", root / "climb" / "c1.mp4")

    def broken_probe(path: str) -> None:
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(probing, "probe", broken_probe)
    result = build_folder(root, workers=1)  # in this process, so the patch applies
    assert result.rows == []
    assert [(s.kind, s.detail) for s in result.skipped] == [("error", "RuntimeError: decoder exploded")]


def test_a_probe_that_crashes_or_hangs_costs_only_its_file(media: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No file makes FFmpeg segfault or stall on demand, so the probe is wrapped (the worker
    processes fork after the patch): `crash.mp4` kills its process with SIGSEGV, `hang.mp4` sleeps;
    the other files are probed for real, in order, and the build reports both and goes on."""
    root = tmp_path / "videos"
    names = ["a.mp4", "crash.mp4", "b.mp4", "hang.mp4", "c.mp4", "d.mp4"]
    for name in names:
        put(media, "av", root / "climb" / name)
    real_probe = probing.probe

    def faulty_probe(path: str):
        if Path(path).name == "crash.mp4":
            faulthandler.disable()  # pytest's traceback dump of the dying worker is not wanted
            os.kill(os.getpid(), signal.SIGSEGV)
        if Path(path).name == "hang.mp4":
            time.sleep(120)
        return real_probe(path)

    monkeypatch.setattr(probing, "probe", faulty_probe)
    result = probe_candidates(list_folder(root), workers=2, timeout_s=3)
    assert rel_rows(result, root) == [(f"climb/{n}.mp4", "climb", "train", True) for n in "abcd"]
    assert [(Path(s.path).name, s.kind, s.detail) for s in result.skipped] == [
        ("crash.mp4", "crashed", "the probe's process died (killed by SIGSEGV)"),
        ("hang.mp4", "timeout", "probe still running after 3 s; stopped"),
    ]
    assert "  crashed: 1\n  timeout: 1" in result.summary()


def test_verify_decodes_every_frame_and_leaves_out_a_file_damaged_in_the_middle(
        media: dict[str, Path], tmp_path: Path, tool, capsys: pytest.CaptureFixture[str]) -> None:
    """The probe decodes only the first frame, so a file garbled near its end is listed usable; with
    verify (in the probing processes, and through the tool) it is reported as corrupt and left out."""
    root = tmp_path / "videos"
    put(media, "av", root / "climb" / "good.mp4")
    garbled = put(media, "garbled", root / "climb" / "garbled.mp4")
    assert rel_rows(probe_candidates(list_folder(root), workers=1), root) == [
        ("climb/garbled.mp4", "climb", "train", False), ("climb/good.mp4", "climb", "train", True)]

    result = probe_candidates(list_folder(root), workers=2, timeout_s=30, verify=True)
    assert rel_rows(result, root) == [("climb/good.mp4", "climb", "train", True)]
    assert [(s.path, s.kind) for s in result.skipped] == [(str(garbled), "corrupt")]
    assert result.skipped[0].detail.startswith("decoding every frame (--verify): ")
    assert "verified: every frame of the 1 usable files decoded" in result.summary()
    assert "verified" not in probe_candidates(list_folder(root), workers=1).summary()

    out = root / "manifest.csv"
    assert tool.main([str(root), "--format", "folder", "--out", str(out), "--workers", "1", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "  corrupt: 1\n" in printed and f"[corrupt] {garbled}: decoding every frame (--verify): " in printed
    assert [Path(r.path).name for r in read_manifest(out)] == ["good.mp4"]


def test_the_builders_output_reads_back_when_the_videos_lie_outside_the_manifests_folder(
        media: dict[str, Path], tmp_path: Path) -> None:
    """Videos beside or above the manifest's folder are written by their absolute paths (never `../`,
    which read_manifest refuses), so the manifest reads back the files that were built."""
    root = tmp_path / "videos"
    put(media, "av", root / "climb" / "c1.mp4")
    put(media, "silent", root / "swim" / "s1.mp4")
    result = build_folder(root, workers=1)
    for out in (root / "lists" / "manifest.csv", tmp_path / "manifests" / "manifest.csv"):
        write_manifest(result.rows, out)
        assert "../" not in out.read_text()
        assert [r.path for r in read_manifest(out)] == [r.path for r in result.rows]


def as_unprivileged_user(task: Callable[[], object]) -> object:
    """`task()` in a forked process that, when the tests run as root (who may read everything),
    first becomes the user `nobody`; its JSON result comes back through a pipe."""
    read_end, write_end = os.pipe()
    if os.fork() == 0:  # the child: already holds every module it needs (the interpreter may be under /root)
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            result = {"result": task()}
        except BaseException as e:  # noqa: BLE001 - handed to the test, which fails with it
            result = {"error": repr(e)}
        with os.fdopen(write_end, "w") as pipe:
            json.dump(result, pipe)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        answer = json.loads(pipe.read() or '{"error": "no answer"}')
    assert "error" not in answer, answer["error"]
    return answer["result"]


def test_what_this_user_may_not_read_is_left_out_as_permission_denied(media: dict[str, Path]) -> None:
    """A class folder that may not be listed, a video that may not be read, and a split file's
    video under that folder are left out as permission_denied and named; the rest is built."""
    root = Path(tempfile.mkdtemp())  # outside pytest's folders, which only their owner may enter
    try:
        root.chmod(0o755)
        put(media, "av", root / "open" / "a.mp4")
        put(media, "av", root / "open" / "locked.mp4").chmod(0o000)
        put(media, "av", root / "sealed" / "b.mp4")
        (root / "sealed").chmod(0o000)

        def build() -> list:
            result = build_folder(root, workers=1)
            listing = Listing()
            listing.add(root / "sealed" / "b.mp4", "x", "train", "trainlist01.txt")
            return [[Path(r.path).name for r in result.rows],
                    [[Path(s.path).name, s.kind, s.detail] for s in result.skipped + listing.skipped]]

        rows, skipped = as_unprivileged_user(build)
        assert rows == ["a.mp4"]
        assert skipped == [
            ["sealed", "permission_denied", "folder not listed: its videos unseen (Permission denied)"],
            ["locked.mp4", "permission_denied", "cannot open (Permission denied)"],
            ["b.mp4", "permission_denied", "listed in trainlist01.txt; Permission denied"],
        ]
    finally:
        for folder in (root, root / "sealed"):
            folder.chmod(0o755)
        shutil.rmtree(root)

# --- UCF101 -----------------------------------------------------------------------------------

def make_ucf101(media: dict[str, Path], root: Path) -> None:
    """Official UCF101 names: class folders, ucfTrainTestlist with CRLF lines like the release."""
    put(media, "av", root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi")
    put(media, "silent", root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi")
    put(media, "av", root / "Archery" / "v_Archery_g08_c02.avi")
    put(media, "corrupt", root / "Archery" / "v_Archery_g01_c01.avi")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    crlf = lambda lines: "".join(f"{line}\r\n" for line in lines)  # noqa: E731
    (lists / "classInd.txt").write_text(crlf(["1 ApplyEyeMakeup", "2 Archery"]), newline="")
    (lists / "trainlist01.txt").write_text(crlf([
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
        "Archery/v_Archery_g08_c02.avi 2",
        "Archery/v_Archery_g09_c01.avi 2",  # not on disk
    ]), newline="")
    (lists / "testlist01.txt").write_text(crlf([
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
        "Archery/v_Archery_g01_c01.avi",
    ]), newline="")
    (lists / "trainlist02.txt").write_text(crlf(["Archery/v_Archery_g01_c01.avi 2"]), newline="")
    (lists / "testlist02.txt").write_text(crlf(["Archery/v_Archery_g08_c02.avi"]), newline="")


def test_ucf101_builder(media: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "UCF-101"
    make_ucf101(media, root)

    result = build_ucf101(root, split=1, workers=2)
    assert rel_rows(result, root) == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup", "train", True),
        ("Archery/v_Archery_g08_c02.avi", "Archery", "train", True),
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "ApplyEyeMakeup", "test", False),
    ]
    assert rel_skipped(result, root) == {("Archery/v_Archery_g09_c01.avi", "missing"),
                                         ("Archery/v_Archery_g01_c01.avi", "corrupt")}
    assert (result.usable, result.no_audio) == (3, 1)

    split2 = build_ucf101(root, split=2, workers=1)
    assert rel_rows(split2, root) == [("Archery/v_Archery_g08_c02.avi", "Archery", "test", True)]
    assert rel_skipped(split2, root) == {("Archery/v_Archery_g01_c01.avi", "corrupt")}


def test_a_video_listed_twice_is_kept_once_and_the_repeat_reported(media: dict[str, Path], tmp_path: Path) -> None:
    """A video in both trainlist and testlist would leak across the splits: its second listing is
    left out as a duplicate that names where it was kept."""
    root = tmp_path / "UCF-101"
    make_ucf101(media, root)
    with open(root / "ucfTrainTestlist" / "testlist01.txt", "a", newline="") as f:
        f.write("Archery/v_Archery_g08_c02.avi\r\n")
    result = build_ucf101(root, split=1, workers=1)
    assert rel_rows(result, root) == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup", "train", True),
        ("Archery/v_Archery_g08_c02.avi", "Archery", "train", True),
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "ApplyEyeMakeup", "test", False),
    ]
    [duplicate] = [s for s in result.skipped if s.kind == "duplicate"]
    assert duplicate.path == str(root / "Archery" / "v_Archery_g08_c02.avi")
    assert duplicate.detail.startswith("listed again (split 'test', label 'Archery'); kept once, as ")
    assert duplicate.detail.endswith(" in split 'train' with label 'Archery'")
    assert "  duplicate: 1" in result.summary()


def test_ucf101_checks_labels_against_classind(media: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "UCF-101"
    make_ucf101(media, root)
    lists = root / "ucfTrainTestlist"
    (lists / "trainlist03.txt").write_text("Archery/v_Archery_g08_c02.avi 1\n")
    (lists / "testlist03.txt").write_text("")
    with pytest.raises(ValueError, match="disagrees with classInd"):
        build_ucf101(root, split=3)
    (lists / "trainlist03.txt").write_text("Surfing/v_Surfing_g08_c02.avi 3\n")
    with pytest.raises(ValueError, match="not in classInd"):
        build_ucf101(root, split=3)
    with pytest.raises(ValueError, match="split must be"):
        build_ucf101(root, split=4)


def test_ucf101_found_as_the_archives_extract_side_by_side(media: dict[str, Path], tmp_path: Path, tool,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """ROOT holding UCF-101/ (UCF101.rar) and ucfTrainTestlist/ (the splits zip) side by side."""
    make_ucf101(media, tmp_path / "UCF-101")
    (tmp_path / "UCF-101" / "ucfTrainTestlist").rename(tmp_path / "ucfTrainTestlist")
    out = tmp_path / "ucf101_split1.csv"
    assert tool.main([str(tmp_path), "--format", "ucf101", "--out", str(out), "--workers", "1"]) == 0
    assert [(r.path, r.label, r.split) for r in read_manifest(out)] == [
        (str(tmp_path / "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"), "ApplyEyeMakeup", "train"),
        (str(tmp_path / "UCF-101/Archery/v_Archery_g08_c02.avi"), "Archery", "train"),
        (str(tmp_path / "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"), "ApplyEyeMakeup", "test"),
    ]
    assert "usable: 3 (no audio: 1)" in capsys.readouterr().out


def test_a_build_with_no_usable_video_fails_naming_the_reason(media: dict[str, Path], tmp_path: Path, tool,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Split files whose videos are elsewhere (here under an unrecognised folder name): no 0-row manifest."""
    make_ucf101(media, tmp_path / "videos")
    (tmp_path / "videos" / "ucfTrainTestlist").rename(tmp_path / "ucfTrainTestlist")
    out = tmp_path / "ucf101_split1.csv"
    with pytest.raises(SystemExit) as exited:
        tool.main([str(tmp_path), "--format", "ucf101", "--out", str(out), "--workers", "1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "no usable video among the 5 listed (missing: 5), so no manifest: e.g. [missing] " in err
    assert f"{tmp_path / 'ApplyEyeMakeup' / 'v_ApplyEyeMakeup_g08_c01.avi'}: listed in trainlist01.txt" in err
    assert not out.exists()


# --- HMDB51 -----------------------------------------------------------------------------------

def test_hmdb51_builder(media: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "hmdb51"
    put(media, "av", root / "brush_hair" / "April_09_brush_hair_u_nm_np1_ba_goo_0.avi")
    put(media, "silent", root / "brush_hair" / "Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi")
    put(media, "av", root / "brush_hair" / "unused_brush_hair_0.avi")
    put(media, "empty", root / "cartwheel" / "(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi")
    put(media, "av", root / "cartwheel" / "Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi")
    splits = tmp_path / "splits"  # a non-default splits folder
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text(
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \n"
        "Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi 2 \n"
        "unused_brush_hair_0.avi 0 \n")
    (splits / "cartwheel_test_split1.txt").write_text(
        "(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi 2 \n"
        "Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi 1 \n"
        "gone_cartwheel_0.avi 1 \n")
    (splits / "cartwheel_test_split2.txt").write_text("gone_cartwheel_0.avi 1 \n")

    result = build_hmdb51(root, split=1, splits_dir=splits, workers=2)
    assert rel_rows(result, root) == [
        ("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "brush_hair", "train", True),
        ("brush_hair/Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi", "brush_hair", "test",
         False),
        ("cartwheel/Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi", "cartwheel", "train",
         True),
    ]
    assert rel_skipped(result, root) == {
        ("cartwheel/(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi", "empty"),
        ("cartwheel/gone_cartwheel_0.avi", "missing"),
    }
    assert result.excluded == 1
    assert "excluded by the split (unused): 1" in result.summary()
    with pytest.raises(FileNotFoundError, match="split3"):
        build_hmdb51(root, split=3, splits_dir=splits)


def test_hmdb51_found_as_the_archives_extract_side_by_side(media: dict[str, Path], tmp_path: Path, tool) -> None:
    """ROOT holding hmdb51/ (the class archives unpacked) and testTrainMulti_7030_splits/ side by side."""
    put(media, "av", tmp_path / "hmdb51" / "brush_hair" / "April_09_brush_hair_u_nm_np1_ba_goo_0.avi")
    put(media, "silent", tmp_path / "hmdb51" / "cartwheel" / "(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi")
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \n")
    (splits / "cartwheel_test_split1.txt").write_text("(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi 2 \n")
    out = tmp_path / "hmdb51_split1.csv"
    assert tool.main([str(tmp_path), "--format", "hmdb51", "--out", str(out), "--workers", "1"]) == 0
    assert [(r.path, r.label, r.split, r.has_audio) for r in read_manifest(out)] == [
        (str(tmp_path / "hmdb51/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi"), "brush_hair", "train", True),
        (str(tmp_path / "hmdb51/cartwheel/(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi"), "cartwheel",
         "test", False),
    ]


def test_split_files_ignore_resource_forks_and_name_the_bad_line(media: dict[str, Path], tmp_path: Path) -> None:
    """A macOS `._<class>_test_split1.txt` (binary) beside the real file is ignored; a split file
    that is not UTF-8 text, or a classInd line that is not `<index> <class>`, is an error naming
    the file and line."""
    root = tmp_path / "hmdb51"
    put(media, "av", root / "wave" / "a_wave_0.avi")
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "wave_test_split1.txt").write_text("a_wave_0.avi 1 \n")
    (splits / "._wave_test_split1.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X\xb0\xff")
    listing = list_hmdb51(root)
    assert [(c.label, c.split) for c in listing.candidates] == [("wave", "train")]

    (splits / "wave_test_split2.txt").write_bytes(b"a_wave_0.avi 1\n\ncaf\xe9_wave_0.avi 2\n")
    with pytest.raises(ValueError, match=re.escape(f"{splits / 'wave_test_split2.txt'}:3: not UTF-8")):
        list_hmdb51(root, split=2)

    ucf = tmp_path / "UCF-101"
    make_ucf101(media, ucf)
    (ucf / "ucfTrainTestlist" / "classInd.txt").write_text("1 ApplyEyeMakeup\none Archery\n")
    with pytest.raises(ValueError, match=re.escape(f"{ucf / 'ucfTrainTestlist' / 'classInd.txt'}:2: expected")):
        list_ucf101(ucf)


# --- Kinetics ---------------------------------------------------------------------------------

def test_kinetics_builder(media: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "kinetics"
    put(media, "av", root / "train" / "abseiling" / "0347ZoDXyP0_000095_000105.mp4")
    put(media, "silent", root / "train" / "air drumming" / "--nQbRBEz2s_000104_000114.mkv")
    put(media, "corrupt", root / "val" / "xyz_corrupt.mp4")
    put(media, "av", root / "test" / "testonly12345.webm")  # found by bare youtube_id
    train_csv = tmp_path / "train.csv"
    train_csv.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,0347ZoDXyP0,95,105,train\n"
        '"air drumming",--nQbRBEz2s,104,114,train\n'
        "abseiling,notDownloaded,0,10,train\n")
    val_csv = tmp_path / "validate.csv"
    val_csv.write_text("label,youtube_id,time_start,time_end,split\n"
                       "zumba,xyz_corrupt,1,11,val\n")
    test_csv = tmp_path / "test.csv"  # the test set has no labels
    test_csv.write_text("youtube_id,time_start,time_end,split\ntestonly12345,3,13,test\n")

    result = build_kinetics(root, [train_csv, val_csv, test_csv], workers=2)
    assert rel_rows(result, root) == [
        ("train/abseiling/0347ZoDXyP0_000095_000105.mp4", "abseiling", "train", True),
        ("train/air drumming/--nQbRBEz2s_000104_000114.mkv", "air drumming", "train", False),
        ("test/testonly12345.webm", "", "test", True),
    ]
    assert [r.extra for r in result.rows] == [
        {"youtube_id": "0347ZoDXyP0", "time_start": "95", "time_end": "105"},
        {"youtube_id": "--nQbRBEz2s", "time_start": "104", "time_end": "114"},
        {"youtube_id": "testonly12345", "time_start": "3", "time_end": "13"},
    ]
    assert rel_skipped(result, root) == {("notDownloaded_000000_000010", "missing"),
                                         ("val/xyz_corrupt.mp4", "corrupt")}

    out = write_manifest(result.rows, root / "kinetics.csv")
    back = read_manifest(out, split="train")
    assert [r.extra["youtube_id"] for r in back] == ["0347ZoDXyP0", "--nQbRBEz2s"]
    assert Path(back[0].path) == root / "train" / "abseiling" / "0347ZoDXyP0_000095_000105.mp4"

    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("label,id\nx,y\n")
    with pytest.raises(ValueError, match="lack columns"):
        build_kinetics(root, bad_csv)


def test_kinetics_rows_sharing_one_file_are_reported(media: dict[str, Path], tmp_path: Path) -> None:
    """Two segments of one youtube id and a single bare `<id>.mp4`: the file is one row, the other
    segment a duplicate naming the split and label it was kept in."""
    root = tmp_path / "kinetics"
    put(media, "av", root / "aaa.mp4")
    annotations = tmp_path / "train.csv"
    annotations.write_text("label,youtube_id,time_start,time_end,split\n"
                           "knot,aaa,10,20,train\n"
                           "knot,aaa,30,40,val\n")
    result = build_kinetics(root, annotations, workers=1)
    assert [(r.split, r.extra["time_start"]) for r in result.rows] == [("train", "10")]
    assert [(s.path, s.kind) for s in result.skipped] == [(str(root / "aaa.mp4"), "duplicate")]
    assert "split 'train'" in result.skipped[0].detail and "label 'knot'" in result.skipped[0].detail


def test_kinetics_clip_in_two_files_is_listed_once_and_the_other_reported(media: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """One clip downloaded twice (two formats, two folders): the first file in path order is the
    row, the others are duplicates naming it; a file no row names is not reported."""
    root = tmp_path / "kinetics"
    put(media, "av", root / "a" / "bbb_000010_000020.mp4")
    put(media, "silent", root / "a" / "bbb_000010_000020.webm")
    put(media, "av", root / "b" / "bbb_000010_000020.mp4")
    put(media, "av", root / "b" / "unnamed.mp4")
    annotations = tmp_path / "train.csv"
    annotations.write_text("label,youtube_id,time_start,time_end,split\nknot,bbb,10,20,train\n")
    result = build_kinetics(root, annotations, workers=1)
    assert rel_rows(result, root) == [("a/bbb_000010_000020.mp4", "knot", "train", True)]
    assert rel_skipped(result, root) == {("a/bbb_000010_000020.webm", "duplicate"),
                                         ("b/bbb_000010_000020.mp4", "duplicate")}
    assert all(str(root / "a" / "bbb_000010_000020.mp4") in s.detail for s in result.skipped)


@pytest.mark.parametrize("start, end", [("", "10"), ("3", "ten"), ("nan", "10")])
def test_kinetics_bad_times_name_the_file_and_line(tmp_path: Path, start: str, end: str) -> None:
    (tmp_path / "videos").mkdir()
    annotations = tmp_path / "train.csv"
    annotations.write_text(f"label,youtube_id,time_start,time_end,split\nx,abc,1,11,train\nx,abd,{start},{end},train\n")
    with pytest.raises(ValueError, match=re.escape(f"{annotations}:3: time_") + "(start|end) must be a number"):
        list_kinetics(tmp_path / "videos", annotations)


# --- the tool ---------------------------------------------------------------------------------

def test_build_manifest_tool(media: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "videos"
    put(media, "av", root / "climb" / "c1.mp4")
    put(media, "silent", root / "swim" / "s1.mp4")
    put(media, "corrupt", root / "swim" / "broken.mp4")
    out = root / "manifest.csv"

    done = subprocess.run(  # from another folder: the tool must find the package itself
        [sys.executable, str(REPO / "tools" / "build_manifest.py"), str(root), "--format", "folder",
         "--out", str(out), "--workers", "2", "--default-split", "all", "--probe-timeout", "30"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    assert "usable: 2 (no audio: 1)" in done.stdout
    assert "unreadable: 1" in done.stdout
    assert "  corrupt: 1" in done.stdout
    assert f"[corrupt] {root / 'swim' / 'broken.mp4'}" in done.stdout
    assert f"wrote {out} (2 rows)" in done.stdout
    assert out.read_text().splitlines()[1].startswith("climb/c1.mp4,climb,all,")
    rows = read_manifest(out)
    assert [(r.label, r.has_audio) for r in rows] == [("climb", True), ("swim", False)]


def test_build_manifest_tool_usage_errors(media: dict[str, Path], tmp_path: Path, tool,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "videos"
    put(media, "av", root / "climb" / "c1.mp4")
    (tmp_path / "nothing").mkdir()
    out = tmp_path / "manifest.csv"
    for args, message in (
        ([tmp_path / "nothing", "--format", "folder"], "no candidate videos"),
        ([tmp_path / "absent", "--format", "folder"], "is not a folder"),
        ([root, "--format", "ucf101"], "classInd.txt"),
        ([root, "--format", "kinetics"], "needs --annotations"),
        ([root, "--format", "hmdb51", "--split", "4"], "invalid choice"),
    ):
        with pytest.raises(SystemExit) as exited:
            tool.main([*map(str, args), "--out", str(out)])
        assert exited.value.code == 2
        assert message in capsys.readouterr().err
    assert not out.exists()
