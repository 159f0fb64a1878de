"""BYOL regression loss.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS 2020;
code github.com/deepmind/deepmind-research/tree/master/byol (`byol_experiment.py`, `utils.py`).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.registry import register_loss


@register_loss("byol")
class BYOLLoss(nn.Module):
    """loss = mean_i [ (2 - 2 cos(p1_i, sg(z2_i))) + (2 - 2 cos(p2_i, sg(z1_i))) ]

    p = online predictions, z = target projections of the other view, sg = stop-gradient (the
    target branch gets no gradient). The two directions are summed and averaged over the batch, as
    in the BYOL code; the minimum is 0. The target network follows the online one by
    `momentum_update` with tau from `cosine_momentum` (mmssl.models.ema; tau_base 0.996).

    Examples:
        >>> import torch
        >>> loss_fn = BYOLLoss()
        >>> p1, p2, z1, z2 = torch.randn(4, 8, 16)  # online predictions, target projections
        >>> loss = loss_fn(p1, p2, z1, z2)
        >>> loss.shape, bool(loss >= 0)
        (torch.Size([]), True)
    """

    def forward(self, p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
        """p1, p2 online predictions [N, D] of views 1, 2; z1, z2 target projections -> scalar."""
        cos_12 = F.cosine_similarity(p1, z2.detach(), dim=-1)
        cos_21 = F.cosine_similarity(p2, z1.detach(), dim=-1)
        return (4 - 2 * (cos_12 + cos_21)).mean()
