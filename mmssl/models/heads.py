"""Task heads built from small blocks."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> ReLU (-> Dropout) -> Linear."""
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(*layers)


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
                   out_bn: bool = False) -> nn.Sequential:
    """(num_layers - 1) x [Linear -> BN -> ReLU], then Linear (-> BN without affine if `out_bn`).

    The projectors and predictors of the siamese methods: BYOL's projector and predictor (2 layers),
    SimSiam's projector (3 layers, BN on the output) and predictor (2 layers, a bottleneck), Barlow
    Twins' projector and VICReg's expander (3 layers)."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    if out_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


class ConcatHead(nn.Module):
    """Features of the K inputs of a sample, concatenated, then an MLP classifier.

    Shuffle and Learn's head (Misra et al. 2016): the shared-weight encoder's features of the three
    frames are concatenated and classified."""

    def __init__(self, feature_dim: int, num_inputs: int, hidden_dim: int, num_classes: int) -> None:
        super().__init__()
        self.num_inputs = num_inputs
        self.classifier = mlp(feature_dim * num_inputs, hidden_dim, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        """features [B * K, D] (sample-major) -> logits [B, num_classes]."""
        return self.classifier(features.reshape(-1, self.num_inputs * features.shape[-1]))


class PairwiseHead(nn.Module):
    """Order classifier over the K inputs of a sample, pair by pair.

    For every pair i < j (in `itertools.combinations` order) the two feature vectors are
    concatenated and passed through one shared Linear(2D, hidden_dim) + ReLU; the K(K-1)/2 pair
    outputs are concatenated, then Dropout and Linear(hidden_dim * pairs, num_classes).
    OPN's head (Lee et al. 2017: fc7 per frame pair, fc8 on their concatenation) and VCOP's
    (Xu et al. 2019: Linear(2d, 512) + ReLU per clip pair, dropout 0.5, Linear(512 * pairs, n!)).
    """

    def __init__(self, feature_dim: int, num_inputs: int, hidden_dim: int, num_classes: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.num_inputs = num_inputs
        first, second = torch.triu_indices(num_inputs, num_inputs, offset=1)  # (0,1), (0,2), ...
        self.register_buffer("first", first, persistent=False)
        self.register_buffer("second", second, persistent=False)
        self.pair = nn.Sequential(nn.Linear(2 * feature_dim, hidden_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_dim * len(first), num_classes))

    def forward(self, features: Tensor) -> Tensor:
        """features [B * K, D] (sample-major) -> logits [B, num_classes]."""
        f = features.reshape(-1, self.num_inputs, features.shape[-1])
        pairs = torch.cat([f[:, self.first], f[:, self.second]], dim=-1)  # [B, pairs, 2D]
        return self.classifier(self.pair(pairs).flatten(1))
