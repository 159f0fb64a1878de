"""How a model computes on its device: bf16 autocast and the channels-last layout of 3D convolutions."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn


def mixed_precision(device: torch.device, amp: str = "auto") -> AbstractContextManager:
    """bf16 autocast on a CUDA device when `amp` is "auto"; otherwise (CPU, or "off") full precision."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and amp == "auto" else nullcontext()


def to_channels_last_3d(model: nn.Module) -> nn.Module:
    """`model` with its Conv3d weights in channels_last_3d (NDHWC) layout, in place; 2D and 1D convs
    (an audio tower's) keep theirs: `model.to(memory_format=torch.channels_last_3d)` stops at the
    first 4-D weight ("required rank 5 tensor")."""
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            module.to(memory_format=torch.channels_last_3d)
    return model
