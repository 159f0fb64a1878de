"""`load_audio`: a window of a file's audio as float32 mono at a chosen rate, on the video clock."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import av
import numpy as np
import torch
from av.container import InputContainer

from mmssl.io.container import check_decodable, clock_origin, media_errors, open_container, seek_back
from mmssl.io.errors import NoAudioStreamError

SEEK_MARGIN_S = 0.5  # decode from this much earlier: the first frames after a seek are unreliable
# Timestamps that move by more than this against the samples decoded mean missing or overlapping
# audio; smaller moves are the rounding of coarse time bases (FLV's milliseconds: 1 ms).
JUMP_S = 0.01


def load_audio(path: str | Path, start_s: float, duration_s: float, sample_rate: int = 16000,
               container: InputContainer | None = None) -> torch.Tensor:
    """Exactly `round(duration_s * sample_rate)` float32 mono samples starting at `start_s` seconds
    of the video clock (time 0 = the first video frame, as `VideoReader.timestamps`), resampled by
    FFmpeg and averaged over channels; zero where the window lies before or past the audio.
    `container`: `path` already open (`open_container`; as a `VideoReader` of the same sample
    shares it), read from wherever it stands and left open.
    Raises `NoAudioStreamError` for a file without audio and other `MediaError`s for bad files."""
    if container is None:
        with open_container(path) as opened:
            return _read_window(opened, path, start_s, duration_s, sample_rate, rewind=False)
    return _read_window(container, path, start_s, duration_s, sample_rate, rewind=True)


def _read_window(container: InputContainer, path: str | Path, start_s: float, duration_s: float,
                 sample_rate: int, rewind: bool) -> torch.Tensor:
    """`load_audio` from an open container; `rewind`: go back to the first packet for a window at
    the start of the track (a freshly opened container is there already). Samples follow one another
    from the first decoded frame's time on. In a file with video they keep to the video's clock
    across a jump of the timestamps by more than JUMP_S (packets missing, a paused recording): a gap
    stays silent, an overlap is written over. An audio-only file plays on as one signal (the raw
    streams' demuxers make timestamps up from the first frame's header)."""
    out = np.zeros(round(duration_s * sample_rate), dtype=np.float32)
    if not container.streams.audio:
        raise NoAudioStreamError(path, "no audio stream")
    stream = container.streams.audio[0]
    check_decodable(path, stream)
    window_start = clock_origin(container) + start_s  # absolute seconds on FFmpeg's clock
    seek_to = window_start - SEEK_MARGIN_S
    with media_errors(path):
        if stream.start_time is not None and seek_to > stream.start_time * stream.time_base:
            seek_back(container, stream, int(seek_to / stream.time_base))
        elif rewind:
            seek_back(container, stream, stream.start_time or 0)
        frames = (frame for frame in _decoded(container, stream, window_start) if frame.pts is not None)
        first = next(frames, None)
        if first is None:
            return torch.from_numpy(out)
        start = round((float(first.pts * first.time_base) - window_start) * sample_rate)  # window position
        written, origin = 0, None  # samples so far; the first chunk's time (s)
        on_video_clock = bool(container.streams.video)
        for chunk in _resampled(chain([first], frames), sample_rate):
            if chunk.pts is not None and on_video_clock:
                origin = float(chunk.pts * chunk.time_base) if origin is None else origin
                jump = round((float(chunk.pts * chunk.time_base) - origin) * sample_rate) - written
                written += jump if abs(jump) > JUMP_S * sample_rate else 0
            planes = chunk.to_ndarray()  # float32 [channels, samples]
            _paste(out, start + written, planes[0] if len(planes) == 1 else planes.mean(axis=0))
            written += planes.shape[1]
            if start + written >= len(out):
                break
    return torch.from_numpy(out)


def _decoded(container: InputContainer, stream: av.audio.stream.AudioStream,
             window_start: float) -> Iterator[av.AudioFrame]:
    """The frames of `stream` from the demuxer's position on. After a seek a demuxer may start inside
    a packet (MPEG-PS): a packet that fails to decode and ends before the window is passed over."""
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            if packet.pts is None or float((packet.pts + packet.duration) * stream.time_base) > window_start:
                raise
            continue
        yield from frames


def _paste(out: np.ndarray, at: int, samples: np.ndarray) -> None:
    """Write `samples` into `out` from position `at` on, the part inside `out` only."""
    lo, hi = max(at, 0), min(at + len(samples), len(out))
    if lo < hi:
        out[lo:hi] = samples[lo - at:hi - at]


def _resampled(frames: Iterable[av.AudioFrame], sample_rate: int) -> Iterator[av.AudioFrame]:
    """`frames` as float planar at `sample_rate`. A stream may change its sample rate, layout or
    format midway (joined recordings, broadcast captures): each run of one input format gets its own
    resampler, flushed before the next one starts and at the end."""
    resampler, source = None, None
    for frame in frames:
        if (frame.format.name, frame.layout.name, frame.sample_rate) != source:
            if resampler is not None:
                yield from resampler.resample(None)
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)
            source = (frame.format.name, frame.layout.name, frame.sample_rate)
        yield from resampler.resample(frame)
    if resampler is not None:
        yield from resampler.resample(None)
