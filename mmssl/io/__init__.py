"""Media in: probing, frame-exact video reading, audio loading, typed errors, and a writer."""
from mmssl.io.audio import load_audio
from mmssl.io.container import open_container
from mmssl.io.errors import (
    CorruptMediaError,
    CrashedDecodeError,
    EmptyMediaError,
    MediaError,
    MissingMediaError,
    NoAudioStreamError,
    NoVideoStreamError,
    PermissionDeniedError,
    TooShortError,
    UnsupportedCodecError,
)
from mmssl.io.probe import MediaInfo, probe
from mmssl.io.video import BACKENDS, VideoReader
from mmssl.io.writer import write_media

__all__ = [
    "BACKENDS", "CorruptMediaError", "CrashedDecodeError", "EmptyMediaError", "MediaError", "MediaInfo",
    "MissingMediaError", "NoAudioStreamError", "NoVideoStreamError", "PermissionDeniedError", "TooShortError",
    "UnsupportedCodecError", "VideoReader", "load_audio", "open_container", "probe", "write_media",
]
