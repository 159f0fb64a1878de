"""`probe(path) -> MediaInfo`: what a manifest needs to know of a file, checked by decoding."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from mmssl.io.container import (
    build_index,
    check_decodable,
    media_errors,
    open_container,
    quarter_turns,
    seek_back,
    video_stream,
)
from mmssl.io.errors import CorruptMediaError, MediaError


@dataclass(frozen=True)
class MediaInfo:
    duration: float  # seconds of video
    fps: float  # frames per second (average for variable frame rate)
    num_frames: int  # exact count of displayed frames
    width: int  # of the frames upright (the display matrix's quarter turns applied)
    height: int
    has_audio: bool
    audio_sample_rate: int  # 0 without audio
    audio_channels: int  # 0 without audio
    video_codec: str
    audio_codec: str  # "" without audio
    audio_error: str = ""  # why the file's audio track cannot be decoded (has_audio is then False)


def probe(path: str | Path) -> MediaInfo:
    """Count the frames exactly (demuxing, no full decode), decode the first frame (and audio
    frame) to prove the streams decode, and report the file's properties. Raises `MediaError` for
    a file whose video cannot be used; one whose audio track alone does not decode is reported
    without audio, with the reason in `audio_error`."""
    with open_container(path) as container:
        stream = video_stream(path, container)
        index = build_index(path, container, stream)
        turned = quarter_turns(_decode_first_frame(path, container, stream)) % 2
        width, height = stream.codec_context.width, stream.codec_context.height
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_error = _audio_error(path, container, audio) if audio is not None else ""
        if audio_error:
            audio = None
        return MediaInfo(
            duration=index.duration,
            fps=index.num_frames / index.duration,
            num_frames=index.num_frames,
            width=height if turned else width,
            height=width if turned else height,
            has_audio=audio is not None,
            audio_sample_rate=audio.codec_context.sample_rate if audio is not None else 0,
            audio_channels=audio.codec_context.channels if audio is not None else 0,
            video_codec=stream.codec_context.name,
            audio_codec=audio.codec_context.name if audio is not None else "",
            audio_error=audio_error,
        )


def _audio_error(path: str | Path, container, audio) -> str:
    """Why the `audio` stream cannot be decoded, or ""."""
    try:
        check_decodable(path, audio)
        _decode_first_frame(path, container, audio)
    except MediaError as e:
        return f"{e.kind}: {e.detail}"
    return ""


def _decode_first_frame(path: str | Path, container, stream) -> av.VideoFrame | av.AudioFrame:
    with media_errors(path):
        seek_back(container, stream, stream.start_time or 0)
        for frame in container.decode(stream):
            return frame
    raise CorruptMediaError(path, f"{stream.type} stream yields no decodable frame")
