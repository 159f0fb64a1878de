"""Manifest read/write: the CSV format."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmssl.data.manifest import ManifestError, ManifestRow, class_names, read_manifest, write_manifest


def test_manifest_round_trip_keeps_fields_extras_and_relative_paths(tmp_path: Path) -> None:
    inside = tmp_path / "data" / "a" / "v.mp4"
    outside = tmp_path / "elsewhere" / "w.mp4"
    rows = [
        ManifestRow(str(inside), "jump", "train", 1.25, 8.0, 10, True, {"youtube_id": "abc"}),
        ManifestRow(str(outside), "", "test", 2.0, 25.0, 50, False, {"time_start": "3"}),
    ]
    out = write_manifest(rows, tmp_path / "data" / "manifest.csv")
    text = out.read_text().splitlines()
    assert text[0] == "path,label,split,duration,fps,num_frames,has_audio,time_start,youtube_id"
    assert text[1].startswith("a/v.mp4,jump,train,")
    assert text[2].startswith(str(outside.resolve()))

    back = read_manifest(out)
    assert [Path(r.path).resolve() for r in back] == [inside.resolve(), outside.resolve()]
    assert [(r.label, r.split, r.duration, r.fps, r.num_frames, r.has_audio) for r in back] == \
        [(r.label, r.split, r.duration, r.fps, r.num_frames, r.has_audio) for r in rows]
    assert back[0].extra == {"youtube_id": "abc", "time_start": ""}
    assert back[1].extra == {"youtube_id": "", "time_start": "3"}
    assert [r.label for r in read_manifest(out, split="train")] == ["jump"]
    with pytest.raises(ManifestError, match=r"no rows in split 'val'; its splits: 'test' \(1\), 'train' \(1\)"):
        read_manifest(out, split="val")
    assert class_names(back) == ["jump"]


@pytest.mark.parametrize("text, message", [
    (None, "no manifest at .*tools/build_manifest.py"),
    ("path,label\nx.mp4,a\n", "lacks columns"),
    ("path,label,split,duration,fps,num_frames,has_audio\nx.mp4,a,train,1.0,fast,16,1\n", "line 2: unreadable row"),
    ("path,label,split,duration,fps,num_frames,has_audio\nx.mp4,a,train,1.0,25,25,1\ny.mp4,a,train,0,0,0,1\n",
     "line 3: .*y.mp4 needs fps > 0 and num_frames >= 1"),
])
def test_read_manifest_names_what_is_wrong(tmp_path: Path, text: str | None, message: str) -> None:
    bad = tmp_path / "bad.csv"
    if text is not None:
        bad.write_text(text)
    with pytest.raises(ManifestError, match=message):
        read_manifest(bad)


HEADER = "path,label,split,duration,fps,num_frames,has_audio\n"


@pytest.mark.parametrize("climbing", ["../x.mp4", "a/../../x.mp4", "./../data2/x.mp4"])
def test_read_manifest_refuses_a_relative_path_that_climbs_out_of_its_folder(tmp_path: Path, climbing: str) -> None:
    bad = tmp_path / "data" / "manifest.csv"
    bad.parent.mkdir()
    bad.write_text(f"{HEADER}v.mp4,a,train,1.0,25,25,1\n{climbing},a,train,1.0,25,25,1\n")
    with pytest.raises(ManifestError, match=re.escape(f"{bad}, line 3: path '{climbing}' climbs out of the "
                                                      f"manifest's folder with '..'")):
        read_manifest(bad)


def test_read_manifest_keeps_absolute_paths_anywhere_and_dot_dots_that_stay_inside(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "w.mp4"
    good = tmp_path / "data" / "manifest.csv"
    good.parent.mkdir()
    good.write_text(f"{HEADER}{elsewhere},a,train,1.0,25,25,1\na/../v.mp4,a,train,1.0,25,25,1\n")
    assert [r.path for r in read_manifest(good)] == [str(elsewhere), str(good.parent / "a/../v.mp4")]
