"""Barlow Twins redundancy-reduction loss.

Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021; code github.com/facebookresearch/barlowtwins (`main.py`, `BarlowTwins.forward`).
"""
from __future__ import annotations

import torch
import torch.distributed.nn.functional as dist_nn
from torch import Tensor, nn

from mmssl.distributed import get_world_size
from mmssl.registry import register_loss


@register_loss("barlow_twins")
class BarlowTwinsLoss(nn.Module):
    """loss = sum_i (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2,  c = BN(z1)^T BN(z2) / N

    BN standardises each feature over the batch (biased variance, eps 1e-5, no affine: the code's
    BatchNorm1d(affine=False), a SyncBatchNorm under DDP); c [D, D] is the cross-correlation
    matrix. lambda = 0.0051.

    gather_distributed: batch statistics over the global batch and c summed over ranks (the code's
    all_reduce), with sums whose backward also sums over ranks, so every rank holds the full-batch
    loss and DDP's average over ranks gives the full-batch gradient (the code's plain all_reduce
    gives 1 / world_size of it).

    Examples:
        >>> loss_fn = BarlowTwinsLoss()
        >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)  # projections of two views
        >>> loss = loss_fn(z1, z2)
        >>> loss.shape, bool(loss >= 0)
        (torch.Size([]), True)
    """

    def __init__(self, lambd: float = 0.0051, eps: float = 1e-5, gather_distributed: bool = False) -> None:
        super().__init__()
        self.lambd = lambd
        self.eps = eps
        self.gather_distributed = gather_distributed

    def _sum_over_ranks(self, x: Tensor) -> Tensor:
        if self.gather_distributed and get_world_size() > 1:
            return dist_nn.all_reduce(x)
        return x

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """z1, z2 [N, D] projections of two views -> scalar."""
        z = torch.stack([z1, z2])  # [2, N, D]
        total = z.shape[1] * (get_world_size() if self.gather_distributed else 1)
        centred = z - self._sum_over_ranks(z.sum(dim=1, keepdim=True)) / total
        variance = self._sum_over_ranks(centred.pow(2).sum(dim=1, keepdim=True)) / total
        bn1, bn2 = centred / (variance + self.eps).sqrt()
        c = self._sum_over_ranks(bn1.T @ bn2) / total
        on_diagonal = c.diagonal()
        off_diagonal_sq = c.pow(2).sum() - on_diagonal.pow(2).sum()
        return (1 - on_diagonal).pow(2).sum() + self.lambd * off_diagonal_sq
