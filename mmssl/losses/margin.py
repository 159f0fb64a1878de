"""Margin contrastive loss on embedding distances.

Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping", CVPR 2006
(eq. 4); used on video/audio pairs by AVTS: Korbar, Tran, Torresani, "Cooperative Learning of Audio
and Video Models from Self-Supervised Synchronization", NeurIPS 2018 (eq. 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.registry import register_loss


@register_loss("margin")
class MarginContrastiveLoss(nn.Module):
    """loss = scale * mean_i [ D_i^2 if positive_i else max(0, m - D_i)^2 ],  D_i = ||x1_i - x2_i||_2

    `positive` (bool) marks the matching pairs, so there is no numeric label to misread: Hadsell's
    Y = 0 ("similar") is positive=True, AVTS's y = 1 (in sync) is positive=True.
    scale = 1/2 gives Hadsell's (1 - Y) D^2/2 + Y max(0, m - D)^2/2; scale = 1 gives AVTS's
    y ||v - a||^2 + (1 - y) max(eta - ||v - a||, 0)^2 (with m = eta). The margin is a config value:
    AVTS's eta is not confirmed [unverified], default 1.

    Examples:
        >>> loss_fn = MarginContrastiveLoss(margin=1.0)
        >>> video, audio = torch.randn(4, 16), torch.randn(4, 16)
        >>> positive = torch.tensor([True, False, True, False])  # which pairs are in sync
        >>> loss = loss_fn(video, audio, positive)
        >>> loss.shape, bool(loss >= 0)
        (torch.Size([]), True)
    """

    def __init__(self, margin: float = 1.0, scale: float = 0.5) -> None:
        super().__init__()
        self.margin = margin
        self.scale = scale

    def forward(self, x1: Tensor, x2: Tensor, positive: Tensor) -> Tensor:
        """x1, x2 [N, D] paired embeddings (e.g. video, audio), positive [N] bool -> scalar."""
        squared = (x1 - x2).pow(2).sum(dim=-1)
        nonzero = squared > 0  # sqrt has an infinite gradient at 0: take it where D > 0 only
        distance = torch.where(nonzero, torch.where(nonzero, squared, 1.0).sqrt(), 0.0)
        per_pair = torch.where(positive, squared, F.relu(self.margin - distance).pow(2))
        return self.scale * per_pair.mean()
