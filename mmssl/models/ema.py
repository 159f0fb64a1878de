"""Exponential moving average of weights, shared by MoCo's key encoder and BYOL's target network.

MoCo (He et al. 2020, github.com/facebookresearch/moco, `_momentum_update_key_encoder`) uses a
constant m = 0.999; BYOL (Grill et al. 2020, github.com/deepmind/deepmind-research/tree/master/byol,
`utils.py`) raises tau from 0.996 to 1 on a cosine schedule.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """theta_target <- m * theta_target + (1 - m) * theta_online, in place, for every parameter.

    Parameters are paired in `parameters()` order (the modules must have the same structure; a
    DDP-wrapped `online` is fine). Buffers (BatchNorm running statistics) are left alone: the
    target network updates its own in its forward, as in the MoCo and BYOL code.
    """
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    if len(target_params) != len(online_params):
        raise ValueError(f"online has {len(online_params)} parameters, target {len(target_params)}")
    torch._foreach_lerp_(target_params, online_params, 1.0 - m)


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """BYOL's EMA schedule: tau_k = final - (final - base) * (1 + cos(pi k / K)) / 2.

    base at k = 0, final at k = K (BYOL: tau_base 0.996, final 1); k is clamped to [0, K].
    """
    progress = min(max(step, 0), total_steps) / total_steps
    return final - (final - base) * (1 + math.cos(math.pi * progress)) / 2


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy whose parameters take no gradient (an EMA target): DDP and the optimizer leave them out."""
    copied = copy.deepcopy(module)
    copied.requires_grad_(False)
    return copied
