"""The PatchGuard training loss (DESIGN.md §2): per-patch BCE + attention regulariser.

- :func:`patch_bce`: binary cross-entropy with logits, **summed over patches, averaged over images**.
- :func:`attention_kl`: ``KL(uniform ‖ attention)`` mean-reduced over every element (the convention
  of ``F.kl_div(log A, U, reduction="mean")``), i.e. ``mean_{b,h,i,j} u·(log u − log A_bhij)`` with
  ``u = 1/N``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: Floor on attention probabilities before the log (softmax outputs can underflow to 0).
_ATTN_FLOOR = 1e-12


def patch_bce(logits: Tensor, labels: Tensor) -> Tensor:
    """BCE-with-logits summed over the patches of each image, then averaged over images."""
    per_patch = F.binary_cross_entropy_with_logits(
        logits.flatten(1), labels.flatten(1).to(logits.dtype), reduction="none"
    )
    return per_patch.sum(dim=1).mean()


def attention_kl(attention: Tensor) -> Tensor:
    """``KL(uniform ‖ attention)``, mean-reduced over all elements of ``[B, heads, N, N]``."""
    n = attention.shape[-1]
    log_u = -torch.log(torch.tensor(float(n), dtype=attention.dtype, device=attention.device))
    log_a = attention.clamp_min(_ATTN_FLOOR).log()
    return (log_u.exp() * (log_u - log_a)).mean()


def attention_regulariser(attentions: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Weighted sum of :func:`attention_kl` over the regularised blocks."""
    if len(attentions) != len(weights):
        raise ValueError(f"{len(attentions)} attention maps but {len(weights)} weights")
    total = attentions[0].new_zeros(()) if attentions else torch.zeros(())
    for attention, weight in zip(attentions, weights, strict=True):
        total = total + weight * attention_kl(attention)
    return total


def four_term_bce(logits: Tensor, labels: Tensor, groups: int) -> tuple[Tensor, list[Tensor]]:
    """Sum of :func:`patch_bce` over ``groups`` equal consecutive slices of a concatenated batch.

    The training forward stacks (clean normal, adversarial normal, clean pseudo-anomalies,
    adversarial pseudo-anomalies); each is one term of the loss. Returns (sum, terms).
    """
    terms = [
        patch_bce(lg, lb) for lg, lb in zip(logits.chunk(groups), labels.chunk(groups), strict=True)
    ]
    return torch.stack(terms).sum(), terms


def patch_kl(clean_logits: Tensor, adv_logits: Tensor) -> Tensor:
    """``KL(Bernoulli(σ(clean)) ‖ Bernoulli(σ(adv)))`` summed over patches, averaged over images.

    The TRADES term (Zhang et al. 2019) for per-patch binary outputs; gradients flow through both
    arguments, as in TRADES.
    """
    c, a = clean_logits.flatten(1), adv_logits.flatten(1)
    p = torch.sigmoid(c)
    kl = p * (F.logsigmoid(c) - F.logsigmoid(a)) + (1 - p) * (F.logsigmoid(-c) - F.logsigmoid(-a))
    return kl.sum(dim=1).mean()
