"""Self-supervised losses, one per file, each with its formula and source in the docstring.

Losses that use the batch (in-batch negatives, batch statistics) take `gather_distributed`: under
DDP they then see the features of all ranks, gathered with gradient, and DDP's average over ranks
gives the gradient of the same loss on the full batch. `reference.py` holds slow, readable
reimplementations used by the tests and tools/bench_losses.py.

Each registers with `@register_loss(name)`; pick one by name with `build_loss(name, **kwargs)`
(the names in `mmssl.registry.LOSSES`).
"""
from __future__ import annotations

from torch import nn

from mmssl.losses.barlow_twins import BarlowTwinsLoss
from mmssl.losses.byol import BYOLLoss
from mmssl.losses.cross_pixel_flow import CrossPixelFlowLoss
from mmssl.losses.dense_predictive import DensePredictiveLoss
from mmssl.losses.dino import DINOLoss
from mmssl.losses.margin import MarginContrastiveLoss
from mmssl.losses.moco import MoCoLoss
from mmssl.losses.nt_xent import InfoNCELoss, NTXentLoss, contrastive_cross_entropy
from mmssl.losses.simsiam import SimSiamLoss
from mmssl.losses.triplet import TripletLoss, squared_distances
from mmssl.losses.vicreg import VICRegLoss
from mmssl.registry import LOSSES


def build_loss(name: str, **kwargs: object) -> nn.Module:
    """The loss registered as `name` (`@register_loss`), built with `kwargs` (its constructor's arguments)."""
    return LOSSES.build(name, **kwargs)


__all__ = [
    "LOSSES", "BYOLLoss", "BarlowTwinsLoss", "CrossPixelFlowLoss", "DINOLoss", "DensePredictiveLoss", "InfoNCELoss", "MarginContrastiveLoss", "MoCoLoss", "NTXentLoss",
    "SimSiamLoss", "TripletLoss", "VICRegLoss", "build_loss", "contrastive_cross_entropy", "squared_distances",
]
