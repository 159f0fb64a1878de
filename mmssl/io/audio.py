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
    the start of the track (a freshly opened container is there already)."""
    out = np.zeros(round(duration_s * sample_rate), dtype=np.float32)
    if not container.streams.audio:
        raise NoAudioStreamError(path, "no audio stream")
    stream = container.streams.audio[0]
    check_decodable(path, stream)
    window_start = clock_origin(container) + start_s  # absolute seconds on FFmpeg's clock
    window_end = window_start + len(out) / sample_rate
    seek_to = window_start - SEEK_MARGIN_S
    chunks: list[np.ndarray] = []
    with media_errors(path):
        if stream.start_time is not None and seek_to > stream.start_time * stream.time_base:
            seek_back(container, stream, int(seek_to / stream.time_base))
        elif rewind:
            seek_back(container, stream, stream.start_time or 0)
        frames = (frame for frame in container.decode(stream) if frame.pts is not None)
        first = next(frames, None)
        if first is None:
            return torch.from_numpy(out)
        begin = float(first.pts * first.time_base)  # absolute time of the first resampled sample
        decoded = 0
        for chunk in _resampled(chain([first], frames), sample_rate):
            planes = chunk.to_ndarray()  # float32 [channels, samples]
            chunks.append(planes[0] if len(planes) == 1 else planes.mean(axis=0))
            decoded += planes.shape[1]
            if begin + decoded / sample_rate >= window_end:
                break
    mono = np.concatenate(chunks) if chunks else out[:0]
    offset = round((begin - window_start) * sample_rate)  # window position of mono[0]
    lo, hi = max(offset, 0), min(offset + len(mono), len(out))
    if lo < hi:
        out[lo:hi] = mono[lo - offset:hi - offset]
    return torch.from_numpy(out)


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
