"""NT-Xent / InfoNCE: SimCLR's two-view form and the cross-modal (CLIP / AVID) symmetric form.

SimCLR: Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020; code github.com/google-research/simclr (`objective.py`, `add_contrastive_loss`).
Cross-modal: Morgado, Vasconcelos, Misra, "Audio-Visual Instance Discrimination with Cross-Modal
Agreement" (AVID), CVPR 2021, github.com/facebookresearch/AVID-CMA; Radford et al., CLIP, ICML 2021.
Several positives per anchor: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020
(L_out, github.com/HobbitLong/SupContrast).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.distributed import gather_no_grad, gather_with_grad, get_rank
from mmssl.registry import register_loss


def contrastive_cross_entropy(logits: Tensor, positives: Tensor) -> Tensor:
    """Mean over rows of -1/|P(i)| sum_{p in P(i)} log softmax(logits_i)_p.

    `positives` is either one column index per row (plain cross-entropy) or a bool mask [rows, cols]
    (the average over the row's positives, SupCon's L_out). Candidates to leave out of the
    denominator carry a logit of -inf.
    """
    if positives.dtype != torch.bool:
        return F.cross_entropy(logits, positives)
    log_prob = logits.log_softmax(dim=1)
    return -(torch.where(positives, log_prob, 0.0).sum(1) / positives.sum(1)).mean()


class _Contrastive(nn.Module):
    """Temperature, gather flag, and the local/global bookkeeping shared by both forms."""

    def __init__(self, temperature: float, gather_distributed: bool) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def _gather(self, x: Tensor) -> Tensor:
        return gather_with_grad(x) if self.gather_distributed else x

    def _own(self, n: int, device: torch.device) -> Tensor:
        """Index of each of the n local samples in the gathered batch (offset by rank * n)."""
        return torch.arange(n, device=device) + (get_rank() if self.gather_distributed else 0) * n

    def _gather_labels(self, labels: Tensor) -> Tensor:
        return gather_no_grad(labels) if self.gather_distributed else labels


@register_loss("nt_xent")
class NTXentLoss(_Contrastive):
    """SimCLR's NT-Xent over the 2N views of a batch of N pairs (z1[i], z2[i]).

    With z L2-normalised and s_ij = z_i . z_j / T, each of the 2N views is an anchor:
        l_i = -log( exp(s_{i,pos(i)}) / sum_{k != i} exp(s_ik) ),  loss = mean_i l_i
    so the self-similarity is excluded and each anchor has 2N - 2 negatives; both directions are
    averaged (the SimCLR code sums the two directions, twice this value).

    `labels` [N] (group ids, e.g. video ids) makes every view sharing the anchor's id a positive,
    averaged as in SupCon: l_i = -1/|P(i)| sum_{p in P(i)} log softmax_{k != i}(s_ik)_p. Without
    labels each sample is its own group, which is the plain NT-Xent above.

    gather_distributed: the local anchors are contrasted with the views of all ranks, gathered with
    gradient; the default positives are offset by rank * N_local (labels are gathered as given).
    Mean over local anchors, so DDP's average over ranks gives the full-batch gradient.
    Default T = 0.1 (SimCLR code's default flag).

    Examples:
        >>> loss_fn = NTXentLoss(temperature=0.1)
        >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)  # two views of 8 samples
        >>> loss = loss_fn(z1, z2)
        >>> loss.shape
        torch.Size([])
        >>> bool(loss_fn(z1, z2, labels=torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])) > 0)
        True
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = False) -> None:
        super().__init__(temperature, gather_distributed)

    def forward(self, z1: Tensor, z2: Tensor, labels: Tensor | None = None) -> Tensor:
        """z1, z2 [N, D] (row i of each: two views of sample i); labels [N] optional -> scalar."""
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        n = z1.shape[0]
        own = self._own(n, z1.device)
        all1, all2 = self._gather(z1), self._gather(z2)
        total = all1.shape[0]
        logits = torch.cat([z1, z2]) @ torch.cat([all1, all2]).T / self.temperature  # [2n, 2N]
        rows = torch.arange(2 * n, device=z1.device)
        self_column = torch.cat([own, own + total])
        logits[rows, self_column] = float("-inf")
        if labels is None:
            return contrastive_cross_entropy(logits, torch.cat([own + total, own]))
        all_labels = self._gather_labels(labels)
        positives = torch.cat([labels, labels])[:, None] == torch.cat([all_labels, all_labels])[None, :]
        positives[rows, self_column] = False
        return contrastive_cross_entropy(logits, positives)


@register_loss("info_nce")
class InfoNCELoss(_Contrastive):
    """Symmetric cross-modal InfoNCE between a[i] and b[i] (video and audio of clip i), CLIP/AVID style.

    With a, b L2-normalised and s_ij = a_i . b_j / T:
        loss = ( mean_i -log softmax_j(s_ij)_i + mean_i -log softmax_j(s_ji)_i ) / 2
    i.e. positives on the diagonal, the other modality's N - 1 samples as negatives, both directions.
    `labels` [N] makes every b_j with the id of a_i a positive (and vice versa), averaged as in SupCon.

    gather_distributed: local anchors against the other modality of all ranks (gathered with
    gradient), diagonal offset by rank * N_local. Default T = 0.07 (AVID, CLIP's initial value).

    Examples:
        >>> loss_fn = InfoNCELoss()
        >>> video, audio = torch.randn(8, 16), torch.randn(8, 16)  # one pair per clip
        >>> loss = loss_fn(video, audio)
        >>> loss.shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.07, gather_distributed: bool = False) -> None:
        super().__init__(temperature, gather_distributed)

    def forward(self, a: Tensor, b: Tensor, labels: Tensor | None = None, scale: Tensor | None = None) -> Tensor:
        """a, b [N, D] (two modalities, row i of each from sample i); labels [N] optional -> scalar.
        `scale` (a learnable logit scale, CLIP's exp(t)) replaces 1 / temperature when given."""
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        positives = (self._own(len(a), a.device) if labels is None
                     else labels[:, None] == self._gather_labels(labels)[None, :])
        scale = 1 / self.temperature if scale is None else scale
        a_to_b = contrastive_cross_entropy(a @ self._gather(b).T * scale, positives)
        b_to_a = contrastive_cross_entropy(b @ self._gather(a).T * scale, positives)
        return (a_to_b + b_to_a) / 2
