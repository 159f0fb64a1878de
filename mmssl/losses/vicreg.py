"""VICReg: variance-invariance-covariance regularisation.

Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022; code github.com/facebookresearch/vicreg (`main_vicreg.py`, `VICReg.forward`).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.distributed import gather_with_grad
from mmssl.registry import register_loss


@register_loss("vicreg")
class VICRegLoss(nn.Module):
    """loss = 25 * MSE(z1, z2) + 25 * (v(z1) + v(z2)) / 2 + 1 * (c(z1) + c(z2))

    v(z) = mean_j relu(1 - sqrt(Var(z_j) + 1e-4))   (unbiased variance of feature j over the batch)
    c(z) = sum_{i != j} Cov(z)_ij^2 / D            (Cov = z_c^T z_c / (N - 1), z_c centred)
    as in the code (the variance term averaged over the two branches, the covariance summed).

    gather_distributed: the invariance term is computed on the local pairs; variance and covariance
    on the features of all ranks, gathered with gradient (the code's FullGatherLayer).

    Examples:
        >>> import torch
        >>> loss_fn = VICRegLoss()
        >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)  # embeddings of two views
        >>> loss = loss_fn(z1, z2)
        >>> loss.shape, bool(loss >= 0)
        (torch.Size([]), True)
    """

    def __init__(self, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0,
                 eps: float = 1e-4, gather_distributed: bool = False) -> None:
        super().__init__()
        self.sim_coeff = sim_coeff
        self.std_coeff = std_coeff
        self.cov_coeff = cov_coeff
        self.eps = eps
        self.gather_distributed = gather_distributed

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """z1, z2 [N, D] embeddings of two views -> scalar."""
        invariance = F.mse_loss(z1, z2)
        if self.gather_distributed:
            z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
        variance = (self._variance(z1) + self._variance(z2)) / 2
        covariance = self._covariance(z1) + self._covariance(z2)
        return self.sim_coeff * invariance + self.std_coeff * variance + self.cov_coeff * covariance

    def _variance(self, z: Tensor) -> Tensor:
        return F.relu(1 - (z.var(dim=0) + self.eps).sqrt()).mean()

    @staticmethod
    def _covariance(z: Tensor) -> Tensor:
        centred = z - z.mean(dim=0)
        cov = centred.T @ centred / (len(z) - 1)
        return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / z.shape[1]
