"""Typed errors for unusable media: each names the file and the reason."""
from __future__ import annotations

from pathlib import Path

from mmssl.errors import MmsslError


class MediaError(MmsslError):
    """Base class: a media file could not be used. `kind` is a short machine-readable reason."""

    kind = "unreadable"

    def __init__(self, path: str | Path, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {self.kind}: {detail}")

    def __reduce__(self) -> tuple:
        """Pickled by its arguments, so that it crosses a process boundary (a pool worker's error)."""
        return type(self), (self.path, self.detail)


class MissingMediaError(MediaError, FileNotFoundError):
    kind = "missing"


class EmptyMediaError(MediaError):
    kind = "empty"


class PermissionDeniedError(MediaError, PermissionError):
    """The file, or a folder on its path, may not be read by this user."""

    kind = "permission_denied"


class CorruptMediaError(MediaError):
    """Corrupt or truncated: the container or the stream cannot be read to the end."""

    kind = "corrupt"


class NoVideoStreamError(MediaError):
    kind = "no_video"


class NoAudioStreamError(MediaError):
    kind = "no_audio"


class TooShortError(MediaError, IndexError):
    """Too few frames for what was asked."""

    kind = "too_short"


class UnsupportedCodecError(MediaError):
    kind = "unsupported_codec"


class CrashedDecodeError(MediaError):
    """Decoding this file killed a process (a segfault in a decoder library): it is not decoded again."""

    kind = "crashed"
