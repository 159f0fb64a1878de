"""Gumbel-softmax product quantiser of wav2vec 2.0 (Baevski, Zhou, Mohamed, Auli, "wav2vec 2.0: A
Framework for Self-Supervised Learning of Speech Representations", NeurIPS 2020, Sec. 2; fairseq's
GumbelVectorQuantizer), and the codebook statistics its loss uses.

G codebooks of V entries of size d / G. Logits l = W x give one distribution per codebook; the
chosen entries are concatenated into a d-vector. Training: straight-through Gumbel softmax, the
forward pass takes the one-hot argmax_v (l_v + n_v) / tau (n Gumbel noise), the backward pass the
gradient of softmax((l + n) / tau). Evaluation: the one-hot argmax_v l_v.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def gumbel_temperature(step: int, start: float = 2.0, decay: float = 0.999995, floor: float = 0.5) -> float:
    """The Gumbel-softmax temperature at optimizer step `step`: max(start * decay ** step, floor)."""
    return max(start * decay ** step, floor)


def perplexity(probs: Tensor) -> Tensor:
    """Summed perplexity of the codebooks: sum_g exp(H(mean_n probs[n, g])), for probabilities
    [..., G, V] averaged over all leading dims. G (each codebook always picks one entry) up to G * V
    (every entry used equally)."""
    mean = probs.flatten(0, -3).float().mean(0)
    return torch.special.entr(mean).sum(-1).exp().sum()


def diversity_loss(probs: Tensor) -> Tensor:
    """wav2vec 2.0's codebook diversity loss (Eq. 4): (G V - perplexity(probs)) / (G V), on the soft
    code probabilities without Gumbel noise. 0 when every entry is used equally; (V - 1) / V when
    each codebook always puts all its mass on one entry."""
    num_codes = probs.shape[-2] * probs.shape[-1]
    return (num_codes - perplexity(probs)) / num_codes


@dataclass
class Quantized:
    vectors: Tensor  # [..., dim]: the chosen entries, concatenated over the codebooks
    probs: Tensor  # [..., G, V]: softmax of the logits, no Gumbel noise (diversity loss, perplexity)
    codes: Tensor  # [..., G]: argmax of the logits, no Gumbel noise (code perplexity)


class GumbelQuantizer(nn.Module):
    """x [..., in_dim] -> `Quantized` with `codebooks` x `entries` codewords of dim // codebooks.
    Init as fairseq: logit weights N(0, 1), biases 0, codewords U(0, 1)."""

    def __init__(self, in_dim: int, dim: int, codebooks: int = 2, entries: int = 320) -> None:
        super().__init__()
        if dim % codebooks:
            raise ValueError(f"quantised dim {dim} is not divisible by {codebooks} codebooks")
        self.codebooks, self.entries, self.dim = codebooks, entries, dim
        self.logits = nn.Linear(in_dim, codebooks * entries)
        nn.init.normal_(self.logits.weight)
        nn.init.zeros_(self.logits.bias)
        self.codewords = nn.Parameter(torch.rand(codebooks, entries, dim // codebooks))

    def forward(self, x: Tensor, temperature: float) -> Quantized:
        logits = rearrange(self.logits(x).float(), "... (g v) -> ... g v", g=self.codebooks)
        codes = logits.argmax(-1)
        if self.training:
            one_hot = F.gumbel_softmax(logits, tau=temperature, hard=True)
        else:
            one_hot = F.one_hot(codes, self.entries).to(logits.dtype)
        vectors = torch.einsum("...gv,gvd->...gd", one_hot.to(self.codewords.dtype), self.codewords)
        return Quantized(rearrange(vectors, "... g d -> ... (g d)"), logits.softmax(-1), codes)
