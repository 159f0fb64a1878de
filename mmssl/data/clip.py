"""What flows from sampling to decoding to a task: a Window (what to decode), then a DecodedClip, or a
Skipped marker for a file that does not decode."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mmssl.data.manifest import ManifestRow


@dataclass
class Window:
    """What to decode for one sample, and what the task decided when choosing it."""

    frames: np.ndarray  # frame numbers, in the order the sample uses them (repeats allowed; none: audio only)
    audio_start_s: float | None = None  # None: no audio needed
    audio_duration_s: float = 0.0
    targets: dict[str, int] = field(default_factory=dict)
    parts: dict[str, Window] = field(default_factory=dict)  # a multi-task window's per-task windows


@dataclass
class DecodedClip:
    video: torch.Tensor  # uint8 [T, H, W, 3], frame i = window.frames[i]
    audio: torch.Tensor | None  # float32 [samples] at the loader's sample rate
    window: Window
    row: ManifestRow


@dataclass(frozen=True)
class Skipped:
    """A file left out (of a manifest, or of a batch when it fails to decode): `kind` is a
    MediaError kind ("crashed": its probe or decode killed a process), "timeout" for a probe
    stopped, "missing" for a listed file not on disk, "duplicate" for a file or folder listed
    already, "error" for anything else."""

    path: str
    kind: str
    detail: str
