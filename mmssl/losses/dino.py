"""DINO self-distillation loss with its centre.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin, "Emerging Properties in Self-Supervised
Vision Transformers", ICCV 2021; code github.com/facebookresearch/dino (`DINOLoss` in main_dino.py).
On video: Ranasinghe et al., "Self-supervised Video Transformer" (SVT), CVPR 2022.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmssl.distributed import reduce_mean
from mmssl.registry import register_loss


@register_loss("dino")
class DINOLoss(nn.Module):
    """loss = mean over pairs (t, s), s != t, of mean_i [ -sum_k P_t(i, k) log P_s(i, k) ]

    P_t = softmax((g_t - c) / tau_t): the teacher's output on global view t, centred by c and
    sharpened by tau_t; P_s = softmax(f_s / tau_s): the student's output on view s (global or local).
    A pair of the same view is left out; the teacher branch gets no gradient. After the loss the centre
    follows the teacher's batch mean over every rank: c <- m c + (1 - m) mean_i,t g_t(i) (all-reduced).
    Centring keeps one dimension from dominating, sharpening keeps the outputs from going uniform.

    Examples:
        >>> import torch
        >>> loss_fn = DINOLoss(out_dim=16)
        >>> student, teacher = torch.randn(4, 8, 16), torch.randn(2, 8, 16)  # [views, B, K]
        >>> probs = loss_fn.teacher_probs(teacher, teacher_temp=0.04)  # with the centre the loss uses
        >>> loss = loss_fn(student, teacher, teacher_temp=0.04)
        >>> bool(loss >= entropy(probs).mean()), bool(loss_fn.center.abs().sum() > 0)  # centre updated after
        (True, True)
    """

    center: Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(out_dim))

    @torch.no_grad()
    def teacher_probs(self, teacher: Tensor, teacher_temp: float) -> Tensor:
        """P_t: the teacher's outputs [..., K] centred by the current centre and sharpened."""
        return F.softmax((teacher.float() - self.center) / teacher_temp, dim=-1)

    def forward(self, student: Tensor, teacher: Tensor, teacher_temp: float = 0.04) -> Tensor:
        """student [Vs, B, K] (its first Vt views are the teacher's), teacher [Vt, B, K] -> the loss;
        then the centre moves."""
        log_s = F.log_softmax(student.float() / self.student_temp, dim=-1)
        p_t = self.teacher_probs(teacher, teacher_temp)
        cross = torch.stack([-(p_t[t] * log_s[s]).sum(-1).mean()
                             for t in range(len(teacher)) for s in range(len(student)) if s != t])
        self.update_center(teacher)
        return cross.mean()

    @torch.no_grad()
    def update_center(self, teacher: Tensor) -> None:
        """c <- m c + (1 - m) (the mean of `teacher` [Vt, B, K] over views and the batches of all ranks)."""
        self.center.lerp_(reduce_mean(teacher.float().mean(dim=(0, 1))).to(self.center.dtype), 1 - self.center_momentum)


def entropy(p: Tensor) -> Tensor:
    """Entropy (nats) of the distributions along the last dim: log K when uniform, 0 when one-hot."""
    return -(p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum(-1)
