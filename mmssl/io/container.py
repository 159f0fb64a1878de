"""Opening files with PyAV and indexing their video frames: the one place that maps FFmpeg's
failures to typed `MediaError`s and presentation order to frame numbers.

Frame i of a video is the i-th displayed frame in presentation order. The index comes from demuxing
(no decoding) and skips packets that FFmpeg marks `is_discard` (pre-roll before an mp4 edit list's
start): without that, clips cut with `-c copy` are off by the pre-roll (docs/decoding.md). Nor does
it number the frames that a decode from the start never shows, in a stream that starts inside a GOP
(found by decoding those few packets: `never_shown`). It keeps
each keyframe's decode timestamp too: the MPEG-PS, MPEG-TS and FLV demuxers seek by it, and a seek
to a keyframe's presentation time lands on a later keyframe there (video.SEEK_BY_PTS_FORMATS).
AVI stores no presentation times: FFmpeg stamps its H.264 packets in decode order, so with B-frames
the stamps number the frames in the wrong order (`FrameIndex.decode_order`; the reader then numbers
frames by their place in the decoder's output), and one frame late (frame n of an AVI is shown at
n / fps: `build_index` puts the clock's origin there).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from mmssl.io.errors import (
    CorruptMediaError,
    EmptyMediaError,
    MediaError,
    MissingMediaError,
    NoVideoStreamError,
    PermissionDeniedError,
    TooShortError,
    UnsupportedCodecError,
)

logging.getLogger("libav").setLevel(logging.ERROR)
# Containers that store no presentation times: FFmpeg makes them up, in decode order unless a parser
# can work them out (it can for MPEG-4 part 2 in AVI, unless DivX packed its B-frames; not for H.264).
NO_PTS_FORMATS = frozenset({"avi"})
H264_IDR = 5  # nal_unit_type of an IDR picture: no frame after it refers to one before it
REORDER_DEPTH = 16  # the most frames a decoder holds back to reorder them (H.264's DPB)


def open_container(path: str | Path, data: bytes | None = None) -> av.container.InputContainer:
    """Open `path` for reading, or raise the `MediaError` that says why not. `data`: the file's bytes
    (a shard's member), read from memory; `path` then only names it in errors."""
    path = str(path)
    if data is not None:
        if not data:
            raise EmptyMediaError(path, "file has 0 bytes")
        return _open(path, io.BytesIO(data))
    try:
        status = os.stat(path)
    except PermissionError as e:
        raise PermissionDeniedError(path, f"a folder on its path may not be searched ({e.strerror})") from e
    except OSError as e:  # FileNotFoundError, or a link to nothing
        raise MissingMediaError(path, "no such file") from e
    if stat.S_ISDIR(status.st_mode):
        raise MissingMediaError(path, "is a directory")
    if status.st_size == 0:
        raise EmptyMediaError(path, "file has 0 bytes")
    return _open(path, path)


def _open(path: str, source: str | io.BytesIO) -> av.container.InputContainer:
    """`av.open` of a file name or of bytes in memory, FFmpeg's errors as `MediaError`s naming `path`."""
    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except av.error.PermissionError as e:
        raise PermissionDeniedError(path, f"cannot open ({e.strerror})") from e
    except av.error.FFmpegError as e:
        raise CorruptMediaError(path, f"cannot open container ({e.strerror or e})") from e


@contextlib.contextmanager
def media_errors(path: str | Path) -> Iterator[None]:
    """Turn FFmpeg errors raised while demuxing/decoding into `CorruptMediaError`."""
    try:
        yield
    except MediaError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise CorruptMediaError(path, f"decoding failed ({e})") from e


def seek_back(container: av.container.InputContainer, stream: av.stream.Stream, pts: int) -> None:
    """Seek `stream` back to its keyframe at or before `pts` (in the stream's time base). FFmpeg's AVI
    demuxer refuses this for a stream whose index marks none of its chunks as keyframes (some cameras
    write such files): then rewind to the stream's first packet, from where decoding reaches the same
    frames and samples, only later."""
    try:
        container.seek(pts, stream=stream, backward=True)
    except av.error.FFmpegError:
        container.seek(stream.start_time or 0, stream=stream, backward=True, any_frame=True)


def packet_stamp(packet: av.Packet) -> int | None:
    """A packet's presentation timestamp, or its decode timestamp where it has none."""
    return packet.pts if packet.pts is not None else packet.dts


def quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns (0-3) that the frame's display matrix asks for to show it upright."""
    return round(frame.rotation / 90) % 4


def opens_closed_gop(packet: av.Packet, ctx: av.CodecContext) -> bool:
    """Whether a keyframe packet holds an H.264 IDR picture, after which the decoder shows no frame
    that comes before it: its first slice NAL unit is of the IDR type. False for any other codec and
    for an open GOP's I-frame (x264's open-gop), whose leading B-frames are shown before it but
    decoded after it (and dropped by the decoder after a seek)."""
    if ctx.name != "h264":
        return False
    for header in _nal_headers(bytes(packet), ctx.extradata or b""):
        if 1 <= header & 0x1F <= 5:  # the first slice of the picture
            return header & 0x1F == H264_IDR
    return False


def _nal_headers(data: bytes, extradata: bytes) -> Iterator[int]:
    """The header byte of each H.264 NAL unit in `data`: after a big-endian length of the size the
    avcC extradata gives (codec tag AVC1), else after a start code (Annex B, as AVI stores H.264)."""
    if extradata[:1] == b"\x01" and len(extradata) > 4:
        size, at = (extradata[4] & 3) + 1, 0
        while at + size < len(data):
            yield data[at + size]
            at += size + int.from_bytes(data[at:at + size], "big")
        return
    start = data.find(b"\x00\x00\x01")
    while 0 <= start < len(data) - 3:
        yield data[start + 3]
        start = data.find(b"\x00\x00\x01", start + 3)


def never_shown(stream: av.video.stream.VideoStream, head: list[av.Packet]) -> set[int]:
    """Stamps of the packets at the start of a stream that a decode from its start never shows, where
    the stream starts mid-GOP (a TS capture, a split VOB, a program stream cut at a pack): the packets
    before the first keyframe, and an open GOP's leading frames after it (shown before it, predicted
    from frames the file lacks). Decoders drop them (FFmpeg's MPEG-2 and H.264 do), or may show some
    (an MPEG-2 closed GOP's leading B-frames): `head` (the packets from the first to REORDER_DEPTH past
    the first keyframe, in decode order) is decoded to see, when it holds such packets at all."""
    first = next((i for i, p in enumerate(head) if p.is_keyframe), None)
    if first is None:
        return set()
    key = packet_stamp(head[first])
    suspects = {packet_stamp(p) for i, p in enumerate(head) if i < first or packet_stamp(p) < key}
    if not suspects:
        return set()
    last = max(suspects | {key})  # frames leave the decoder in presentation order: decode until past it
    shown: set[int] = set()
    ctx = stream.codec_context
    for packet in [*head, None]:
        shown.update(frame.pts for frame in ctx.decode(packet))
        if max(shown, default=last - 1) >= last:
            break
    ctx.flush_buffers()
    return suspects - shown


def check_decodable(path: str | Path, stream: av.stream.Stream) -> None:
    """Raise `UnsupportedCodecError` when FFmpeg has no decoder for `stream`."""
    ctx = stream.codec_context
    if ctx is None or ctx.codec is None or ctx.name in ("none", ""):
        raise UnsupportedCodecError(path, f"no decoder for {stream.type} stream {stream.index}")


def video_stream(path: str | Path, container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise NoVideoStreamError(path, "no video stream")
    stream = container.streams.video[0]
    check_decodable(path, stream)
    return stream


def clock_origin(container: av.container.InputContainer) -> float:
    """Time 0 of a file in seconds on FFmpeg's clock: the first video frame's presentation time
    (the first audio sample's when there is no video). Frames and audio share this clock."""
    streams = container.streams.video or container.streams.audio
    if streams and streams[0].start_time is not None and streams[0].time_base is not None:
        return float(streams[0].start_time * streams[0].time_base)
    return 0.0


@dataclass(frozen=True)
class FrameIndex:
    """Presentation timestamps of the displayed frames and of the keyframes of one video stream."""

    pts: np.ndarray  # int64, sorted: frame i has pts[i]
    keyframe_pts: np.ndarray  # int64, sorted, including pre-roll keyframes a seek may need
    keyframe_dts: np.ndarray  # int64, the decode timestamp to seek to for each of keyframe_pts
    time_base: Fraction
    origin: float  # seconds: clock_origin, plus in AVI the first frame's made-up delay (frame n at n / fps)
    frame_duration: int  # in time_base units: duration of the last frame
    # pts are the frames' decode order, not their presentation order: a container without presentation
    # times (NO_PTS_FORMATS) holding a codec that reorders frames. Frame i is then the decoder's i-th
    # output and pts[i] only its clock.
    decode_order: bool = False

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    def seconds(self, indices: np.ndarray) -> np.ndarray:
        return self.pts[indices].astype(np.float64) * float(self.time_base) - self.origin

    @property
    def duration(self) -> float:
        if self.num_frames == 0:
            return 0.0
        return float((self.pts[-1] - self.pts[0] + self.frame_duration) * self.time_base)


def _has_sample_table(container: av.container.InputContainer) -> bool:
    """mp4/mov list every sample in their header, so fewer packets on disk means truncation (AVI's
    header also counts dropped frames that its demuxer never returns, so it is not checked)."""
    return "mp4" in container.format.name.split(",")


def build_index(path: str | Path, container: av.container.InputContainer,
                stream: av.video.stream.VideoStream) -> FrameIndex:
    """Demux (without decoding) every packet of `stream` and index its displayed frames."""
    pts, keys, durations, closed = [], {}, [], set()
    demuxed, first_dts, lead = 0, None, None
    head: list[av.Packet] = []  # decode order, from the first packet to REORDER_DEPTH past the first keyframe
    head_key = 0  # where in head the first keyframe is
    no_pts = container.format.name.split(",")[0] in NO_PTS_FORMATS
    made_up = no_pts and bool(stream.codec_context.has_b_frames)
    with media_errors(path):
        for packet in container.demux(stream):
            if packet.dts is None and packet.size == 0:
                continue  # the flush packet PyAV yields at the end
            demuxed += 1
            if packet.size == 0:
                continue  # a dropped frame (AVI): nothing to display
            stamp = packet_stamp(packet)
            if stamp is None:
                raise UnsupportedCodecError(path, "video packets carry no timestamps")
            dts = stamp if packet.dts is None else packet.dts
            first_dts = dts if first_dts is None else min(first_dts, dts)
            lead = stamp - dts if lead is None else lead  # the first frame's made-up delay, where no_pts
            if not keys or len(head) - head_key <= REORDER_DEPTH:
                head_key = len(head) if not keys and packet.is_keyframe else head_key
                head.append(packet)
            if packet.is_keyframe:
                keys[stamp] = dts
                if made_up and opens_closed_gop(packet, stream.codec_context):
                    closed.add(stamp)
            if not packet.is_discard:
                pts.append(stamp)
                durations.append(packet.duration or 0)
        hidden = set() if made_up else never_shown(stream, head)
    if hidden:
        durations = [d for p, d in zip(pts, durations) if p not in hidden]
        pts = [p for p in pts if p not in hidden]
    if _has_sample_table(container) and demuxed < stream.frames:
        raise CorruptMediaError(path, f"truncated: {demuxed} of {stream.frames} video packets present")
    if not pts:
        raise TooShortError(path, "video stream has 0 frames")
    order = np.argsort(pts, kind="stable")
    sorted_pts = np.asarray(pts, dtype=np.int64)[order]
    if len(np.unique(sorted_pts)) != len(sorted_pts):
        raise UnsupportedCodecError(path, "duplicate frame timestamps: frames cannot be addressed")
    last = int(np.asarray(durations)[order][-1])
    if last <= 0:
        last = int(np.median(np.diff(sorted_pts))) if len(sorted_pts) > 1 else 1
    decode_order = made_up and bool(np.all(np.diff(pts) > 0))
    if decode_order:  # frames are counted from a keyframe only where it is shown first (closed GOPs), or
        keys = {stamp: dts for stamp, dts in keys.items() if stamp in closed}
        keys.setdefault(int(sorted_pts[0]), first_dts)  # from the first packet
    keys = keys or {int(sorted_pts[0]): first_dts}  # no keyframe flags: decode from the first packet
    keyframe_pts = np.asarray(sorted(keys), dtype=np.int64)
    return FrameIndex(
        pts=sorted_pts,
        keyframe_pts=keyframe_pts,
        keyframe_dts=np.asarray([keys[k] for k in keyframe_pts], dtype=np.int64),
        time_base=stream.time_base,
        origin=clock_origin(container) + (float(lead * stream.time_base) if no_pts else 0.0),
        frame_duration=last,
        decode_order=decode_order,
    )
