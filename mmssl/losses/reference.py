"""Slow, readable reference implementations of the losses, and the cases that pair them up.

Each function writes its paper's formula out directly: a Python loop over anchors (or over features)
with explicit sums, exp and log, one process, no gathering. They are the ground truth that
tests/test_losses.py compares the vectorised modules against (values and gradients) and the
baseline that tools/bench_losses.py times them against. Not for training.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmssl.losses.barlow_twins import BarlowTwinsLoss
from mmssl.losses.byol import BYOLLoss
from mmssl.losses.cross_pixel_flow import CrossPixelFlowLoss
from mmssl.losses.dense_predictive import DensePredictiveLoss
from mmssl.losses.dino import DINOLoss
from mmssl.losses.margin import MarginContrastiveLoss
from mmssl.losses.moco import MoCoLoss
from mmssl.losses.nt_xent import InfoNCELoss, NTXentLoss
from mmssl.losses.simsiam import SimSiamLoss
from mmssl.losses.triplet import TripletLoss
from mmssl.losses.vicreg import VICRegLoss


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _cosine(x: Tensor, y: Tensor) -> Tensor:
    return torch.dot(x, y) / (x.norm() * y.norm())


def _mean(terms: list[Tensor]) -> Tensor:
    return torch.stack(terms).mean()


def nt_xent(z1: Tensor, z2: Tensor, temperature: float, labels: Tensor | None = None) -> Tensor:
    """SimCLR: for each of the 2N views i, -mean_{p in P(i)} log( exp(s_ip) / sum_{k != i} exp(s_ik) )."""
    z = _unit(torch.cat([z1, z2]))
    ids = torch.arange(len(z1), device=z.device) if labels is None else labels
    ids = torch.cat([ids, ids])
    losses = []
    for i in range(len(z)):
        similarities = torch.mv(z, z[i]) / temperature
        others = torch.arange(len(z), device=z.device) != i
        log_denominator = torch.log(torch.exp(similarities[others]).sum())
        positives = others & (ids == ids[i])
        losses.append(-(similarities[positives] - log_denominator).mean())
    return _mean(losses)


def info_nce(a: Tensor, b: Tensor, temperature: float, labels: Tensor | None = None) -> Tensor:
    """Cross-modal: (mean_i -log softmax_j(a_i . b_j / T)_i + the same from b to a) / 2."""
    a, b = _unit(a), _unit(b)
    ids = torch.arange(len(a), device=a.device) if labels is None else labels

    def one_direction(anchors: Tensor, candidates: Tensor) -> Tensor:
        losses = []
        for i in range(len(anchors)):
            similarities = torch.mv(candidates, anchors[i]) / temperature
            log_denominator = torch.log(torch.exp(similarities).sum())
            losses.append(-(similarities[ids == ids[i]] - log_denominator).mean())
        return _mean(losses)

    return (one_direction(a, b) + one_direction(b, a)) / 2


def moco(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """mean_i -log( exp(q_i . k_i / T) / (exp(q_i . k_i / T) + sum_j exp(q_i . queue_j / T)) )."""
    q, k = _unit(q), _unit(k.detach())
    losses = []
    for i in range(len(q)):
        positive = torch.dot(q[i], k[i]) / temperature
        negatives = torch.mv(queue, q[i]) / temperature
        losses.append(torch.log(torch.exp(positive) + torch.exp(negatives).sum()) - positive)
    return _mean(losses)


def byol(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """mean_i (2 - 2 cos(p1_i, sg z2_i)) + (2 - 2 cos(p2_i, sg z1_i))."""
    return _mean([(2 - 2 * _cosine(p1[i], z2[i].detach())) + (2 - 2 * _cosine(p2[i], z1[i].detach()))
                  for i in range(len(p1))])


def simsiam(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """-(mean_i cos(p1_i, sg z2_i) + mean_i cos(p2_i, sg z1_i)) / 2."""
    return -_mean([(_cosine(p1[i], z2[i].detach()) + _cosine(p2[i], z1[i].detach())) / 2
                   for i in range(len(p1))])


def _standardised_columns(z: Tensor, eps: float) -> list[Tensor]:
    """Each feature (column) minus its batch mean, over sqrt(biased variance + eps)."""
    n = len(z)
    columns = []
    for j in range(z.shape[1]):
        mean = z[:, j].sum() / n
        variance = ((z[:, j] - mean) ** 2).sum() / n
        columns.append((z[:, j] - mean) / torch.sqrt(variance + eps))
    return columns


def barlow_twins(z1: Tensor, z2: Tensor, lambd: float, eps: float) -> Tensor:
    """sum_i (1 - c_ii)^2 + lambda sum_{i != j} c_ij^2 with c_ij = sum_b BN(z1)_bi BN(z2)_bj / N."""
    a, b = _standardised_columns(z1, eps), _standardised_columns(z2, eps)
    loss = z1.new_zeros(())
    for i in range(len(a)):
        for j in range(len(b)):
            c_ij = (a[i] * b[j]).sum() / len(z1)
            loss = loss + ((1 - c_ij) ** 2 if i == j else lambd * c_ij ** 2)
    return loss


def vicreg(z1: Tensor, z2: Tensor, sim_coeff: float, std_coeff: float, cov_coeff: float,
           eps: float) -> Tensor:
    """sim * mean (z1 - z2)^2 + std * (v(z1) + v(z2)) / 2 + cov * (c(z1) + c(z2)), see VICRegLoss."""
    n, d = z1.shape

    def centred_columns(z: Tensor) -> list[Tensor]:
        return [z[:, j] - z[:, j].sum() / n for j in range(d)]

    def variance_term(z: Tensor) -> Tensor:
        return _mean([torch.relu(1 - torch.sqrt((c ** 2).sum() / (n - 1) + eps)) for c in centred_columns(z)])

    def covariance_term(z: Tensor) -> Tensor:
        columns = centred_columns(z)
        total = z.new_zeros(())
        for i in range(d):
            for j in range(d):
                if i != j:
                    total = total + ((columns[i] * columns[j]).sum() / (n - 1)) ** 2
        return total / d

    invariance = ((z1 - z2) ** 2).sum() / (n * d)
    variance = (variance_term(z1) + variance_term(z2)) / 2
    covariance = covariance_term(z1) + covariance_term(z2)
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


def margin_contrastive(x1: Tensor, x2: Tensor, positive: Tensor, margin: float, scale: float) -> Tensor:
    """scale * mean_i [D_i^2 if positive_i else max(0, m - D_i)^2], D_i = ||x1_i - x2_i||."""
    terms = []
    for i in range(len(x1)):
        distance = torch.sqrt(((x1[i] - x2[i]) ** 2).sum())
        terms.append(distance ** 2 if positive[i] else torch.clamp(margin - distance, min=0) ** 2)
    return scale * _mean(terms)


def triplet(embeddings: Tensor, labels: Tensor, margin: float, mining: str, normalize: bool) -> Tensor:
    """mean over mined triplets of max(0, D_ap - D_an + alpha), D squared Euclidean (see TripletLoss)."""
    x = _unit(embeddings) if normalize else embeddings
    index = torch.arange(len(x), device=x.device)
    losses = []
    for i in range(len(x)):
        distances = ((x - x[i]) ** 2).sum(dim=1)
        positives = (labels == labels[i]) & (index != i)
        negatives = distances[labels != labels[i]]
        if not positives.any() or len(negatives) == 0:
            continue
        if mining == "batch_hard":
            losses.append(torch.relu(distances[positives].max() - negatives.min() + margin))
            continue
        for d_ap in distances[positives]:
            farther = negatives[negatives > d_ap]
            d_an = farther.min() if len(farther) else negatives.max()
            losses.append(torch.relu(d_ap - d_an + margin))
    return _mean(losses) if losses else embeddings.sum() * 0


def dense_predictive(predicted: Tensor, true: Tensor) -> Tensor:
    """DPC: mean over predicted cells (v, t, c) of -log( exp(p_vtc . y_vtc) / sum_{v',t',c'} exp(p_vtc . y_v't'c') )."""
    candidates = true.reshape(-1, true.shape[-1])
    losses = []
    for row, p in enumerate(predicted.reshape(-1, predicted.shape[-1])):
        scores = torch.mv(candidates, p)
        losses.append(torch.log(torch.exp(scores).sum()) - scores[row])
    return _mean(losses)


def cross_pixel_flow(embeddings: Tensor, flow: Tensor, scale: float, sigma: float) -> Tensor:
    """Mahendran et al.: mean over images and pixels v of -sum_{u != v} S_f(u|v) log S_phi(u|v), each S
    its kernel K(u, v) over sum_{u' != v} K(u', v); K_phi = exp(s cos), K_f = exp(-|f_u - f_v|^2 / 2 sigma^2)."""
    losses = []
    for phi, f in zip(embeddings, flow):
        for v in range(len(phi)):
            others = torch.arange(len(phi), device=phi.device) != v
            k_phi = torch.exp(scale * torch.stack([_cosine(phi[u], phi[v]) for u in range(len(phi))]))[others]
            k_f = torch.exp(-((f - f[v]) ** 2).sum(1) / (2 * sigma ** 2))[others]
            losses.append(-(k_f / k_f.sum() * torch.log(k_phi / k_phi.sum())).sum())
    return _mean(losses)


InputMaker = Callable[[int, int, torch.Generator], dict[str, Tensor]]

QUEUE_SIZE = 4096  # MoCo's queue in the cases (the default 65536 does not fit a CPU benchmark)


def dino(student: Tensor, teacher: Tensor, center: Tensor, student_temp: float, teacher_temp: float) -> Tensor:
    """mean over view pairs t != s and samples i of -sum_k P_t(i, k) log P_s(i, k), with
    P_t(i) = softmax((g_ti - c) / tau_t) (no gradient) and P_s(i) = softmax(f_si / tau_s)."""
    terms = []
    for t in range(len(teacher)):
        for s in range(len(student)):
            for i in range(student.shape[1]):
                if s != t:
                    g = (teacher[t, i].detach() - center) / teacher_temp
                    f = student[s, i] / student_temp
                    terms.append(-(torch.exp(g - torch.logsumexp(g, 0)) * (f - torch.logsumexp(f, 0))).sum())
    return _mean(terms)


@dataclass(frozen=True)
class Case:
    """A loss module, its reference, and random float64 inputs of batch n and dimension d.

    `reference(module, **inputs)` reads the module's hyperparameters and state (MoCo's queue), so
    call it before the module's own forward.
    """

    build: Callable[[int], nn.Module]
    reference: Callable[..., Tensor]
    inputs: InputMaker


def _features(*names: str, labels: str | None = None) -> InputMaker:
    """Standard normal [n, d] tensors; `labels` adds group ids with about 4 members per group."""

    def make(n: int, d: int, generator: torch.Generator) -> dict[str, Tensor]:
        out = {name: torch.randn(n, d, generator=generator, dtype=torch.float64) for name in names}
        if labels is not None:
            out[labels] = torch.randint(0, max(n // 4, 2), (n,), generator=generator)
        return out

    return make


def _grid_features(n: int, d: int, generator: torch.Generator) -> dict[str, Tensor]:
    """DPC: n videos, 2 future steps of 3 cells, scaled so that the softmax is neither flat nor one-hot."""
    return {name: torch.randn(n, 2, 3, d, generator=generator, dtype=torch.float64) / d ** 0.25
            for name in ("predicted", "true")}


def _pixel_features(n: int, d: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Flow similarity: n images of 5 pixels each, embeddings of dimension d and flow vectors."""
    return {"embeddings": torch.randn(n, 5, d, generator=generator, dtype=torch.float64),
            "flow": torch.randn(n, 5, 2, generator=generator, dtype=torch.float64)}


