"""MoCo v2 contrastive loss with a queue of negative keys.

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020; Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning" (MoCo v2),
2020; code github.com/facebookresearch/moco (`moco/builder.py`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.distributed import gather_no_grad
from mmssl.registry import register_loss


@register_loss("moco")
class MoCoLoss(nn.Module):
    """InfoNCE of queries against their key and a queue of K past keys.

    With q, k L2-normalised (k from the momentum encoder, no gradient):
        logits = [q . k+, q . queue] / T,  loss = cross_entropy(logits, label 0)
    then the batch's keys are enqueued (FIFO, overwriting the oldest), *after* the logits are
    computed, so a key is never a negative of its own query.

    The caller updates the key encoder with `momentum_update(encoder_q, encoder_k, 0.999)`
    (mmssl.models.ema) before the key forward, as in the MoCo code.

    gather_distributed: the keys of all ranks are gathered without gradient and enqueued in rank
    order, so every rank keeps the same queue; the initial queue must then be the same on every rank
    (seed identically, or let DDP broadcast it as a buffer of a wrapped module). The queue size must
    be at least the (global) batch size. MoCo v2: K = 65536, T = 0.07 (T = 0.2 in the v2 paper's
    ImageNet recipe; the builder's default is 0.07).

    Examples:
        >>> loss_fn = MoCoLoss(dim=16, queue_size=32)
        >>> q, k = torch.randn(8, 16), torch.randn(8, 16)  # queries and momentum-encoder keys
        >>> loss = loss_fn(q, k)
        >>> loss.shape
        torch.Size([])
        >>> int(loss_fn.queue_ptr)  # the 8 keys were enqueued
        8
    """

    queue: Tensor
    queue_ptr: Tensor

    def __init__(self, dim: int, queue_size: int = 65536, temperature: float = 0.07,
                 gather_distributed: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.gather_distributed = gather_distributed
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        """q [N, D] queries (with gradient), k [N, D] keys of the same samples -> scalar; enqueues k."""
        q = F.normalize(q, dim=1)
        k = F.normalize(k.detach(), dim=1)
        positive = (q * k).sum(dim=1, keepdim=True)
        negatives = q @ self.queue.clone().T  # a copy: the queue changes below, before backward
        logits = torch.cat([positive, negatives], dim=1) / self.temperature
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
        self._enqueue(gather_no_grad(k) if self.gather_distributed else k)
        return loss

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        size = self.queue.shape[0]
        if len(keys) > size:
            raise ValueError(f"{len(keys)} keys do not fit a queue of {size}")
        index = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
        self.queue[index] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % size)
