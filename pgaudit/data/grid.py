"""Ground truth on a detector's logit grid: the patch labels that training and attacks share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mask_to_grid(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """Patch labels on the logit grid: a cell is anomalous if any of its pixels is (``[B,h,w]``).

    ``masks``: ``[B, H, W]`` in {0, 1}. When H, W are multiples of the grid this is exact max
    pooling; otherwise adaptive max pooling (cells overlap by at most one pixel).
    """
    pooled = F.adaptive_max_pool2d(masks.unsqueeze(1).float(), grid)
    return (pooled.squeeze(1) > 0).to(masks.dtype if masks.is_floating_point() else torch.float32)