def _view_outputs(n: int, d: int, generator: torch.Generator) -> dict[str, Tensor]:
    """DINO: a student's outputs on 3 views and a teacher's on the first 2, n samples of d outputs."""
    return {"student": torch.randn(3, n, d, generator=generator, dtype=torch.float64),
            "teacher": torch.randn(2, n, d, generator=generator, dtype=torch.float64)}


def _margin_inputs(n: int, d: int, generator: torch.Generator) -> dict[str, Tensor]:
    return {**_features("x1", "x2")(n, d, generator), "positive": torch.rand(n, generator=generator) < 0.5}


CASES: dict[str, Case] = {
    "nt_xent": Case(lambda d: NTXentLoss(temperature=0.2),
                    lambda m, z1, z2: nt_xent(z1, z2, m.temperature), _features("z1", "z2")),
    "nt_xent_labels": Case(lambda d: NTXentLoss(temperature=0.2),
                           lambda m, z1, z2, labels: nt_xent(z1, z2, m.temperature, labels),
                           _features("z1", "z2", labels="labels")),
    "info_nce": Case(lambda d: InfoNCELoss(), lambda m, a, b: info_nce(a, b, m.temperature),
                     _features("a", "b")),
    "info_nce_labels": Case(lambda d: InfoNCELoss(),
                            lambda m, a, b, labels: info_nce(a, b, m.temperature, labels),
                            _features("a", "b", labels="labels")),
    "moco": Case(lambda d: MoCoLoss(d, queue_size=QUEUE_SIZE),
                 lambda m, q, k: moco(q, k, m.queue.clone(), m.temperature), _features("q", "k")),
    "byol": Case(lambda d: BYOLLoss(), lambda m, **x: byol(**x), _features("p1", "p2", "z1", "z2")),
    "simsiam": Case(lambda d: SimSiamLoss(), lambda m, **x: simsiam(**x), _features("p1", "p2", "z1", "z2")),
    "barlow_twins": Case(lambda d: BarlowTwinsLoss(),
                         lambda m, z1, z2: barlow_twins(z1, z2, m.lambd, m.eps), _features("z1", "z2")),
    "vicreg": Case(lambda d: VICRegLoss(),
                   lambda m, z1, z2: vicreg(z1, z2, m.sim_coeff, m.std_coeff, m.cov_coeff, m.eps),
                   _features("z1", "z2")),
    "cross_pixel_flow": Case(lambda d: CrossPixelFlowLoss(scale=5.0, sigma=1.0),
                             lambda m, embeddings, flow: cross_pixel_flow(embeddings, flow, m.scale, m.sigma),
                             _pixel_features),
    "dense_predictive": Case(lambda d: DensePredictiveLoss(), lambda m, predicted, true: dense_predictive(predicted, true),
                             _grid_features),
    # margin at the median distance of two random pairs, so about half the negatives are active
    "dino": Case(lambda d: DINOLoss(d), lambda m, student, teacher: dino(student, teacher, m.center.clone(),
                                                                          m.student_temp, 0.04), _view_outputs),
    "margin": Case(lambda d: MarginContrastiveLoss(margin=math.sqrt(2 * d)),
                   lambda m, x1, x2, positive: margin_contrastive(x1, x2, positive, m.margin, m.scale),
                   _margin_inputs),
    **{f"triplet_{mining}": Case(
        lambda d, mining=mining: TripletLoss(mining=mining),
        lambda m, embeddings, labels: triplet(embeddings, labels, m.margin, m.mining, m.normalize),
        _features("embeddings", labels="labels")) for mining in ("batch_hard", "semi_hard")},
}
