"""Clip samplers: which frame numbers of a video a clip takes."""
from __future__ import annotations

import numpy as np


def clip_span(clip_len: int, stride: int) -> int:
    """Frames covered by a clip of `clip_len` frames taken every `stride` frames."""
    return (clip_len - 1) * stride + 1


def random_clip(num_frames: int, clip_len: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """One clip at a uniformly random start; a video shorter than the span repeats its last frame."""
    start = int(rng.integers(0, max(num_frames - clip_span(clip_len, stride), 0) + 1))
    return np.minimum(start + stride * np.arange(clip_len), num_frames - 1)


def uniform_clips(num_frames: int, clip_len: int, stride: int, num_clips: int) -> np.ndarray:
    """`num_clips` clips with starts spread evenly over the video (multi-clip evaluation):
    [num_clips, clip_len] frame numbers; a short video repeats its last frame."""
    last_start = max(num_frames - clip_span(clip_len, stride), 0)
    starts = np.linspace(0, last_start, num_clips).round().astype(np.int64)
    return np.minimum(starts[:, None] + stride * np.arange(clip_len)[None], num_frames - 1)
