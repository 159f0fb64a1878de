"""`load_audio`: a window of a file's audio as float32 mono at a chosen rate, on the video clock."""
from __future__ import annotations

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
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        position: float | None = None  # absolute time of the next resampled sample
        with media_errors(path):
            if stream.start_time is not None and seek_to > stream.start_time * stream.time_base:
                seek_back(container, stream, int(seek_to / stream.time_base))
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                if position is None:
                    position = float(frame.pts * frame.time_base)
                for chunk in resampler.resample(frame):
                    position = _place(chunk, position, window_start, sample_rate, out)
                if position >= window_end:
                    break
            else:
                for chunk in resampler.resample(None):
                    position = _place(chunk, position, window_start, sample_rate, out)
    return torch.from_numpy(out)


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
