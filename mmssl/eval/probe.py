"""The linear probe on frozen features: multinomial logistic regression with an L2 penalty, fitted to
convergence by L-BFGS (as scikit-learn's and CLIP's linear probes), the penalty chosen per run by
stratified k-fold cross-validation over the training videos, never the test split.

Features constant on the training clips (a ReLU unit that never fires there) are dropped before anything
else: the probe can learn nothing from them, and any scale given to them would let their test values
decide. The recipe and the validation study behind it: docs/results.md#the-linear-probe.
"""
from __future__ import annotations

import typing
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mmssl.config import TransferConfig

NORMALISATIONS = typing.get_args(typing.get_type_hints(TransferConfig)["linear_normalise"])


def live_features(train: torch.Tensor) -> torch.Tensor:
    """bool [F]: the features of training clips [n, F] whose spread exceeds float rounding of their mean."""
    return train.std(0) > 1e-6 * train.mean(0).abs()


def normaliser(train: torch.Tensor, how: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The normalisation `how` fitted on training clips [n, F], as a function of features [..., F] that
    keeps the live features and then: "shared" centres each and divides all by one scale (the root mean
    square of their standard deviations: their relative scales kept, their overall scale 1);
    "per_feature" standardises each; "l2" L2-normalises each clip's vector, then as "shared"; "none"."""
    if how not in NORMALISATIONS:
        raise ValueError(f"unknown probe normalisation {how!r}: one of {', '.join(NORMALISATIONS)}")
    keep = live_features(train)

    def project(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x[..., keep], dim=-1) if how == "l2" else x[..., keep]

    projected = project(train)
    if how == "none":
        return project
    mean, std = projected.mean(0), projected.std(0)
    scale = std if how == "per_feature" else std.square().mean().sqrt()
    return lambda x: (project(x) - mean) / scale


def logistic_regression(x: torch.Tensor, y: torch.Tensor, num_classes: int, penalty: float,
                        iterations: int) -> nn.Linear:
    """Multinomial logistic regression on samples [n, F] with labels [n]: mean cross-entropy plus
    penalty / 2 * |W|^2 (bias not penalised), minimised by L-BFGS from zero (deterministic; 10 pairs of
    history and at most `iterations`, as scikit-learn's defaults of 10 and 100)."""
    classifier = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.LBFGS(classifier.parameters(), max_iter=iterations, history_size=10,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(classifier(x), y) + penalty / 2 * classifier.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return classifier.requires_grad_(False)


def video_folds(labels: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """The fold (0 .. k-1) of each of N videos with labels [N]: videos sorted by class (shuffled within
    it) and dealt in turn, so each class spreads over the folds as evenly as it can and fold sizes
    differ by at most one. A fold holds whole videos: all the clips of one video fall on one side."""
    generator = torch.Generator().manual_seed(seed)
    by_class = [(labels == c).nonzero().squeeze(1) for c in labels.unique()]
    order = torch.cat([members[torch.randperm(len(members), generator=generator)] for members in by_class])
    folds = torch.empty_like(labels)
    folds[order] = torch.arange(len(labels)) % k
    return folds


def fit(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, how: str, penalty: float,
        iterations: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The probe fitted on every clip of the training videos [N, K, F] (labels [N]), as a function of
    features [M, K, F] -> logits [M, K, classes]."""
    clips = train_x.flatten(0, 1)
    normalise = normaliser(clips, how)
    classifier = logistic_regression(normalise(clips), train_y.repeat_interleave(train_x.shape[1]), num_classes,
                                     penalty, iterations)
    return lambda x: classifier(normalise(x))


def cross_validate(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int,
                   config: TransferConfig) -> dict[float, float]:
    """Held-out video top-1 (%) of each penalty in `linear_penalty`: `linear_folds` stratified folds of
    the training videos [N, K, F], each held out in turn from a probe fitted on the others."""
    c = config
    folds = video_folds(train_y, c.linear_folds, c.seed)  # fewer videos than folds: one video a fold
    hits = dict.fromkeys(c.linear_penalty, 0)
    for fold in folds.unique():
        held_out = folds == fold
        for penalty in hits:
            predict = fit(train_x[~held_out], train_y[~held_out], num_classes, c.linear_normalise, penalty,
                          c.linear_epochs)
            video_probs = predict(train_x[held_out]).softmax(-1).mean(1)
            hits[penalty] += (video_probs.argmax(-1) == train_y[held_out]).sum().item()
    return {penalty: 100.0 * n / len(train_y) for penalty, n in hits.items()}


def fit_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int,
                     config: TransferConfig) -> tuple[torch.Tensor, dict]:
    """The probe on train features [N, K, F] (each of a video's K clips a sample) and labels [N], its
    penalty the best of `linear_penalty` by `cross_validate` (ties: the stronger; one penalty: no
    cross-validation) -> test logits [M, K, classes] and what was chosen: the penalty, each penalty's
    held-out video top-1 and the number of dead (dropped) features."""
    c = config
    validation = cross_validate(train_x, train_y, num_classes, c) if len(c.linear_penalty) > 1 else {}
    penalty = max(c.linear_penalty, key=lambda p: (validation.get(p, 0.0), p))
    predict = fit(train_x, train_y, num_classes, c.linear_normalise, penalty, c.linear_epochs)
    dead = int((~live_features(train_x.flatten(0, 1))).sum())
    return predict(test_x), {"penalty": penalty, "validation_top1": {f"{p:g}": acc for p, acc in validation.items()},
                             "dead_features": dead}
