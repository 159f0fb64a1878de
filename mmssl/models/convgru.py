"""Convolutional GRU over a sequence of feature grids (Ballas, Yao, Pal, Courville, "Delving Deeper
into Convolutional Networks for Learning Video Representations", ICLR 2016), as DPC's aggregator has it
(Han, Xie, Zisserman, ICCVW 2019; github.com/TengdaHan/DPC, `backbone/convrnn.py`): the gates are
convolutions over the concatenated input and hidden grids, one layer, orthogonal weights, zero biases."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvGRUCell(nn.Module):
    """One step: input [B, C, H, W] and hidden [B, D, H, W] -> the new hidden [B, D, H, W]:
    z = sigma(W_z * [x, h]), r = sigma(W_r * [x, h]), h~ = tanh(W_o * [x, r h]), h' = (1 - z) h + z h~."""

    def __init__(self, input_dim: int, hidden_dim: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.reset_gate, self.update_gate, self.out_gate = (
            nn.Conv2d(input_dim + hidden_dim, hidden_dim, kernel_size, padding=kernel_size // 2) for _ in range(3))
        for gate in (self.reset_gate, self.update_gate, self.out_gate):
            nn.init.orthogonal_(gate.weight)
            nn.init.zeros_(gate.bias)

    def forward(self, x: Tensor, hidden: Tensor) -> Tensor:
        both = torch.cat([x, hidden], dim=1)
        update = torch.sigmoid(self.update_gate(both))
        reset = torch.sigmoid(self.reset_gate(both))
        candidate = torch.tanh(self.out_gate(torch.cat([x, hidden * reset], dim=1)))
        return hidden * (1 - update) + candidate * update


class ConvGRU(nn.Module):
    """A ConvGRUCell run over a sequence [B, N, C, H, W] from a zero (or given) hidden grid: the last
    hidden grid [B, D, H, W]. A rollout that feeds its own outputs back steps `cell` itself."""

    def __init__(self, input_dim: int, hidden_dim: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.cell = ConvGRUCell(input_dim, hidden_dim, kernel_size)

    def forward(self, sequence: Tensor, hidden: Tensor | None = None) -> Tensor:
        if hidden is None:
            b, _, _, h, w = sequence.shape
            hidden = sequence.new_zeros(b, self.cell.hidden_dim, h, w)
        for t in range(sequence.shape[1]):
            hidden = self.cell(sequence[:, t], hidden)
        return hidden
