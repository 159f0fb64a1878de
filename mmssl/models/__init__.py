"""Encoders and heads; build encoders by name through the registries."""
from mmssl.models.audio import AUDIO_ENCODERS, AudioEncoder, build_audio_encoder
from mmssl.models.video import (
    TORCHVISION_SPECS,
    VIDEO_ENCODERS,
    Tiny3D,
    TorchvisionVideoEncoder,
    VideoEncoder,
    build_video_encoder,
    register_video_encoder,
    repeat_frames,
)
from mmssl.models.vit import VIT_PRESETS, VideoViT  # registers vit_tiny, vit_small, vit_base
from mmssl.registry import UnknownNameError


def build_encoder(name: str) -> VideoEncoder | AudioEncoder:
    """The video or audio encoder registered under `name`, at random init (`UnknownNameError`, listing
    both kinds, for a name in neither registry)."""
    if name in AUDIO_ENCODERS:
        return build_audio_encoder(name)
    if name in VIDEO_ENCODERS:
        return build_video_encoder(name)
    raise UnknownNameError(f"unknown encoder {name!r}; video: {', '.join(VIDEO_ENCODERS)}; "
                           f"audio: {', '.join(AUDIO_ENCODERS)}")


__all__ = [
    "AUDIO_ENCODERS", "TORCHVISION_SPECS", "VIDEO_ENCODERS", "VIT_PRESETS", "AudioEncoder", "Tiny3D",
    "TorchvisionVideoEncoder", "VideoEncoder", "VideoViT", "build_audio_encoder", "build_encoder",
    "build_video_encoder", "register_video_encoder", "repeat_frames",
]
