"""The training loss against hand computations (BCE sum/mean convention, KL regulariser)."""

from __future__ import annotations

import math

import pytest
import torch

from pgaudit.training.loss import (
    attention_kl,
    attention_regulariser,
    four_term_bce,
    patch_bce,
)


def _bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_patch_bce_sums_over_patches_and_averages_over_images() -> None:
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 0.5]], [[1.0, -2.0], [0.0, 3.0]]])
    labels = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    per_image = [
        sum(_bce(z, y) for z, y in zip(lg.flatten().tolist(), lb.flatten().tolist(), strict=True))
        for lg, lb in zip(logits, labels, strict=True)
    ]
    assert patch_bce(logits, labels).item() == pytest.approx(sum(per_image) / 2, rel=1e-6)


def test_four_terms_are_the_sum_of_per_group_means() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 3, 3), (torch.rand(8, 3, 3) > 0.7).float()
    total, terms = four_term_bce(logits, labels, 4)
    expected = [patch_bce(logits[i : i + 2], labels[i : i + 2]) for i in range(0, 8, 2)]
    assert len(terms) == 4
    for got, want in zip(terms, expected, strict=True):
        assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert total.item() == pytest.approx(sum(t.item() for t in expected), rel=1e-6)


def test_attention_kl_matches_hand_computation() -> None:
    attention = torch.tensor([[[[0.5, 0.5], [0.9, 0.1]]]])  # [B=1, heads=1, N=2, N=2]
    u = 0.5
    elements = [u * math.log(u / a) for a in (0.5, 0.5, 0.9, 0.1)]
    assert attention_kl(attention).item() == pytest.approx(sum(elements) / 4, rel=1e-6)
    # Same value as torch's kl_div with mean reduction (the official convention).
    ref = torch.nn.functional.kl_div(
        attention.log(), torch.full_like(attention, u), reduction="mean"
    )
    assert attention_kl(attention).item() == pytest.approx(ref.item(), rel=1e-6)
    assert attention_kl(torch.full((2, 3, 4, 4), 0.25)).item() == pytest.approx(0.0, abs=1e-7)


def test_regulariser_weights_each_block() -> None:
    a1 = torch.tensor([[[[0.5, 0.5], [0.9, 0.1]]]])
    a2 = torch.tensor([[[[0.2, 0.8], [0.6, 0.4]]]])
    got = attention_regulariser([a1, a2], (0.01, 0.05)).item()
    assert got == pytest.approx(0.01 * attention_kl(a1).item() + 0.05 * attention_kl(a2).item())
    with pytest.raises(ValueError):
        attention_regulariser([a1], (0.01, 0.05))
