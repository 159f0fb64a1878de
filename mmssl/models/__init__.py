"""Encoders and heads; build encoders by name through the registries."""
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

__all__ = [
    "TORCHVISION_SPECS", "VIDEO_ENCODERS", "VIT_PRESETS", "Tiny3D", "TorchvisionVideoEncoder", "VideoEncoder", "VideoViT", "build_video_encoder", "register_video_encoder", "repeat_frames",
]
