"""Encode frames (and audio) into a real media file with PyAV's bundled FFmpeg.

Used by the SynthAV generator, the tests (which make every kind of file they decode) and the
benchmarks (which make a long-GOP 720p file).
"""
from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_CHUNK = 1024  # samples per audio frame handed to the encoder
# x264's macroblock-tree lookahead makes the bytes (and decoded pixels) of small frames vary from
# run to run even with one thread (measured: 10 of 25 clips at 32-160 px differed over 6 encodes);
# without it every encode tested was identical. Given options are merged over these defaults.
DEFAULT_ENCODER_OPTIONS = {"libx264": {"x264-params": "mbtree=0"}}


def write_media(
    path: str | Path,
    frames: np.ndarray | None,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    frame_times: Sequence[float] | None = None,
    options: dict[str, str] | None = None,
    threads: int = 1,
    container_options: dict[str, str] | None = None,
    rotation: int = 0,
) -> Path:
    """Write `frames` (uint8 [T, H, W, 3] RGB, or None for an audio-only file) and optional `audio`
    (float32 [samples] or [channels, samples] in [-1, 1]) to `path`; the suffix picks the container.

    `frame_times` (seconds, increasing) makes a variable-frame-rate file; otherwise frame i is at
    i / fps. `gop` sets the keyframe interval; `options` go to the video encoder and
    `container_options` to the muxer (e.g. {"movflags": "faststart"}). `rotation` (degrees counter-
    clockwise) goes into the display matrix, as phones store portrait video. One encoder thread and
    no x264 mb-tree by default, so the same frames give the same bytes on every run.
    """
    path = Path(path)
    with av.open(str(path), mode="w", options=container_options or {}) as container:
        video = audio_stream = None  # every stream is added before the first packet is muxed
        if frames is not None:
            frames = np.ascontiguousarray(frames, dtype=np.uint8)
            video = _add_video_stream(container, frames, fps, video_codec, pix_fmt, gop,
                                      frame_times is not None, options, threads)
            if rotation:
                video.set_display_rotation(rotation)
        if audio is not None:
            audio_stream = container.add_stream(audio_codec, rate=sample_rate)
            audio_stream.layout = "mono" if np.ndim(audio) == 1 or np.shape(audio)[0] == 1 else "stereo"
        if video is not None:
            _encode_video(container, video, frames, frame_times)
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, sample_rate)
    return path


def _add_video_stream(container: av.container.OutputContainer, frames: np.ndarray, fps: float,
                      codec: str, pix_fmt: str, gop: int | None, variable_rate: bool,
                      options: dict[str, str] | None, threads: int) -> av.video.stream.VideoStream:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3] uint8, got {frames.shape}")
    rate = Fraction(fps).limit_denominator(1001)
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = pix_fmt
    stream.codec_context.thread_count = threads
    if gop is not None:
        stream.codec_context.gop_size = gop
    merged = {**DEFAULT_ENCODER_OPTIONS.get(codec, {}), **(options or {})}
    if merged:
        stream.options = merged
    stream.time_base = stream.codec_context.time_base = Fraction(1, 1000) if variable_rate else 1 / rate
    return stream


def _encode_video(container: av.container.OutputContainer, stream: av.video.stream.VideoStream,
                  frames: np.ndarray, frame_times: Sequence[float] | None) -> None:
    time_base = stream.codec_context.time_base
    for i, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = round(Fraction(frame_times[i]) / time_base) if frame_times is not None else i
        frame.time_base = time_base
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def _encode_audio(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                  audio: np.ndarray, sample_rate: int) -> None:
    samples = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    for start in range(0, samples.shape[1], AUDIO_CHUNK):
        chunk = np.ascontiguousarray(samples[:, start:start + AUDIO_CHUNK])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def cut_without_reencoding(src: str | Path, dst: str | Path, start_s: float) -> Path:
    """Copy `src` from `start_s` on without re-encoding, like `ffmpeg -ss T -i src -c copy dst`.

    Packets from the keyframe before `start_s` are kept with negative timestamps, so an mp4 gets
    an edit list that hides the pre-roll: the kind of file many decoders get wrong.
    """
    with av.open(str(src)) as source, av.open(str(dst), mode="w") as target:
        streams = {s.index: target.add_stream_from_template(s) for s in source.streams
                   if s.type in ("video", "audio")}
        video = source.streams.video[0]
        cut = {i: round(start_s / source.streams[i].time_base) for i in streams}
        keyframe = max((p.pts for p in source.demux(video) if p.is_keyframe and p.pts is not None
                        and p.pts <= cut[video.index]), default=0)
        source.seek(int(keyframe), stream=video, backward=True)
        for packet in source.demux(*[source.streams[i] for i in streams]):
            if packet.dts is None:
                continue
            shift = cut[packet.stream.index]
            if packet.stream.type == "audio" and packet.pts < shift:
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = streams[packet.stream.index]
            target.mux(packet)
    return Path(dst)


PACK_START = b"\x00\x00\x01\xba"  # an MPEG program stream's pack header
TS_PACKET = 188  # bytes of an MPEG transport stream packet


def split_stream(src: str | Path, dst: str | Path, at_byte: int) -> Path:
    """Copy an MPEG program stream (.mpg, .vob) or transport stream (.ts) from its first pack or TS
    packet at or after `at_byte` on, as a DVD's split VOB, a camera's split file or a TS capture
    starts: inside a GOP, the frames before its first keyframe cut off from their references."""
    data = Path(src).read_bytes()
    if Path(src).suffix == ".ts":
        at = -(-at_byte // TS_PACKET) * TS_PACKET
    else:
        at = data.find(PACK_START, at_byte)
        if at < 0:
            raise ValueError(f"{src}: no pack header after byte {at_byte}")
    Path(dst).write_bytes(data[at:])
    return Path(dst)
