"""Dense predictive coding's loss: every predicted grid cell against every true cell of the batch.

Han, Xie, Zisserman, "Video Representation Learning by Dense Predictive Coding", ICCVW 2019; code
github.com/TengdaHan/DPC (`dpc/model_3d.py`, `compute_mask`); MemDPC (Han, Xie, Zisserman, "Memory-
augmented Dense Predictive Coding for Video Representation Learning", ECCV 2020) scores the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.distributed import gather_with_grad, get_rank
from mmssl.registry import register_loss

POSITIVE, OTHER_VIDEO, OTHER_CELL, OTHER_STEP = range(4)
NEGATIVE_KINDS = {"video": OTHER_VIDEO, "cell": OTHER_CELL, "step": OTHER_STEP}  # logged as neg_<name>


def candidate_kinds(videos: int, all_videos: int, steps: int, cells: int, first: int = 0,
                    device: torch.device | None = None) -> Tensor:
    """int8 [videos * steps * cells, all_videos * steps * cells]: what candidate (v', t', c') is to the
    prediction (v, t, c) of local video v (global index first + v): POSITIVE (the same video, step and
    cell), OTHER_VIDEO, OTHER_CELL (same video, another cell at any step: DPC's "spatial negatives") or
    OTHER_STEP (same video and cell, another step: DPC's "temporal negatives")."""
    def index(count: int, offset: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        v, t, c = torch.meshgrid(torch.arange(offset, offset + count, device=device),
                                 torch.arange(steps, device=device), torch.arange(cells, device=device), indexing="ij")
        return v.flatten(), t.flatten(), c.flatten()

    (v, t, c), (v2, t2, c2) = index(videos, first), index(all_videos)
    video, cell, step = (v[:, None] != v2), (c[:, None] != c2), (t[:, None] != t2)
    kind = torch.where(step, OTHER_STEP, POSITIVE)
    kind = torch.where(cell, OTHER_CELL, kind)
    return torch.where(video, OTHER_VIDEO, kind).to(torch.int8)


@dataclass
class DenseScores:
    """The scores of one batch: logits [rows, candidates], each row's positive column, and every
    candidate's kind (`candidate_kinds`)."""

    logits: Tensor
    positive: Tensor
    kinds: Tensor

    def loss(self) -> Tensor:
        return F.cross_entropy(self.logits, self.positive)

    @torch.no_grad()
    def metrics(self) -> dict[str, Tensor]:
        """Detached: `accuracy` (the positive ranked first among all candidates), its `chance`
        (1 / candidates), and for each negative kind the mean softmax mass it takes (`neg_<kind>`)."""
        probability = self.logits.float().softmax(dim=1)
        out = {"accuracy": (self.logits.argmax(1) == self.positive).float().mean(),
               "chance": self.logits.new_tensor(1 / self.logits.shape[1])}
        for name, kind in NEGATIVE_KINDS.items():
            out[f"neg_{name}"] = torch.where(self.kinds == kind, probability, 0.0).sum(1).mean()
        return out


@register_loss("dense_predictive")
class DensePredictiveLoss(nn.Module):
    """DPC's dense cross-entropy: a prediction p_{v,t,c} for cell c of future step t of video v is
    scored against every true cell y_{v',t',c'} of the batch by the plain dot product (no
    normalisation, no temperature, as the DPC code), and
        loss = mean_{v,t,c} -log( exp(p_{v,t,c} . y_{v,t,c}) / sum_{v',t',c'} exp(p_{v,t,c} . y_{v',t',c'}) ).
    Each prediction has V T C - 1 negatives of three kinds (`candidate_kinds`): (V - 1) T C other
    videos, T (C - 1) other cells of its own video, T - 1 other steps of its own cell.

    gather_distributed: the true cells of all ranks are gathered with gradient, so the other-video
    negatives come from every rank's videos; the other-cell and other-step negatives are the video's
    own and so always local. Mean over the local predictions; DDP's average gives the full batch.

    Examples:
        >>> loss_fn = DensePredictiveLoss()
        >>> predicted, true = torch.randn(4, 3, 5, 8), torch.randn(4, 3, 5, 8)  # 4 videos, 3 steps, 5 cells
        >>> loss = loss_fn(predicted, true)
        >>> loss.shape
        torch.Size([])
        >>> scores = loss_fn.score(predicted, true)
        >>> int((scores.kinds[0] == 1).sum()), int((scores.kinds[0] == 2).sum()), int((scores.kinds[0] == 3).sum())
        (45, 12, 2)
    """

    def __init__(self, gather_distributed: bool = False) -> None:
        super().__init__()
        self.gather_distributed = gather_distributed

    def score(self, predicted: Tensor, true: Tensor) -> DenseScores:
        """predicted, true [V, T, C, D] (video, step, cell, feature) -> the batch's DenseScores."""
        videos, steps, cells, dim = predicted.shape
        everything = gather_with_grad(true) if self.gather_distributed else true
        first = (get_rank() if self.gather_distributed else 0) * videos
        logits = predicted.reshape(-1, dim) @ everything.reshape(-1, dim).T
        rows = videos * steps * cells
        positive = torch.arange(rows, device=logits.device) + first * steps * cells
        return DenseScores(logits, positive, candidate_kinds(videos, len(everything), steps, cells, first,
                                                                   logits.device))

    def forward(self, predicted: Tensor, true: Tensor) -> Tensor:
        """predicted, true [V, T, C, D] -> scalar."""
        return self.score(predicted, true).loss()
