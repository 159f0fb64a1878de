"""Clip samplers: which frame numbers of a video a clip takes."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mmssl.config import AT_LEAST_1, NON_NEGATIVE, Bound
from mmssl.data.manifest import ManifestRow
from mmssl.io import TooShortError, VideoReader


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


def cvrl_gap(num_starts: int, rng: np.random.Generator) -> int:
    """CVRL's interval between two clips' starts, in frames: d = floor(M * X) with X of density
    2 (1 - x) on [0, 1], i.e. P(X <= x) = 1 - (1 - x)^2, a density decreasing linearly to 0 at the
    largest gap M = `num_starts` (the code's `sample_ssl_sequence` inverts the same CDF by bisection;
    here in closed form, X = 1 - sqrt(1 - U)). d lies in [0, M - 1]."""
    return int(num_starts * (1 - np.sqrt(1 - rng.random())))


def cvrl_clips(num_frames: int, clip_len: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """Two clips as CVRL samples them (Qian et al., "Spatiotemporally Contrastive Video Representation
    Learning", CVPR 2021, Sec. 3.2; code: tensorflow/models `video_ssl_preprocess_ops.sample_ssl_sequence`):
    a gap d from `cvrl_gap` over the M possible starts, the first start uniform in [0, M - d), the
    second d frames later, then the two shuffled. [2, clip_len] frame numbers; a video shorter than
    one clip gives the same clip twice, its last frame repeated (as `random_clip`)."""
    num_starts = max(num_frames - clip_span(clip_len, stride), 0) + 1
    gap = cvrl_gap(num_starts, rng)
    first = int(rng.integers(0, num_starts - gap))
    starts = rng.permutation([first, first + gap])
    return np.minimum(starts[:, None] + stride * np.arange(clip_len), num_frames - 1)


def independent_clips(num_frames: int, clip_len: int, stride: int, num_clips: int,
                      rng: np.random.Generator) -> np.ndarray:
    """`num_clips` clips at independent uniformly random starts (rhoBYOL and the other rho-clip
    methods of Feichtenhofer et al., "A Large-Scale Study on Unsupervised Spatiotemporal Representation
    Learning", CVPR 2021): [num_clips, clip_len] frame numbers, each clip as `random_clip`.

    The gap between two independent uniform starts on [0, M] has density 2 (M - d) / M^2: CVRL's
    linear decrease. The two samplers differ only by discretisation (P(d = 0) is 1/M here, about 2/M
    in `cvrl_clips`), and this one extends to any number of clips with every pairwise gap so shaped."""
    return np.stack([random_clip(num_frames, clip_len, stride, rng) for _ in range(num_clips)])


def frames_for(seconds: float, fps: float) -> int:
    """Frames a video at `fps` needs to last `seconds`."""
    return math.ceil(seconds * fps - 1e-6)


def clip_with_audio(row: ManifestRow, clip_len: int, stride: int, audio_s: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A random clip and the start (s) of `audio_s` seconds of audio centred on it, kept inside
    the video. Raises TooShortError when the video is shorter than the audio window."""
    duration = row.num_frames / row.fps
    if row.num_frames < frames_for(audio_s, row.fps):
        raise TooShortError(row.path, f"{duration:.2f} s is shorter than the {audio_s} s audio window")
    frames = random_clip(row.num_frames, clip_len, stride, rng)
    centre = (frames[0] + frames[-1] + 1) / 2 / row.fps
    return frames, float(np.clip(centre - audio_s / 2, 0.0, duration - audio_s))


# ----------------------------------------------------------------------------- motion weighting
# Shuffle and Learn samples its tuples from high-motion windows, with coarse optical-flow magnitude
# as the per-frame weight. Our proxy (docs/methods.md#order) is the mean absolute difference between
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


@dataclass
class MotionConfig:
    """High-motion tuple choice (S&L, OPN): keep one of `candidates` uniformly drawn tuples with
    probability proportional to its motion ** `power` (mean absolute frame difference, per video
    from one decode at `size` px). candidates 1: uniform sampling, no motion decode."""

    candidates: int = 16
    power: float = 2.0
    size: int = 32

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "candidates": AT_LEAST_1, "power": NON_NEGATIVE, "size": AT_LEAST_1}


class MotionWeighting:
    """High-motion tuple choice (Shuffle and Learn's and OPN's flow-weighted sampling, with
    `frame_motion` as the proxy): draw `candidates` tuples with `draw()` and keep one with
    probability proportional to its `tuple_motion` ** `power`. The video's motion profile comes
    from one decode of all its frames at `size` px, cached per path (per DataLoader worker).
    `candidates` 1: uniform sampling, no motion decode."""

    def __init__(self, candidates: int = 16, power: float = 2.0, size: int = 32) -> None:
        self.candidates = max(1, candidates)
        self.power = power
        self.size = size
        self._profiles: dict[str, np.ndarray] = {}

    def choose(self, row: ManifestRow, draw: Callable[[], np.ndarray], rng: np.random.Generator) -> np.ndarray:
        candidates = [draw() for _ in range(self.candidates)]
        if len(candidates) == 1:
            return candidates[0]
        return candidates[pick_by_motion(candidates, self.profile(row), rng, self.power)]

    def profile(self, row: ManifestRow) -> np.ndarray:
        """Cumulative motion [num_frames] of the video (`cumulative_motion` of `frame_motion`)."""
        cum = self._profiles.get(row.path)
        if cum is None:
            size = (self.size, self.size) if self.size else None
            with VideoReader(row.path, size=size, keep_aspect=True) as reader:
                frames = reader.get_frames(np.arange(reader.num_frames)).numpy()
            cum = self._profiles[row.path] = cumulative_motion(frame_motion(frames))
        if len(cum) < row.num_frames:  # the manifest counts more frames than decode: pad static
            cum = np.concatenate([cum, np.full(row.num_frames - len(cum), cum[-1] if len(cum) else 0.0)])
        return cum
