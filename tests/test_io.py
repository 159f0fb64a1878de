"""mmssl.io on real files encoded here: exact frames, timestamps, audio alignment, typed errors."""
from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mmssl.io import (
    CorruptMediaError,
    EmptyMediaError,
    MediaError,
    MissingMediaError,
    NoAudioStreamError,
    NoVideoStreamError,
    TooShortError,
    UnsupportedCodecError,
    VideoReader,
    load_audio,
    open_container,
    probe,
    write_media,
)
from mmssl.io.video import SKIP_NONREF_CODECS, _PyAVBackend, cover_size, read_all_frames
from mmssl.io.writer import cut_without_reencoding, split_stream

SR = 16000
BITS = 6  # frame numbers up to 63, written as black/white blocks along the bottom of the frame


def numbered_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frame i shows i in binary as BITS blocks (white = 1) under a moving square (for motion)."""
    frames = np.full((n, height, width, 3), 128, dtype=np.uint8)
    block = width // BITS
    for i in range(n):
        x = (3 * i) % (width - 8)
        frames[i, 2:8, x:x + 8] = 250
        for bit in range(BITS):
            frames[i, height // 2:, bit * block:(bit + 1) * block] = 255 if i >> bit & 1 else 0
    return frames


def frame_number(frame: torch.Tensor) -> int:
    """Read back the number a numbered frame shows (block means survive lossy coding and scaling)."""
    height, width = frame.shape[:2]
    block = width // BITS
    bottom = frame[height * 5 // 8:].float().mean(dim=(0, 2))
    return sum(1 << bit for bit in range(BITS)
               if bottom[bit * block + block // 4:(bit + 1) * block - block // 4].mean() > 128)


def clicks(times_s: list[float], duration_s: float, sample_rate: int = SR) -> np.ndarray:
    """Silence with a 1 ms full-scale burst starting at each time."""
    audio = np.zeros(round(duration_s * sample_rate), dtype=np.float32)
    width = sample_rate // 1000
    for t in times_s:
        start = round(t * sample_rate)
        audio[start:start + width] = np.where(np.arange(width) % 2, -0.9, 0.9)
    return audio


def onset(audio: torch.Tensor, sample_rate: int = SR) -> list[float]:
    """Times (s) where |audio| first exceeds half its maximum, one per separated burst."""
    loud = np.flatnonzero(audio.abs().numpy() > 0.5 * audio.abs().max().item())
    starts = loud[np.concatenate([[True], np.diff(loud) > sample_rate // 20])]
    return (starts / sample_rate).tolist()


FORMATS = {
    "h264_aac.mp4": dict(video_codec="libx264", audio_codec="aac", gop=8),
    "vp9_opus.webm": dict(video_codec="libvpx-vp9", audio_codec="libopus", sample_rate=48000),
    "mpeg4_pcm.avi": dict(video_codec="mpeg4", audio_codec="pcm_s16le", sample_rate=22050),
    "mpeg4_mp3.mkv": dict(video_codec="mpeg4", audio_codec="libmp3lame", sample_rate=44100),
    "h264_444_odd.mkv": dict(video_codec="libx264", pix_fmt="yuv444p", height=33, width=47, audio=False),
    # demuxers that seek by decode time: a seek to a keyframe's presentation time lands past it
    "h264_aac.ts": dict(video_codec="libx264", audio_codec="aac", gop=8),
    "mpeg2_mp2.mpg": dict(video_codec="mpeg2video", audio_codec="mp2", gop=8),
    "h264_aac.flv": dict(video_codec="libx264", audio_codec="aac", gop=8, sample_rate=44100),
    # AVI stores no presentation times: FFmpeg stamps H.264's B-frames in decode order
    "h264_pcm.avi": dict(video_codec="libx264", audio_codec="pcm_s16le", gop=8),
    "h264_open_gop.avi": dict(video_codec="libx264", gop=8, audio=False,
                              options={"x264-params": "mbtree=0:open-gop=1:scenecut=0"}),
}
NUM_FRAMES = 40
FPS = 16


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    files = {}
    for name, spec in FORMATS.items():
        spec = dict(spec)
        height, width = spec.pop("height", 48), spec.pop("width", 64)
        rate = spec.get("sample_rate", SR)
        audio = clicks([0.5, 1.25], NUM_FRAMES / FPS, rate) if spec.pop("audio", True) else None
        files[name] = write_media(root / name, numbered_frames(NUM_FRAMES, height, width), FPS, audio, **spec)
    vfr_times = np.cumsum(np.random.default_rng(0).uniform(0.02, 0.12, 30)) + 0.5
    files["vfr.mp4"] = write_media(root / "vfr.mp4", numbered_frames(30), FPS, frame_times=vfr_times.tolist())
    files["three.mp4"] = write_media(root / "three.mp4", numbered_frames(3), FPS)
    long = write_media(root / "long.mp4", numbered_frames(60), FPS, clicks([2.0], 60 / FPS), gop=16)
    files["edit_list.mp4"] = cut_without_reencoding(long, root / "edit_list.mp4", 1.3)
    files["audio_only.m4a"] = write_media(root / "audio_only.m4a", None, FPS, clicks([0.1], 1.0))
    mjpeg = write_media(root / "mjpeg_pcm_u8.avi", numbered_frames(NUM_FRAMES), FPS,
                        clicks([0.5, 1.25], NUM_FRAMES / FPS), video_codec="mjpeg", pix_fmt="yuvj420p",
                        audio_codec="pcm_u8")
    files["no_video_keys.avi"] = without_keyframe_flags(mjpeg, root / "no_video_keys.avi", b"dc")
    files["no_audio_keys.avi"] = without_keyframe_flags(mjpeg, root / "no_audio_keys.avi", b"wb")
    return files


def without_keyframe_flags(path: Path, out: Path, chunk_type: bytes) -> Path:
    """A copy of an AVI whose index (idx1) marks none of the chunks of one type (b"dc": video,
    b"wb": audio) as keyframes, as some cameras write: FFmpeg then refuses to seek that stream."""
    data = bytearray(path.read_bytes())
    index = data.rfind(b"idx1")
    entries = int.from_bytes(data[index + 4:index + 8], "little") // 16
    for entry in range(index + 8, index + 8 + 16 * entries, 16):
        if data[entry + 2:entry + 4] == chunk_type:
            data[entry + 4:entry + 8] = bytes(4)  # dwFlags: no AVIIF_KEYFRAME
    out.write_bytes(data)
    return out


VIDEO_FILES = [*FORMATS, "vfr.mp4", "three.mp4", "edit_list.mp4", "no_video_keys.avi"]


@pytest.mark.parametrize("name", VIDEO_FILES)
def test_random_access_equals_sequential_decode(media: dict[str, Path], name: str) -> None:
    reference = read_all_frames(media[name])
    info = probe(media[name])
    assert info.num_frames == len(reference)
    rng = np.random.default_rng(1)
    indices = [*rng.integers(0, len(reference), 10), len(reference) - 1, 0, 2 % len(reference)]
    with VideoReader(media[name]) as reader:
        assert reader.num_frames == len(reference)
        frames = reader.get_frames(indices)
        assert frames.dtype == torch.uint8 and frames.shape == (len(indices), *reference.shape[1:])
        assert torch.equal(frames, reference[indices])
        assert torch.equal(reader.get_frames(range(len(reference))), reference)


@pytest.mark.parametrize("name", ["h264_aac.mp4", "h264_444_odd.mkv", "h264_aac.ts", "h264_aac.flv", "mpeg4_pcm.avi",
                                  "h264_pcm.avi"])
def test_a_seek_lands_on_the_keyframe_of_the_frame(media: dict[str, Path], name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # One seek, and decoding starts at the frame's own keyframe: mp4 and Matroska are sought by the
    # keyframe's presentation time (by its decode time they land a keyframe early: x264's B-frames),
    # MPEG-TS, FLV and AVI by its decode time (by its presentation time TS and FLV land past it).
    first_packets: list[int] = []
    demux = av.container.InputContainer.demux

    def recording(self: av.container.InputContainer, *args: object, **kwargs: object) -> Iterator[av.Packet]:
        for i, packet in enumerate(demux(self, *args, **kwargs)):
            if i == 0:
                first_packets.append(packet.pts if packet.pts is not None else packet.dts)
            yield packet

    with VideoReader(media[name]) as reader:
        frame = 21
        keys = reader.index.keyframe_pts
        key = keys[np.searchsorted(keys, reader.index.pts[frame], side="right") - 1]
        assert key > keys[0]
        monkeypatch.setattr(av.container.InputContainer, "demux", recording)
        reader.get_frames([frame])
    assert first_packets == [key]


@pytest.mark.parametrize("name", ["h264_aac.mp4", "vfr.mp4", "edit_list.mp4", "mpeg4_pcm.avi", "h264_pcm.avi"])
def test_strided_read_leaves_unwanted_b_frames_undecoded(media: dict[str, Path], name: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Every third frame, from a reader that skips non-reference frames nobody asked for and from one
    # that decodes all: the same frames as the sequential decode, with fewer frames decoded on
    # H.264 (x264's B-frames; none skipped on MPEG-4 part 2, which is not in SKIP_NONREF_CODECS, nor
    # on H.264 in AVI, whose frames are counted as they leave the decoder).
    decoded: list[int] = []
    decode = _PyAVBackend._decode

    def counting(self: _PyAVBackend, wanted: dict[int, int], key: int) -> Iterator[av.VideoFrame]:
        for frame in decode(self, wanted, key):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(_PyAVBackend, "_decode", counting)
    reference = read_all_frames(media[name])
    indices = list(range(1, len(reference), 3))
    counts = []
    for codecs in (frozenset(), SKIP_NONREF_CODECS):
        monkeypatch.setattr("mmssl.io.video.SKIP_NONREF_CODECS", codecs)
        decoded.clear()
        with VideoReader(media[name]) as reader:
            assert torch.equal(reader.get_frames(indices), reference[indices])
        counts.append(len(decoded))
    every, skipping = counts
    if name.endswith(".avi"):
        assert skipping == every
    else:
        assert skipping < every, counts


def test_mpeg_ps_with_b_frames_reads_every_frame_exactly(tmp_path: Path) -> None:
    """MPEG-2 in a program stream with B-frames and open GOPs, frames larger than a PES packet (as DVD
    and camera files have): a seek to a keyframe's decode time landed on a PES whose payload opens with
    the previous frame's tail, and the keyframe took the next packet's stamps (12 of 40 single-frame
    reads raised `corrupt`, one returned another frame). Every frame alone and every 16-frame clip."""
    frames = np.random.default_rng(0).integers(0, 256, (40, 48, 64, 3), dtype=np.uint8)  # noise: ~4 KB a frame
    path = write_media(tmp_path / "bframes.mpg", frames, FPS, video_codec="mpeg2video", gop=12,
                       options={"bf": "2", "b": "4000000"})
    reference = read_all_frames(path)
    with VideoReader(path) as reader:
        assert reader.num_frames == len(reference) == 40
        for i in range(len(reference)):
            assert torch.equal(reader.get_frames([i]), reference[i:i + 1]), i
            clip = list(range(i, min(i + 16, len(reference))))
            assert torch.equal(reader.get_frames(clip), reference[clip]), i


def cut_inside_a_gop(path: Path, out: Path) -> Path:
    """`path` from the first pack or TS packet after its third keyframe's start: the tail of a GOP
    whose keyframe is missing, then an open GOP whose leading B-frames refer to that tail."""
    with av.open(str(path)) as container:
        keys = [p.pos for p in container.demux(container.streams.video[0]) if p.is_keyframe and p.pos]
    return split_stream(path, out, keys[2] + 1)


@pytest.mark.parametrize(("codec", "suffix", "options"), [
    ("mpeg2video", ".mpg", {"bf": "2", "b": "4000000"}),
    ("mpeg2video", ".ts", {"bf": "2", "b": "4000000"}),
    ("libx264", ".ts", {"x264-params": "mbtree=0:open-gop=1:bframes=3:scenecut=0"}),
])
def test_stream_that_starts_inside_a_gop_reads_every_frame_exactly(tmp_path: Path, codec: str, suffix: str,
                                                                  options: dict[str, str]) -> None:
    """A file that starts inside a GOP: the decoder shows no frame before the first keyframe, nor the
    open GOP's leading B-frames after it (their references are not in the file). They were indexed as
    frames 0..k (3 to 14 of them here), so every later frame was read as another one, and those frames
    as `corrupt`. Every frame alone, in random order, and every 16-frame clip."""
    frames = np.random.default_rng(0).integers(0, 256, (48, 48, 64, 3), dtype=np.uint8)  # noise: ~4 KB a frame
    whole = write_media(tmp_path / f"whole{suffix}", frames, FPS, video_codec=codec, gop=12, options=options)
    path = cut_inside_a_gop(whole, tmp_path / f"cut{suffix}")
    reference = read_all_frames(path)
    with VideoReader(path) as reader:
        assert reader.num_frames == len(reference)
        for i in np.random.default_rng(0).permutation(len(reference)).tolist():
            assert torch.equal(reader.get_frames([i]), reference[i:i + 1]), i
        for i in range(len(reference)):
            clip = list(range(i, min(i + 16, len(reference))))
            assert torch.equal(reader.get_frames(clip), reference[clip]), i


def test_closed_gop_leading_b_frames_at_the_start_are_frames(tmp_path: Path) -> None:
    """The same cut, its first GOP header marked closed: the decoder now shows the leading B-frames
    (predicted from the keyframe alone, as a closed GOP's are), so they are frames, and readable."""
    frames = np.random.default_rng(0).integers(0, 256, (48, 48, 64, 3), dtype=np.uint8)
    whole = write_media(tmp_path / "whole.mpg", frames, FPS, video_codec="mpeg2video", gop=12,
                        options={"bf": "2", "b": "4000000"})
    data = bytearray(cut_inside_a_gop(whole, tmp_path / "cut.mpg").read_bytes())
    gop = data.find(b"\x00\x00\x01\xb8")  # GOP header: 25 bits of time code, then closed_gop
    data[gop + 7] |= 0x40
    path = tmp_path / "closed.mpg"
    path.write_bytes(bytes(data))
    reference = read_all_frames(path)
    with VideoReader(path) as reader:
        assert reader.num_frames == len(reference)
        assert reader.index.pts[0] < reader.index.keyframe_pts[0]  # shown before the first keyframe
        for i in range(len(reference)):
            assert torch.equal(reader.get_frames([i]), reference[i:i + 1]), i


def test_avi_h264_frames_are_counted_from_closed_gops(media: dict[str, Path]) -> None:
    # Stamped in decode order, B-frames would come out as the wrong frames (26 of 40) or none at all
    # (19): the reader numbers them by their place in the decoder's output instead, counted from a
    # keyframe that is shown first (an IDR picture). An open GOP's I-frame is not one: its leading
    # B-frames, shown before it, are dropped after a seek to it, so reads start at the IDR.
    for name, closed_gops in (("h264_pcm.avi", True), ("h264_open_gop.avi", False)):
        with av.open(str(media[name])) as container:
            stream = container.streams.video[0]
            stamps = [packet.pts for packet in container.demux(stream) if packet.size]
        assert stamps == sorted(stamps)  # FFmpeg's stamps are in decode order...
        with av.open(str(media[name])) as container:
            shown = [frame.pts for frame in container.decode(video=0)]
        assert shown != sorted(shown)  # ...and the B-frames are shown out of it
        with VideoReader(media[name]) as reader:
            assert reader.index.decode_order
            assert (len(reader.index.keyframe_pts) > 1) == closed_gops
            indices = [21, 5, 13, 39, 8, 30]
            assert [frame_number(f) for f in reader.get_frames(indices)] == indices


def remux(sources: list[Path], out: Path, codec_tag: str | None = None) -> Path:
    """The video packets of `sources` one after the other in `out`, restamped 0, 1, ... in frames (as an
    AVI cut and joined without re-encoding), from each source's second-last keyframe on except the last's."""
    with av.open(str(out), "w") as output:
        packets = []
        for i, source in enumerate(sources):
            with av.open(str(source)) as container:
                video = container.streams.video[0]
                if not packets:
                    stream = output.add_stream_from_template(video)
                    stream.time_base = Fraction(1, FPS)
                    if codec_tag:
                        stream.codec_context.codec_tag = codec_tag
                found = [packet for packet in container.demux(video) if packet.size]
                keys = [k for k, packet in enumerate(found) if packet.is_keyframe]
                packets += found if i == len(sources) - 1 else found[keys[-2]:]
        for stamp, packet in enumerate(packets):
            packet.pts = packet.dts = round(stamp / (packet.time_base * FPS))  # frame `stamp`, in its time base
            packet.stream = stream
            output.mux(packet)
    return out


def test_avi_h264_cut_inside_an_open_gop_and_avc1_packets(media: dict[str, Path], tmp_path: Path) -> None:
    # A file that starts inside an open GOP and has IDRs later: its first frames are read from the
    # file's start. H.264 stored with lengths (codec tag AVC1, avcC extradata), not start codes: its
    # IDRs are found and each read starts at the frame's own one.
    for path, idr_keys in ((remux([media["h264_open_gop.avi"], media["h264_pcm.avi"]], tmp_path / "cut.avi"), True),
                           (remux([media["h264_aac.mp4"]], tmp_path / "avc1.avi", "AVC1"), True),
                           (remux([media["h264_open_gop.avi"]], tmp_path / "open.avi"), False)):
        reference = read_all_frames(path)
        with VideoReader(path) as reader:
            assert reader.index.decode_order and (len(reader.index.keyframe_pts) > 2) == idr_keys
            indices = [0, 1, 5, len(reference) - 1, 20, 3]
            assert torch.equal(reader.get_frames(indices), reference[indices])


@pytest.mark.parametrize("name", [*FORMATS, "vfr.mp4"])
def test_frames_are_the_encoded_ones(media: dict[str, Path], name: str) -> None:
    with VideoReader(media[name]) as reader:
        indices = [0, 7, 3, 21, 29]
        assert [frame_number(f) for f in reader.get_frames(indices)] == indices


def test_edit_list_file_starts_at_the_cut(media: dict[str, Path]) -> None:
    # 60 frames at 16 fps cut at 1.3 s: the first shown frame is source frame 21 (at 1.3125 s).
    with VideoReader(media["edit_list.mp4"]) as reader:
        assert reader.num_frames == 60 - 21
        assert [frame_number(f) for f in reader.get_frames([0, 5, 38])] == [21, 26, 59]
        assert reader.timestamps([0]).item() == pytest.approx(0.0, abs=1e-6)


def test_resize_in_decoder(media: dict[str, Path]) -> None:
    path = media["h264_aac.mp4"]
    reference = read_all_frames(path, size=(24, 40))
    with VideoReader(path, size=(24, 40)) as reader:
        assert reader.size == (24, 40)
        frames = reader.get_frames([5, 1, 30])
    assert frames.shape == (3, 24, 40, 3)
    assert torch.equal(frames, reference[[5, 1, 30]])
    assert [frame_number(f) for f in frames] == [5, 1, 30]


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_resize_keeping_the_aspect_ratio_crops_the_centre(media: dict[str, Path], backend: str) -> None:
    path = media["h264_aac.mp4"]  # 48x64: covering 32x32 takes 32x43, whose middle 32 columns are kept
    assert cover_size((48, 64), (32, 32)) == (32, 43) and cover_size((64, 48), (16, 40)) == (53, 40)
    reference = read_all_frames(path, size=(32, 43))[:, :, 5:37]
    with VideoReader(path, size=(32, 32), backend=backend, keep_aspect=True) as reader:
        assert reader.size == (32, 32)
        frames = reader.get_frames([5, 1, 30])
    assert frames.shape == (3, 32, 32, 3)
    if backend == "pyav":
        assert torch.equal(frames, reference[[5, 1, 30]])
    else:  # decord scales with its own filter
        assert (frames.float() - reference[[5, 1, 30]].float()).abs().mean() < 3


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_frames_are_turned_upright_by_the_display_matrix(tmp_path: Path, rotation: int) -> None:
    # A phone's portrait clip: landscape frames stored with a rotation in the display matrix.
    stored = numbered_frames(12)  # 48x64
    plain = write_media(tmp_path / "plain.mp4", stored, FPS)
    turned = write_media(tmp_path / "turned.mp4", stored, FPS, rotation=rotation)
    quarter_turns = rotation // 90
    info = probe(turned)
    assert (info.height, info.width) == ((64, 48) if quarter_turns % 2 else (48, 64))
    with VideoReader(plain) as reader:
        expected = torch.from_numpy(np.rot90(reader.get_frames([3, 7]).numpy(), quarter_turns, axes=(1, 2)).copy())
    with VideoReader(turned) as reader:
        assert torch.equal(reader.get_frames([3, 7]), expected)
    upright = expected.permute(0, 3, 1, 2).float()  # the aspect kept: the short side to 32, the centre kept
    cover = cover_size(tuple(upright.shape[2:]), (32, 32))
    top, left = (cover[0] - 32) // 2, (cover[1] - 32) // 2
    resized = torch.nn.functional.interpolate(upright, size=cover, mode="bilinear")[:, :, top:top + 32, left:left + 32]
    with VideoReader(turned, size=(32, 32), keep_aspect=True) as reader:
        frames = reader.get_frames([3, 7])
    assert frames.shape == (2, 32, 32, 3)
    assert (frames.permute(0, 3, 1, 2).float() - resized).abs().mean() < 4


def test_timestamps_constant_and_variable_rate(media: dict[str, Path]) -> None:
    with VideoReader(media["h264_aac.mp4"]) as reader:
        torch.testing.assert_close(reader.timestamps([0, 1, 10, 39]),
                                   torch.tensor([0, 1, 10, 39], dtype=torch.float64) / FPS)
        assert reader.fps == pytest.approx(FPS)
    times = np.cumsum(np.random.default_rng(0).uniform(0.02, 0.12, 30)) + 0.5
    with VideoReader(media["vfr.mp4"]) as reader:
        got = reader.timestamps(range(30)).numpy()
    np.testing.assert_allclose(got, times - times[0], atol=1.5e-3)


def test_probe_reports_streams(media: dict[str, Path]) -> None:
    info = probe(media["vp9_opus.webm"])
    assert (info.num_frames, info.width, info.height) == (NUM_FRAMES, 64, 48)
    assert info.fps == pytest.approx(FPS, rel=0.01)
    assert info.duration == pytest.approx(NUM_FRAMES / FPS, abs=0.01)
    assert (info.has_audio, info.audio_sample_rate, info.audio_channels) == (True, 48000, 1)
    assert (info.video_codec, info.audio_codec) == ("vp9", "opus")
    odd = probe(media["h264_444_odd.mkv"])
    assert (odd.width, odd.height, odd.has_audio, odd.audio_codec) == (47, 33, False, "")


AUDIO_FILES = ["h264_aac.mp4", "vp9_opus.webm", "mpeg4_pcm.avi", "mpeg4_mp3.mkv", "h264_aac.ts", "mpeg2_mp2.mpg",
               "h264_aac.flv", "no_audio_keys.avi", "h264_pcm.avi"]


@pytest.mark.parametrize("name", AUDIO_FILES)
def test_audio_length_and_alignment(media: dict[str, Path], name: str) -> None:
    whole = load_audio(media[name], 0.0, NUM_FRAMES / FPS)
    assert whole.dtype == torch.float32 and whole.shape == (round(NUM_FRAMES / FPS * SR),)
    np.testing.assert_allclose(onset(whole), [0.5, 1.25], atol=0.002)
    window = load_audio(media[name], 1.0, 0.7)  # the second click at 0.25 s into the window
    assert window.shape == (round(0.7 * SR),)
    np.testing.assert_allclose(onset(window), [0.25], atol=0.002)
    odd = load_audio(media[name], 0.123, 1 / 3)
    assert odd.shape == (round(SR / 3),)


@pytest.mark.parametrize("name", ["h264_aac.mp4", "mpeg2_mp2.mpg"])
def test_audio_window_equals_slice_of_whole(media: dict[str, Path], name: str) -> None:
    # After a seek the MPEG-PS demuxer may hand over a partial packet first, which does not decode.
    whole = load_audio(media[name], 0.0, 2.5)
    for start in (0.9, 1.1, 1.4, 1.6, 1.9):
        window = load_audio(media[name], start, 0.5)
        torch.testing.assert_close(window, whole[round(start * SR):round(start * SR) + len(window)], atol=1e-4, rtol=0)


def test_audio_zero_padded_outside_the_track(media: dict[str, Path]) -> None:
    path = media["h264_aac.mp4"]  # audio lasts 2.5 s (+ the encoder's last-frame padding)
    past = load_audio(path, 2.0, 1.5)
    assert past.shape == (24000,)
    assert past[round(0.7 * SR):].abs().max().item() == 0.0
    before = load_audio(path, -0.5, 1.0)  # the click at 0.5 s lands at 1.0 s: outside
    assert before[:round(0.5 * SR)].abs().max().item() == 0.0
    np.testing.assert_allclose(onset(load_audio(path, -0.25, 1.0)), [0.75], atol=0.002)


@pytest.mark.parametrize("name", ["h264_aac.mp4", "h264_pcm.avi", "mpeg4_pcm.avi"])
def test_audio_is_on_the_video_clock(media: dict[str, Path], name: str) -> None:
    # A click at frame 8's time (0.5 s) is heard within half a frame of that frame's timestamp (AVI
    # shows frame n at n / fps; FFmpeg stamps H.264 there a frame late, which the index takes off).
    path = media[name]
    with VideoReader(path) as reader:
        frame_time = reader.timestamps([8]).item()
    start = frame_time - 0.25
    assert abs(onset(load_audio(path, start, 0.5))[0] + start - frame_time) < 0.5 / FPS


@pytest.mark.parametrize("name", [*AUDIO_FILES, "edit_list.mp4"])
@pytest.mark.parametrize("start", [0.0, 0.1, 1.0])
def test_frames_then_audio_from_one_open_container(media: dict[str, Path], name: str, start: float) -> None:
    # A sample's frames, then its audio window (at the start of the track, or later), through one open
    # container that the reader leaves open: the same as reads that each open the file.
    path, indices = media[name], [3, 1, 20]
    with open_container(path) as container:
        with VideoReader(path, container=container) as reader:
            frames = reader.get_frames(indices)
        audio = load_audio(path, start, 0.7, container=container)
    with VideoReader(path) as reader:
        assert torch.equal(frames, reader.get_frames(indices))
    torch.testing.assert_close(audio, load_audio(path, start, 0.7), atol=0, rtol=0)


def test_audio_whose_rate_and_layout_change_midway(tmp_path: Path) -> None:
    # Two ADTS AAC streams joined byte to byte (1.0 s mono at 8 kHz, then 1.5 s stereo at 16 kHz), as
    # a joined recording or a broadcast capture changes format: both parts are decoded, in order.
    first = write_media(tmp_path / "a.aac", None, FPS, clicks([0.3], 1.0, 8000), sample_rate=8000)
    second = write_media(tmp_path / "b.aac", None, FPS, np.stack([clicks([0.4], 1.5)] * 2))
    joined = tmp_path / "joined.aac"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    audio = load_audio(joined, 0.0, 3.0)
    assert audio.shape == (3 * SR,)
    # AAC decodes whole 1024-sample frames, the first of each part its encoder's priming: part one
    # lasts 9 frames at 8 kHz (1.152 s) and its click comes 128 ms late, part two's 64 ms late.
    first_length = math.ceil((8000 + 1024) / 1024) * 1024 / 8000
    np.testing.assert_allclose(onset(audio), [0.3 + 1024 / 8000, first_length + 0.4 + 1024 / SR], atol=0.002)


def without_audio_packets(path: Path, out: Path, start_s: float, end_s: float) -> Path:
    """A copy of `path` (remuxed, nothing re-encoded) missing its audio packets from start_s to
    end_s, as a recording that dropped them: the packets after the gap keep their timestamps."""
    with av.open(str(path)) as source, av.open(str(out), "w") as target:
        streams = {s.index: target.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is None:
                continue
            if packet.stream.type == "audio" and start_s <= packet.pts * packet.time_base < end_s:
                continue
            packet.stream = streams[packet.stream.index]
            target.mux(packet)
    return out


def test_audio_stays_on_the_video_clock_across_missing_packets(tmp_path: Path, media: dict[str, Path]) -> None:
    # 0.3 s of audio packets missing between the clicks at 0.5 and 1.25 s: the later click is still
    # heard at 1.25 s (the missing span silent), in the whole track and in a window after the gap.
    path = without_audio_packets(media["mpeg4_pcm.avi"], tmp_path / "gap.mkv", 0.7, 1.0)
    whole = load_audio(path, 0.0, NUM_FRAMES / FPS)
    np.testing.assert_allclose(onset(whole), [0.5, 1.25], atol=0.002)
    assert whole[round(0.75 * SR):round(0.95 * SR)].abs().max().item() == 0.0
    np.testing.assert_allclose(onset(load_audio(path, 1.1, 0.5)), [0.15], atol=0.002)


# --- bad input: typed errors that name the file -------------------------------------------------


def _expect(error: type[MediaError], path: Path, call) -> MediaError:
    with pytest.raises(error) as caught:
        call(path)
    assert str(path) in str(caught.value) and caught.value.path == str(path)
    return caught.value


def test_missing_and_empty(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    for call in (probe, VideoReader, lambda p: load_audio(p, 0, 1)):
        assert _expect(MissingMediaError, missing, call).kind == "missing"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for call in (probe, VideoReader, lambda p: load_audio(p, 0, 1)):
        assert _expect(EmptyMediaError, empty, call).kind == "empty"


def test_corrupt_files(tmp_path: Path, media: dict[str, Path]) -> None:
    data = media["h264_aac.mp4"].read_bytes()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(20000))
    truncated = tmp_path / "truncated.mp4"  # moov at the end: gone
    truncated.write_bytes(data[: len(data) // 2])
    zeroed = tmp_path / "zeroed.mp4"
    zeroed.write_bytes(bytes(4096) + data[4096:])
    faststart = write_media(tmp_path / "faststart.mp4", numbered_frames(40), FPS,
                            container_options={"movflags": "faststart"})
    cut = tmp_path / "faststart_truncated.mp4"  # header intact, half the frames missing
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    for path in (garbage, truncated, zeroed, cut):
        for call in (probe, VideoReader):
            assert _expect(CorruptMediaError, path, call).kind == "corrupt"


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_corrupt_packet_mid_file(tmp_path: Path, backend: str) -> None:
    """A file whose index is intact but whose data is garbled a third of the way in raises
    CorruptMediaError (not the decoder's own error) when its frames are decoded (decord's decoder
    thread may already report it while the reader opens)."""
    data = bytearray(write_media(tmp_path / "good.mp4", numbered_frames(NUM_FRAMES), FPS, gop=8).read_bytes())
    start = data.find(b"mdat") + (len(data) - data.find(b"mdat")) // 3
    data[start:start + 400] = np.random.default_rng(0).bytes(400)
    garbled = tmp_path / "garbled.mp4"
    garbled.write_bytes(bytes(data))
    def read_all(path: Path) -> torch.Tensor:
        with VideoReader(path, backend=backend) as reader:
            assert reader.num_frames == NUM_FRAMES  # the index is intact
            return reader.get_frames(range(NUM_FRAMES))

    _expect(CorruptMediaError, garbled, read_all)


def test_stream_errors(tmp_path: Path, media: dict[str, Path]) -> None:
    audio_only = media["audio_only.m4a"]
    for call in (probe, VideoReader):
        _expect(NoVideoStreamError, audio_only, call)
    assert load_audio(audio_only, 0.0, 0.5).shape == (8000,)
    _expect(NoAudioStreamError, media["h264_444_odd.mkv"], lambda p: load_audio(p, 0, 1))
    data = bytearray(media["h264_aac.mp4"].read_bytes())
    at = data.find(b"avc1", data.find(b"stsd"))
    data[at:at + 4] = b"zzzz"  # an unknown codec tag in the sample description
    unknown = tmp_path / "unknown_codec.mp4"
    unknown.write_bytes(bytes(data))
    for call in (probe, VideoReader):
        assert _expect(UnsupportedCodecError, unknown, call).kind == "unsupported_codec"


def test_too_few_frames(media: dict[str, Path]) -> None:
    with VideoReader(media["three.mp4"]) as reader:
        assert reader.num_frames == 3
        assert reader.get_frames([2, 0]).shape[0] == 2
        with pytest.raises(TooShortError, match="has 3"):
            reader.get_frames([0, 3])
        with pytest.raises(TooShortError):
            reader.timestamps([-1])


def test_decord_backend(media: dict[str, Path]) -> None:
    path = media["h264_aac.mp4"]
    reference = read_all_frames(path)
    with VideoReader(path, backend="decord") as reader:
        assert reader.num_frames == NUM_FRAMES
        assert torch.equal(reader.get_frames([9, 2, 30]), reference[[9, 2, 30]])
    with pytest.raises(MissingMediaError):
        VideoReader(path.with_name("nope.mp4"), backend="decord")
    with pytest.raises(ValueError, match="unknown backend"):
        VideoReader(path, backend="nope")


def test_media_errors_cross_a_process_boundary() -> None:
    """A pool worker's MediaError is pickled back to the parent: it must unpickle as itself."""
    import pickle

    from mmssl.io import errors

    kinds = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.MediaError)]
    assert len(kinds) > 3
    for kind in kinds:
        error = pickle.loads(pickle.dumps(kind("clip.mp4", "detail")))
        assert type(error) is kind and str(error) == str(kind("clip.mp4", "detail"))
