"""Agreement of two models' outputs on the same images: export parity's measurements.

:func:`score_agreement` and :func:`map_agreement` compare a source's and an export's image scores
and pixel maps: max and median ``|Δ|`` relative to the source's range over the images, both
AUROCs and, for image scores, Spearman's rank correlation; :func:`worst_gap` is the larger
max-gap, what ``--max-gap`` / ``max_parity_gap`` bound. Used by ``pgaudit parity`` (:mod:`pgaudit.parity`) and by the
parity section of an audit of an exported file with a surrogate (results.json ``parity``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pgaudit import metrics

#: The default tolerance of the worst clean gap (relative to the source's range), f32 exports.
DEFAULT_MAX_GAP = 1e-3


@dataclass(frozen=True)
class Agreement:
    """One output (image score or pixel map) of both models: gaps relative to the source's range
    over the images, and each model's AUROC on it (None without ground truth)."""

    max_gap: float
    median_gap: float
    source_auroc: float | None
    exported_auroc: float | None
    rank_correlation: float | None = None

    @property
    def auroc_gap(self) -> float | None:
        if self.source_auroc is None or self.exported_auroc is None:
            return None
        return self.exported_auroc - self.source_auroc

    def to_json(self) -> dict[str, Any]:
        out = {
            "max_gap": self.max_gap, "median_gap": self.median_gap,
            "source_auroc": self.source_auroc, "exported_auroc": self.exported_auroc,
            "auroc_gap": self.auroc_gap, "rank_correlation": self.rank_correlation,
        }  # fmt: skip
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in out.items()}  # fmt: skip


def _relative_gaps(source: np.ndarray, exported: np.ndarray) -> tuple[float, float]:
    span = float(source.max() - source.min()) or 1.0
    gap = np.abs(exported.astype(np.float64) - source.astype(np.float64)).ravel() / span
    return float(gap.max()), float(np.median(gap))


def _auroc(fn: Any, *args: Any) -> float | None:
    try:
        return float(fn(*args))
    except metrics.UndefinedMetricError:
        return None


def image_auroc_or_none(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Image AUROC, or None where it is undefined (one class only)."""
    return _auroc(metrics.image_auroc, labels, scores)


def worst_gap(score: Agreement, pixel_map: Agreement | None) -> float:
    """The larger clean max-gap of the image score and the pixel map."""
    return max([score.max_gap] + ([pixel_map.max_gap] if pixel_map is not None else []))


def score_agreement(labels: np.ndarray, source: np.ndarray, exported: np.ndarray) -> Agreement:
    """Image scores ``[N]`` of both models on the same images (``labels`` 0/1)."""
    from scipy.stats import spearmanr

    rho = float(spearmanr(source, exported).statistic) if len(source) > 2 else float("nan")
    return Agreement(
        *_relative_gaps(source, exported),
        image_auroc_or_none(labels, source),
        image_auroc_or_none(labels, exported),
        rank_correlation=rho,
    )


def map_agreement(masks: np.ndarray, source: np.ndarray, exported: np.ndarray) -> Agreement:
    """Pixel maps ``[N, S, S]`` of both models on the same images (``masks`` the ground truth)."""
    return Agreement(
        *_relative_gaps(source, exported),
        _auroc(metrics.pixel_auroc, masks, source),
        _auroc(metrics.pixel_auroc, masks, exported),
    )
