"""Encoders and heads; build encoders by name through the registries."""
from mmssl.models.audio import AUDIO_ENCODERS, AudioEncoder, build_audio_encoder
from mmssl.models.registry import Registry, UnknownNameError
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


def build_encoder(name: str) -> VideoEncoder | AudioEncoder:
    """The video or audio encoder registered under `name` (in `VIDEO_ENCODERS` or `AUDIO_ENCODERS`), at
    random init; a name in neither raises `UnknownNameError`, listing the video encoders."""
    return build_audio_encoder(name) if name in AUDIO_ENCODERS else build_video_encoder(name)


__all__ = [
    "AUDIO_ENCODERS", "TORCHVISION_SPECS", "VIDEO_ENCODERS", "VIT_PRESETS", "AudioEncoder", "Registry", "Tiny3D",
    "TorchvisionVideoEncoder", "UnknownNameError", "VideoEncoder", "VideoViT", "build_audio_encoder",
    "build_encoder", "build_video_encoder", "register_video_encoder", "repeat_frames",
]
