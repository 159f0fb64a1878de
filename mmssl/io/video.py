"""`VideoReader`: exactly the frames asked for, as uint8 [T, H, W, 3], upright (turned as the file's
display matrix says: phones store portrait video as rotated landscape frames), resized in the decoder
(stretched to a size, or scaled with the aspect ratio kept and centre-cropped to it).

Backends: "pyav" (default) addresses frames through our own demuxed index (`FrameIndex`), seeks only
when a wanted frame's keyframe lies ahead, and leaves unwanted H.264 non-reference frames undecoded;
"decord" (decord 0.6.0) is selectable but not exact on every file. How the frames are exact, and what
was measured: docs/decoding.md.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Container, Iterator, Sequence
from pathlib import Path
from typing import Self

import av
import numpy as np
import torch
from av.container import InputContainer
from av.video.reformatter import VideoReformatter

from mmssl.io.container import (
    build_index,
    media_errors,
    open_container,
    packet_stamp,
    quarter_turns,
    seek_back,
    video_stream,
)
from mmssl.io.errors import CorruptMediaError, TooShortError

Size = tuple[int, int]  # (height, width)
# Codecs whose non-reference frames no other frame is predicted from (H.264: nal_ref_idc 0), so a frame
# that is not asked for may be left undecoded when it is one of them: x264's default B-frames are ~45%
# of a file. Not MPEG-4 part 2, whose AVI files may pack two frames into one packet (DivX's packed
# B-frames), nor HEVC, whose sub-layer non-reference pictures may be references for higher sub-layers.
SKIP_NONREF_CODECS = frozenset({"h264"})
# Demuxers whose seek index holds presentation times (mp4/mov; Matroska/WebM's cues): a keyframe is
# sought there by its presentation time; by its decode time they land a keyframe early (B-frames).
# Every other demuxer is sought by decode time: MPEG-PS, MPEG-TS and FLV land on a later keyframe
# when given a presentation time, and AVI's packed B-frames carry none.
SEEK_BY_PTS_FORMATS = frozenset({"mov", "matroska"})
# MPEG-PS: a seek to a keyframe's decode time lands on the PES packet that carries that time, whose
# payload may open with the tail of the frame before; FFmpeg's parser then cuts that tail off as a
# frame of its own with the keyframe's stamps, and the keyframe gets the next packet's (a wrong frame,
# or none). Sought one tick earlier, the demuxer starts on the PES before and the keyframe keeps its own.
SEEK_BEFORE_FORMATS = frozenset({"mpeg"})


def cover_size(native: Size, size: Size) -> Size:
    """The smallest (height, width) with `native`'s aspect ratio that covers `size`: the scale at
    which a centre crop of `size` keeps the frame's proportions (short side to a square's side)."""
    scale = max(size[0] / native[0], size[1] / native[1])
    return max(size[0], round(native[0] * scale)), max(size[1], round(native[1] * scale))


class _PyAVBackend:
    """Seek-and-decode through PyAV with a frame index from demuxing."""

    def __init__(self, path: str, size: Size | None, threads: int, keep_aspect: bool = False,
                 container: InputContainer | None = None) -> None:
        self.path = path
        self.owns_container = container is None
        self.container = open_container(path) if container is None else container
        try:
            self.stream = video_stream(path, self.container)
            ctx = self.stream.codec_context
            ctx.thread_count = threads  # before build_index, which may decode the first frames
            ctx.thread_type = "AUTO" if threads != 1 else "SLICE"
            self.index = build_index(path, self.container, self.stream)
        except BaseException:
            self.close()
            raise
        # frames numbered by their place in the decoder's output must all come out of it
        self.skip_nonref = ctx.name in SKIP_NONREF_CODECS and not self.index.decode_order
        self.size, self.keep_aspect = size, keep_aspect
        self.height, self.width = size or (ctx.height, ctx.width)  # as stored, when no size is asked for
        self.reformatter = VideoReformatter()
        demuxer = self.container.format.name.split(",")[0]
        self.seek_points = self.index.keyframe_pts if demuxer in SEEK_BY_PTS_FORMATS else self.index.keyframe_dts
        if demuxer in SEEK_BEFORE_FORMATS:
            self.seek_points = self.seek_points - 1
        self.landed_past = False  # set by _decode: the last seek came out past its keyframe

    def read(self, frames: np.ndarray) -> list[np.ndarray]:
        """Decode the frames with the given (sorted, unique) numbers."""
        wanted = {int(p): i for i, p in enumerate(self.index.pts[frames])}
        out: list[np.ndarray | None] = [None] * len(frames)
        decoded = None
        position = None  # pts of the last decoded frame
        keys = self.index.keyframe_pts
        with media_errors(self.path):
            for target in self.index.pts[frames]:
                if out[wanted[int(target)]] is not None:
                    continue
                key = max(bisect.bisect_right(keys, target) - 1, 0)
                if decoded is not None and position is not None and keys[key] <= position <= target:
                    position = self._take(decoded, int(target), wanted, out)
                # where the demuxer lands past the keyframe, from the one before it, then from the first
                for start in dict.fromkeys((key, max(key - 1, 0), 0)):
                    if out[wanted[int(target)]] is not None or (start != key and not self.landed_past):
                        break
                    seek_back(self.container, self.stream, int(self.seek_points[start]))
                    decoded = self._decode(wanted, int(keys[start]))
                    if self.index.decode_order:
                        decoded = self._restamp(decoded, int(keys[start]))
                    position = self._take(decoded, int(target), wanted, out)
                if out[wanted[int(target)]] is None:
                    raise CorruptMediaError(self.path, f"frame at pts {target} could not be decoded")
        return out  # type: ignore[return-value]

    def _take(self, decoded: Iterator[av.VideoFrame], target: int, wanted: dict[int, int],
              out: list[np.ndarray | None]) -> int | None:
        """Decode on to the frame at pts `target`, putting each wanted frame on the way into `out`;
        the pts of the last frame decoded (None if none was)."""
        position = None
        for frame in decoded:
            if frame.pts is None:
                continue
            position = frame.pts
            slot = wanted.get(frame.pts)
            if slot is not None and out[slot] is None:
                out[slot] = frame_to_array(frame, self.size, self.reformatter, self.keep_aspect)
            if frame.pts >= target:
                break
        return position

    def _decode(self, wanted: Container[int], key: int) -> Iterator[av.VideoFrame]:
        """Frames decoded from the demuxer's position on, once the keyframe at pts `key` has gone into
        the decoder (frames before it may lack their references); none when the demuxer landed past
        it (a later keyframe comes first). A packet whose pts is not `wanted` is decoded only when it
        holds a reference frame (SKIP_NONREF_CODECS), which the frames after it may need."""
        ctx = self.stream.codec_context
        reached = self.landed_past = False
        for packet in self.container.demux(self.stream):
            stamp = packet_stamp(packet)
            if not reached:
                if packet.is_keyframe and stamp is not None and stamp > key:
                    self.landed_past = True
                    return
                reached = stamp == key
            if self.skip_nonref:
                ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted else "NONREF"
            frames = packet.decode()
            if reached:
                yield from frames

    def _restamp(self, decoded: Iterator[av.VideoFrame], key: int) -> Iterator[av.VideoFrame]:
        """Frames from the keyframe stamped `key` on, each given the pts of its frame number, for
        stamps in decode order (`FrameIndex.decode_order`): frames leave the decoder in presentation
        order, and in a closed GOP the keyframe is shown first, after every frame decoded before it,
        so the n-th frame from it is frame (its place in decode order) + n. Frames the decoder still
        held from before the keyframe (stamped lower) are passed over. A frame stamped past the
        keyframe that comes out before it is shown before it (an open GOP): the keyframe's number is
        then unknown, and `landed_past` has the read start from further back."""
        number = int(np.searchsorted(self.index.pts, key))
        first = number
        for frame in decoded:
            if number == first and frame.pts != key:
                if frame.pts is not None and frame.pts < key:
                    continue
                self.landed_past = True
                return
            if number == self.index.num_frames:
                return
            frame.pts = int(self.index.pts[number])
            number += 1
            yield frame

    def close(self) -> None:
        if self.owns_container:
            self.container.close()


class _DecordBackend:
    """decord 0.6.0 (frames as decord numbers them: not exact on mp4 edit lists)."""

    def __init__(self, path: str, size: Size | None, threads: int, keep_aspect: bool = False,
                 container: InputContainer | None = None) -> None:
        import decord

        self.path = path
        pyav_side = _PyAVBackend(path, None, 1, container=container)  # the pyav backend's typed errors and clock
        self.index = pyav_side.index
        pyav_side.close()
        self.height, self.width = size or (pyav_side.height, pyav_side.width)
        if size and keep_aspect:
            size = cover_size((pyav_side.height, pyav_side.width), size)  # decord scales to exactly this
        kwargs = {"width": size[1], "height": size[0]} if size else {}
        self.decord_errors = (RuntimeError, decord.DECORDError)
        try:
            self.reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads, **kwargs)
        except self.decord_errors as e:
            raise CorruptMediaError(path, f"decord cannot open ({_first_line(e)})") from e

    def read(self, frames: np.ndarray) -> list[np.ndarray]:
        """Decode the frames with the given (sorted, unique) numbers. decord's own failures (a
        packet it cannot decode; its decoder thread may report one on any later call) and frames
        past the count decord makes of the file (one fewer on some, docs/decoding.md) raise
        `CorruptMediaError` rather than an untyped error or a repeated frame."""
        try:
            counted = len(self.reader)
            if frames[-1] >= counted:
                raise CorruptMediaError(self.path, f"decord counts {counted} frames where the demuxed index "
                                                   f"has {self.index.num_frames}; frame {frames[-1]} asked for")
            batch = self.reader.get_batch(frames.tolist()).asnumpy()
            self.reader.seek(0)  # without this decord's memory grows by GBs after a batch
        except self.decord_errors as e:
            raise CorruptMediaError(self.path, f"decord cannot decode ({_first_line(e)})") from e
        return list(batch)

    def close(self) -> None:
        del self.reader


def _first_line(error: Exception) -> str:
    """decord's messages carry a C++ trace after the first line."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


