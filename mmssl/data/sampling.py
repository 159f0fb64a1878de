"""Clip samplers: which frame numbers of a video a clip takes."""
from __future__ import annotations

import numpy as np

from mmssl.data.manifest import ManifestRow
from mmssl.io import TooShortError


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


def clip_with_audio(row: ManifestRow, clip_len: int, stride: int, audio_s: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A random clip and the start (s) of `audio_s` seconds of audio centred on it, kept inside
    the video. Raises TooShortError when the video is shorter than the audio window."""
    duration = row.num_frames / row.fps
    if duration < audio_s:
        raise TooShortError(row.path, f"{duration:.2f} s is shorter than the {audio_s} s audio window")
    frames = random_clip(row.num_frames, clip_len, stride, rng)
    centre = (frames[0] + frames[-1] + 1) / 2 / row.fps
    return frames, float(np.clip(centre - audio_s / 2, 0.0, duration - audio_s))


# ----------------------------------------------------------------------------- motion weighting
# Shuffle and Learn samples its tuples from high-motion windows, with coarse optical-flow magnitude
# as the per-frame weight. Our documented proxy (SPEC.md) is the mean absolute difference between
# consecutive frames, computed once per video on a low-resolution decode.

def frame_motion(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference between consecutive frames, in [0, 1] colour units: uint8 or
    float frames [T, H, W, C] (uint8 read as /255) -> float64 [T - 1]; entry t is the motion
    between frames t and t + 1."""
    x = np.asarray(frames, dtype=np.float32)
    if np.asarray(frames).dtype == np.uint8:
        x /= 255
    if len(x) < 2:
        return np.zeros(0)
    return np.abs(np.diff(x, axis=0)).reshape(len(x) - 1, -1).mean(1).astype(np.float64)


def cumulative_motion(motion: np.ndarray) -> np.ndarray:
    """Motion accumulated from frame 0 to every frame: [T - 1] per-step motion -> [T], starting
    at 0. The motion between frames p < q is `cum[q] - cum[p]`."""
    return np.concatenate([[0.0], np.cumsum(np.asarray(motion, dtype=np.float64))])


def tuple_motion(cum: np.ndarray, frames: np.ndarray) -> float:
    """How much a frame tuple moves: the motion across the smaller of the gaps between its frames
    in time order. A tuple whose frames lie in a static stretch scores ~0: its order is invisible."""
    ordered = np.sort(np.asarray(frames))
    return float(np.diff(cum[ordered]).min())


def pick_by_motion(candidates: list[np.ndarray], cum: np.ndarray, rng: np.random.Generator,
                   power: float = 1.0) -> int:
    """Index of one candidate tuple, drawn with probability proportional to tuple_motion ** power
    (uniform when every candidate is static)."""
    scores = np.array([tuple_motion(cum, c) for c in candidates]) ** power
    total = scores.sum()
    if not np.isfinite(total) or total <= 0:
        return int(rng.integers(len(candidates)))
    return int(rng.choice(len(candidates), p=scores / total))
