"""Encoders and heads; build encoders by name through the registries."""
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

__all__ = [
    "TORCHVISION_SPECS", "VIDEO_ENCODERS", "Registry", "Tiny3D", "TorchvisionVideoEncoder", "UnknownNameError",
    "VideoEncoder", "build_video_encoder", "register_video_encoder", "repeat_frames",
]
