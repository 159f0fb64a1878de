"""Clip samplers: which frame numbers of a video a clip takes."""
from __future__ import annotations

import math

import numpy as np

from mmssl.data.clip import Window
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


def centre_clip(num_frames: int, clip_len: int, stride: int) -> np.ndarray:
    """The clip in the middle of the video (a short video repeats its last frame)."""
    start = max(num_frames - clip_span(clip_len, stride), 0) // 2
    return np.minimum(start + stride * np.arange(clip_len), num_frames - 1)


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
    return frames, audio_around(row, frames, audio_s)


def clip_and_audio(row: ManifestRow, clip_len: int, stride: int, audio_s: float, rng: np.random.Generator) -> Window:
    """The window of `clip_with_audio`: a random clip and `audio_s` seconds of audio centred on it."""
    frames, start = clip_with_audio(row, clip_len, stride, audio_s, rng)
    return Window(frames=frames, audio_start_s=start, audio_duration_s=audio_s)


def audio_around(row: ManifestRow, frames: np.ndarray, audio_s: float) -> float:
    """The start (s) of `audio_s` seconds of audio centred on the clip `frames`, kept inside the video."""
    centre = (frames[0] + frames[-1] + 1) / 2 / row.fps
    return float(np.clip(centre - audio_s / 2, 0.0, row.num_frames / row.fps - audio_s))
