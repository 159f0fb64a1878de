"""Cross-pixel optical-flow similarity: pixel embeddings whose similarities match those of their flow.

Mahendran, Thewlis, Vedaldi, "Cross Pixel Optical-Flow Similarity for Self-Supervised Learning",
ACCV 2018.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.registry import register_loss


def flow_distances(flow: Tensor) -> Tensor:
    """[B, n, 2] -> [B, n, n]: ||f_u - f_v||^2 within each image, from the differences themselves: the
    expanded |a|^2 + |b|^2 - 2ab is a matmul, which autocast runs in bf16 and which loses the small
    distances (a few px^2) that the kernel and its accuracy threshold read."""
    return (flow[:, :, None] - flow[:, None]).pow(2).sum(-1)


@register_loss("cross_pixel_flow")
class CrossPixelFlowLoss(nn.Module):
    """The cross-entropy between the column-normalised flow and embedding kernels over a sample of
    pixels of one image. With phi_u the embedding and f_u the flow of pixel u:
        K_phi(u, v) = exp(s cos(phi_u, phi_v)),   K_f(u, v) = exp(-||f_u - f_v||^2 / (2 sigma^2)),
        S(u | v) = K(u, v) / sum_{u' != v} K(u', v)   (each column normalised, the diagonal left out),
        loss = mean_v -sum_{u != v} S_f(u | v) log S_phi(u | v),
    averaged over the images. Its minimum over S_phi is S_phi = S_f (the entropy of S_f): the
    embeddings need not predict the flow, only which pixels move alike. Each image stands alone, so
    there is nothing to gather across GPUs. `scale` s and `sigma` (in the flow's pixels) [unverified].

    Examples:
        >>> loss_fn = CrossPixelFlowLoss(scale=10.0, sigma=1.0)
        >>> embeddings, flow = torch.randn(2, 32, 16), torch.randn(2, 32, 2)  # 2 images, 32 pixels each
        >>> loss = loss_fn(embeddings, flow)
        >>> loss.shape
        torch.Size([])
    """

    def __init__(self, scale: float = 10.0, sigma: float = 1.0) -> None:
        super().__init__()
        if scale <= 0 or sigma <= 0:
            raise ValueError(f"scale and sigma must be positive, got {scale} and {sigma}")
        self.scale = scale
        self.sigma = sigma

    def kernels(self, embeddings: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        """embeddings [B, n, D], flow [B, n, 2] -> (log S_phi, S_f), each [B, n (u), n (v)], 0 on the
        diagonal (left out of both)."""
        unit = F.normalize(embeddings, dim=-1)
        diagonal = torch.eye(embeddings.shape[1], dtype=torch.bool, device=embeddings.device)
        phi = (self.scale * unit @ unit.transpose(1, 2)).masked_fill(diagonal, float("-inf"))
        flow_logits = (-flow_distances(flow) / (2 * self.sigma ** 2)).masked_fill(diagonal, float("-inf"))
        return phi.log_softmax(dim=1).masked_fill(diagonal, 0.0), flow_logits.softmax(dim=1)

    @staticmethod
    def cross_entropy(log_phi: Tensor, target: Tensor) -> Tensor:
        """The loss of the two `kernels`."""
        return -(target * log_phi).sum(dim=1).mean()

    @torch.no_grad()
    def metrics(self, log_phi: Tensor, flow: Tensor) -> dict[str, Tensor]:
        """`neighbour_accuracy`: the pixel u != v nearest to v by the embedding kernel moves like v
        (K_f(u, v) >= 1/2); `neighbour_share`: the share of such pixels among the others, the chance
        level of a random pick."""
        n = flow.shape[1]
        diagonal = torch.eye(n, dtype=torch.bool, device=flow.device)
        neighbours = (flow_distances(flow) <= 2 * self.sigma ** 2 * math.log(2)) & ~diagonal
        nearest = log_phi.masked_fill(diagonal, float("-inf")).argmax(dim=1)  # [B, n (v)]: its top u
        return {"neighbour_accuracy": neighbours.gather(1, nearest[:, None]).float().mean(),
                "neighbour_share": neighbours.float().sum(1).mean() / (n - 1)}

    def forward(self, embeddings: Tensor, flow: Tensor) -> Tensor:
        """embeddings [B, n, D], flow [B, n, 2] -> scalar."""
        return self.cross_entropy(*self.kernels(embeddings, flow))
