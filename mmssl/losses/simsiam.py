"""SimSiam negative cosine loss.

Chen and He, "Exploring Simple Siamese Representation Learning", CVPR 2021;
code github.com/facebookresearch/simsiam (`main_simsiam.py`: criterion = nn.CosineSimilarity).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.registry import register_loss


@register_loss("simsiam")
class SimSiamLoss(nn.Module):
    """loss = -( mean_i cos(p1_i, sg(z2_i)) + mean_i cos(p2_i, sg(z1_i)) ) / 2

    p = predictor outputs, z = projector outputs of the other view, sg = stop-gradient (no gradient
    reaches z). The minimum is -1.

    Examples:
        >>> import torch
        >>> loss_fn = SimSiamLoss()
        >>> p1, p2, z1, z2 = torch.randn(4, 8, 16)  # predictions, projections
        >>> loss = loss_fn(p1, p2, z1, z2)
        >>> loss.shape, bool(loss >= -1)
        (torch.Size([]), True)
    """

    def forward(self, p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
        """p1, p2 predictions [N, D] of views 1, 2; z1, z2 projections -> scalar."""
        cos_12 = F.cosine_similarity(p1, z2.detach(), dim=-1)
        cos_21 = F.cosine_similarity(p2, z1.detach(), dim=-1)
        return -(cos_12 + cos_21).mean() / 2
