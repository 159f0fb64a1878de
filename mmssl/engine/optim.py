"""Optimizer and learning-rate schedule: cosine schedule with warmup, parameter groups (no weight
decay on biases, norms, tokens and position tables; per-group lr scales), AdamW or SGD."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from mmssl.config import OptimConfig

NO_DECAY_SUFFIXES = ("mask_token", "pos_embed.table")  # MAE/VideoMAE's no_weight_decay(): tokens, position tables


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int) -> np.ndarray:
    """Linear warmup from 0 to `base`, then cosine decay to `final`: one value per step."""
    warmup = np.linspace(0, base, warmup_steps, endpoint=False)
    steps = np.arange(total_steps - warmup_steps)
    decay = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / max(len(steps), 1)))
    return np.concatenate([warmup, decay])


def param_groups(named_parameters: Iterable[tuple[str, nn.Parameter]],
                 lr_scale: Callable[[str], float] = lambda name: 1.0) -> list[dict]:
    """Optimizer groups: no weight decay on biases, normalisation parameters, mask tokens and learned
    position tables; each group's "lr_scale" (from `lr_scale(name)`, e.g. layer-wise decay) multiplies
    the scheduled lr. One group per (decay, scale): the decayed ones first, each side by rising scale."""
    groups: dict[tuple[bool, float], dict] = {}
    for name, p in named_parameters:
        if p.requires_grad:
            decay = p.ndim > 1 and not name.endswith(NO_DECAY_SUFFIXES)
            key = (decay, float(lr_scale(name)))
            groups.setdefault(key, {"params": [], "lr_scale": key[1], **({} if decay else {"weight_decay": 0.0})})
            groups[key]["params"].append(p)
    return [groups[key] for key in sorted(groups, key=lambda key: (not key[0], key[1]))]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to `lr` times its "lr_scale" (1 where unset)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (`optim.name`) on `param_groups(model)`, with `optim`'s lr, weight decay and betas
    or momentum."""
    groups = param_groups(model.named_parameters())
    if optim.name == "adamw":
        return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    raise ValueError(f"unknown optimizer {optim.name!r}; choose adamw or sgd")