BACKENDS: dict[str, Callable[..., _PyAVBackend | _DecordBackend]] = {
    "pyav": _PyAVBackend,
    "decord": _DecordBackend,
}


class VideoReader:
    """Random access to the frames of one video file.

    Frame i is the i-th displayed frame in presentation order (what a sequential decode yields).
    `size=(h, w)` resizes in the decoder: stretched to it, or with `keep_aspect` scaled to cover it
    (`cover_size`) and centre-cropped to it. `threads` are the decoder's threads (keep 1 inside
    DataLoader workers). `container`: `path` already open (`open_container`), for the reader to use
    and leave open, so that a sample's frames and audio cost one open. Bad files raise a
    `mmssl.io.MediaError` subclass.
    """

    def __init__(self, path: str | Path, size: Size | None = None, backend: str = "pyav",
                 threads: int = 1, keep_aspect: bool = False, container: InputContainer | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from {sorted(BACKENDS)}")
        self.path = str(path)
        self.backend_name = backend
        self._backend = BACKENDS[backend](self.path, size, threads, keep_aspect, container)
        self.index = self._backend.index
        self._crop = tuple(size) if size and keep_aspect else None  # the centre of a keep_aspect decode

    @property
    def num_frames(self) -> int:
        return self.index.num_frames

    @property
    def duration(self) -> float:
        return self.index.duration

    @property
    def fps(self) -> float:
        return self.num_frames / self.duration

    @property
    def size(self) -> Size:
        """(height, width) asked for; without a size, the size the file stores frames at (before a turn)."""
        return self._backend.height, self._backend.width

    def get_frames(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """The frames with these numbers, in the order given (repeats allowed): uint8 [T, H, W, 3]."""
        wanted = self._check(indices)
        unique, inverse = np.unique(wanted, return_inverse=True)
        arrays = self._backend.read(unique)
        if self._crop:
            arrays = [centre_crop(a, self._crop) for a in arrays]
        return torch.from_numpy(np.stack([arrays[i] for i in inverse]))

    def timestamps(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Presentation times in seconds of these frames, on the clock `load_audio` uses."""
        return torch.from_numpy(self.index.seconds(self._check(indices)))

    def _check(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        wanted = np.asarray(indices.tolist() if isinstance(indices, torch.Tensor) else indices,
                            dtype=np.int64).reshape(-1)
        if len(wanted) == 0:
            raise ValueError("no frame indices given")
        if wanted.min() < 0 or wanted.max() >= self.num_frames:
            raise TooShortError(self.path, f"asked for frames {wanted.min()}..{wanted.max()}, "
                                           f"the video has {self.num_frames}")
        return wanted

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_frames


def frame_to_array(frame: av.VideoFrame, size: Size | None, reformatter: VideoReformatter,
                   keep_aspect: bool = False) -> np.ndarray:
    """RGB uint8 [H, W, 3], turned upright by the quarter turns of the frame's display matrix, and
    scaled by FFmpeg's swscale when `size=(h, w)` (of the upright frame) is given: to it, or with
    `keep_aspect` to `cover_size` of it. Reusing one reformatter per reader keeps swscale's context
    (8-17x faster than `frame.to_ndarray`, which builds a new one per call, as measured by
    tools/bench_loader.py's profile); one thread, since readers run inside DataLoader workers."""
    turns = quarter_turns(frame)
    stored = (frame.height, frame.width)
    if size is not None and keep_aspect:
        size = cover_size(stored[::-1] if turns % 2 else stored, size)
    height, width = (size[::-1] if turns % 2 else size) if size is not None else (None, None)
    array = reformatter.reformat(frame, format="rgb24", width=width, height=height,
                                 interpolation="BILINEAR", threads=1).to_ndarray()
    return np.ascontiguousarray(np.rot90(array, turns)) if turns else array


def centre_crop(array: np.ndarray, size: Size) -> np.ndarray:
    """The centre `size=(h, w)` window of an [H, W, ...] array at least that large."""
    top, left = ((d - s) // 2 for d, s in zip(array.shape[:2], size))
    return array[top:top + size[0], left:left + size[1]]


def read_all_frames(path: str | Path, size: Size | None = None) -> torch.Tensor:
    """Sequential decode of every displayed frame: the reference random access must agree with."""
    with open_container(path) as container:
        stream = video_stream(path, container)
        with media_errors(path):
            reformatter = VideoReformatter()
            frames = [frame_to_array(frame, size, reformatter) for frame in container.decode(stream)]
    return torch.from_numpy(np.stack(frames))
