"""Triplet loss with batch-hard or semi-hard mining.

Schroff, Kalenichenko, Philbin, "FaceNet: A Unified Embedding for Face Recognition and Clustering",
CVPR 2015 (eq. 1, semi-hard negatives; as implemented in tensorflow/addons
`losses/triplet.py::triplet_semihard_loss`); batch-hard: Hermans, Beyer, Leibe, "In Defense of the
Triplet Loss for Person Re-Identification", 2017 (github.com/VisualComputingInstitute/triplet-reid).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.distributed import gather_no_grad, gather_with_grad, get_rank, get_world_size
from mmssl.registry import register_loss

Mining = Literal["batch_hard", "semi_hard"]


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """||a_i - b_j||^2 for all pairs, [len(a), len(b)], via |a|^2 + |b|^2 - 2 a.b (clamped at 0)."""
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)


@register_loss("triplet")
class TripletLoss(nn.Module):
    """loss = mean over mined triplets of max(0, ||a - p||^2 - ||a - n||^2 + alpha),  alpha = 0.2

    Triplets are mined in the batch from `labels` (same label = positive, other label = negative;
    an anchor is never its own positive), with D = squared Euclidean distance:
    - "batch_hard": one triplet per anchor: the farthest positive and the closest negative.
    - "semi_hard": one triplet per (anchor, positive) pair: the closest negative farther than the
      positive (D_an > D_ap), or the farthest negative when there is none (TF-Addons' rule).
    Anchors without a positive or a negative yield no triplet. normalize=True puts the embeddings on
    the unit hypersphere first, as FaceNet does (alpha is relative to that scale).

    gather_distributed: local anchors against the embeddings of all ranks (gathered with
    gradient, labels without); the local sum is divided by the global number of triplets and times
    the world size, so DDP's average over ranks is the full-batch mean.

    Examples:
        >>> loss_fn = TripletLoss(margin=0.2, mining="semi_hard")
        >>> embeddings, labels = torch.randn(6, 16), torch.tensor([0, 0, 1, 1, 2, 2])
        >>> loss = loss_fn(embeddings, labels)
        >>> loss.shape, bool(loss >= 0)
        (torch.Size([]), True)
    """

    def __init__(self, margin: float = 0.2, mining: Mining = "batch_hard", normalize: bool = True,
                 gather_distributed: bool = False) -> None:
        super().__init__()
        if mining not in ("batch_hard", "semi_hard"):
            raise ValueError(f"mining must be 'batch_hard' or 'semi_hard', got {mining!r}")
        self.margin = margin
        self.mining = mining
        self.normalize = normalize
        self.gather_distributed = gather_distributed

    @torch.no_grad()
    def mine(self, distances: Tensor, labels: Tensor, candidate_labels: Tensor, own: Tensor
             ) -> tuple[Tensor, Tensor, Tensor]:
        """(anchor row, positive column, negative column) index tensors of the mined triplets.

        distances [n, M] from the n anchors to the M candidates; `own` [n] is the column of each
        anchor itself among the candidates.
        """
        same = labels[:, None] == candidate_labels[None, :]
        is_positive = same.clone()
        is_positive[torch.arange(len(own), device=own.device), own] = False
        is_negative = ~same
        has_negative = is_negative.any(dim=1)
        if self.mining == "batch_hard":
            anchor = torch.nonzero(is_positive.any(dim=1) & has_negative).squeeze(1)
            positive = torch.where(is_positive, distances, float("-inf")).argmax(dim=1)[anchor]
            negative = torch.where(is_negative, distances, float("inf")).argmin(dim=1)[anchor]
            return anchor, positive, negative
        anchor, positive = torch.nonzero(is_positive & has_negative[:, None], as_tuple=True)
        row = distances[anchor]  # [pairs, M]
        harder = is_negative[anchor] & (row > distances[anchor, positive][:, None])
        semi_hard = torch.where(harder, row, float("inf")).argmin(dim=1)
        farthest = torch.where(is_negative[anchor], row, float("-inf")).argmax(dim=1)
        negative = torch.where(harder.any(dim=1), semi_hard, farthest)
        return anchor, positive, negative

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """embeddings [N, D], labels [N] integer ids -> scalar (0 when no triplet exists)."""
        if self.normalize:
            embeddings = F.normalize(embeddings, dim=1)
        n = len(embeddings)
        own = torch.arange(n, device=embeddings.device)
        candidates, candidate_labels = embeddings, labels
        if self.gather_distributed:
            own = own + get_rank() * n
            candidates, candidate_labels = gather_with_grad(embeddings), gather_no_grad(labels)
        distances = squared_distances(embeddings, candidates)
        anchor, positive, negative = self.mine(distances, labels, candidate_labels, own)
        losses = F.relu(distances[anchor, positive] - distances[anchor, negative] + self.margin)
        count, world = torch.tensor([len(anchor)], device=embeddings.device), 1
        if self.gather_distributed:
            count, world = gather_no_grad(count), get_world_size()
        return losses.sum() * world / count.sum().clamp_min(1)
