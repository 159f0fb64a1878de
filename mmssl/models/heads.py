"""Task heads built from small blocks."""
from __future__ import annotations

from torch import Tensor, nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> ReLU (-> Dropout) -> Linear."""
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden_dim, out_dim))
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
