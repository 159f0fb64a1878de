"""`load_audio`: a window of a file's audio as float32 mono at a chosen rate, on the video clock."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import av
import numpy as np
import torch

from mmssl.io.container import check_decodable, clock_origin, media_errors, open_container, seek_back
from mmssl.io.errors import NoAudioStreamError

SEEK_MARGIN_S = 0.5  # decode from this much earlier: the first frames after a seek are unreliable


def load_audio(path: str | Path, start_s: float, duration_s: float, sample_rate: int = 16000) -> torch.Tensor:
    """Exactly `round(duration_s * sample_rate)` float32 mono samples starting at `start_s` seconds
    of the video clock (time 0 = the first video frame, as `VideoReader.timestamps`), resampled by
    FFmpeg and averaged over channels; zero where the window lies before or past the audio.
    Raises `NoAudioStreamError` for a file without audio and other `MediaError`s for bad files."""
    num_samples = round(duration_s * sample_rate)
    out = np.zeros(num_samples, dtype=np.float32)
    with open_container(path) as container:
        if not container.streams.audio:
            raise NoAudioStreamError(path, "no audio stream")
        stream = container.streams.audio[0]
        check_decodable(path, stream)
        window_start = clock_origin(container) + start_s  # absolute seconds on FFmpeg's clock
        window_end = window_start + num_samples / sample_rate
        seek_to = window_start - SEEK_MARGIN_S
        with media_errors(path):
            if stream.start_time is not None and seek_to > stream.start_time * stream.time_base:
                seek_back(container, stream, int(seek_to / stream.time_base))
            frames = (frame for frame in container.decode(stream) if frame.pts is not None)
            first = next(frames, None)
            if first is None:
                return torch.from_numpy(out)
            position = float(first.pts * first.time_base)  # absolute time of the next resampled sample
            for chunk in _resampled(chain([first], frames), sample_rate):
                position = _place(chunk, position, window_start, sample_rate, out)
                if position >= window_end:
                    break
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


def _place(chunk: av.AudioFrame, position: float, window_start: float, sample_rate: int,
           out: np.ndarray) -> float:
    """Copy the part of `chunk` (starting at `position` s) that falls in the window; return the
    time after it."""
    mono = chunk.to_ndarray().astype(np.float32).mean(axis=0)
    first = round((position - window_start) * sample_rate)  # window offset of mono[0]
    lo, hi = max(first, 0), min(first + len(mono), len(out))
    if lo < hi:
        out[lo:hi] = mono[lo - first:hi - first]
    return position + len(mono) / sample_rate
