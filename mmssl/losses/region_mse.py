"""Mean squared error over a region of a clip: the L2 reconstruction loss of Context Encoders
(Pathak, Krahenbuhl, Donahue, Darrell, Efros, "Context Encoders: Feature Learning by Inpainting",
CVPR 2016, eq. 1: the error on the dropped region only), also the loss of the other restoration tasks
(denoising, super-resolution), whose region is the corrupted pixels, the whole clip or the dropped frames.
"""
from __future__ import annotations

import torch  # noqa: F401  (the examples' namespace)
from torch import Tensor


def region_mse(prediction: Tensor, target: Tensor, region: Tensor) -> Tensor:
    """loss = sum_i r_i ||p_i - y_i||^2 / (C * sum_i r_i), i over the pixels of the clips

    prediction, target [B, C, T, H, W]; region: bool (or 0/1) broadcastable to [B, 1, T, H, W], True
    where the loss reads the target. Pixels outside the region do not enter the loss, whatever their
    target; an empty region gives 0. A plain function, not a registered loss: it has no state and no
    batch coupling for the reference tests of mmssl.losses to check.

    Examples:
        >>> prediction, target = torch.zeros(1, 3, 2, 4, 4), torch.ones(1, 3, 2, 4, 4)
        >>> region = torch.zeros(1, 1, 2, 4, 4, dtype=torch.bool)
        >>> region[..., :2, :] = True  # the top half of each frame
        >>> float(region_mse(prediction, target, region))
        1.0
    """
    weight = region.to(prediction.dtype).expand(prediction.shape[0], 1, *prediction.shape[2:])
    squared = (prediction - target).pow(2) * weight
    return squared.sum() / (weight.sum() * prediction.shape[1]).clamp(min=1)
