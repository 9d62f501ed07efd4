"""Detection and localization metrics: pure functions over numpy arrays.

Inputs (array-likes; CPU torch tensors work too):

- ``labels``: ``[N]``, 0 normal / 1 anomalous, one per test image;
- ``scores``: ``[N]`` image anomaly scores, higher means more anomalous;
- ``masks``: ``[N, H, W]`` ground truth, a pixel is anomalous where ``mask >= 0.5`` (bool, {0, 1}
  and {0, 255} masks all work);
- ``maps``: ``[N, H, W]`` pixel anomaly maps (float16, float32 or float64), same shape as masks.

Every metric function returns a float or raises :class:`UndefinedMetricError` (a ``ValueError``)
whose message is the reason, e.g. "only normal images among the test images". Malformed input
(wrong shapes, NaN scores, labels other than 0/1) raises a plain ``ValueError``.
:func:`evaluate` and :func:`operating_point` wrap them into :class:`Estimate` tuples (value, 95 %
interval, reason); :mod:`pgaudit.results` turns those into results.json entries.

How the curves are computed: the scores are sorted once (descending); the cumulative sums of
per-item weights at the end of each run of equal scores give, for every distinct threshold ``t``
(prediction: ``score >= t``), the true and false positives and, for AUPRO, the summed per-region
overlap. Tied scores therefore move together, as in scikit-learn. Resampling images with
replacement is the same as weighting each image by how often it was drawn, so bootstrap resamples
reuse that work: image metrics reuse the sort (a gather and two cumulative sums per resample),
pixel metrics per-image histograms over fixed thresholds (a small matrix product per resample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "METRIC_NAMES",
    "Estimate",
    "UndefinedMetricError",
    "aupro",
    "evaluate",
    "false_alarm_rate",
    "image_auroc",
    "image_f1_max",
    "miss_rate",
    "operating_point",
    "pixel_auroc",
    "pixel_f1_max",
    "threshold_at_tpr",
    "worst_case_maps",
    "worst_case_scores",
]

METRIC_NAMES = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")
"""What :func:`evaluate` returns, in this order."""
AUPRO_FPR_LIMIT = 0.3
"""AUPRO integrates the PRO curve up to this false-positive rate (MVTec AD benchmark)."""
DEFAULT_TPR = 0.95
"""The operating point keeps this fraction of the anomalous clean images detected."""
BOOTSTRAP_LEVELS = 1024
"""Pixel bootstrap curves use this many score quantiles per pixel class as thresholds."""

# 8-connectivity inside each image, no connectivity across the image axis of an [N, H, W] stack.
_REGION_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_REGION_STRUCTURE[1] = True
# Cap on the number of (resample x item) weights held in memory at once during the bootstrap.
_CHUNK_ELEMENTS = 4_000_000


class UndefinedMetricError(ValueError):
    """The metric is undefined for this input; the message is the reason (one short phrase)."""


class Estimate(NamedTuple):
    """A metric's value (None when undefined, with the ``reason``) and bootstrap 95 % interval."""

    value: float | None
    ci: tuple[float, float] | None = None
    reason: str | None = None


# --------------------------------------------------------------------------------------------
# input checks


def _as_labels(labels: ArrayLike) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if arr.size and not np.isin(arr, (0, 1)).all():
        found = np.unique(arr[~np.isin(arr, (0, 1))])[:5].tolist()
        raise ValueError(f"labels must be 0 (normal) or 1 (anomalous), found {found}")
    return arr.astype(np.int8)


def _as_scores(scores: ArrayLike, n: int, what: str = "scores") -> np.ndarray:
    arr = np.asarray(scores)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{what} must have shape ({n},) like the labels, got {arr.shape}")
    arr = _as_float(arr, what)
    return arr


def _as_float(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return arr


def _as_masks(masks: ArrayLike) -> np.ndarray:
    arr = np.asarray(masks)
    if arr.ndim != 3:
        raise ValueError(f"masks must have shape [N, H, W], got {arr.shape}")
    return arr >= 0.5 if arr.dtype != bool else arr


def _as_maps(maps: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(maps)
    if arr.shape != shape:
        raise ValueError(f"maps must have the shape of the masks {shape}, got {arr.shape}")
    return _as_float(arr, "maps")


# --------------------------------------------------------------------------------------------
# the shared engine: items sorted once, evaluated under per-image weights


@dataclass(frozen=True)
class _Ranking:
    """Items (images or pixels) sorted by descending score.

    ``positive``: the class of each sorted item. ``ends``: the last sorted position of each run of
    equal scores (one per distinct threshold). ``image``: the image of each sorted item, needed
    only to weight images (the bootstrap of image metrics). ``pro``: per-item weight
    ``1 / |region|`` (0 outside regions) and ``n_regions``, for AUPRO.
    """

    positive: np.ndarray
    ends: np.ndarray
    image: np.ndarray | None = None
    pro: np.ndarray | None = None
    n_regions: int = 0

    @classmethod
    def build(
        cls,
        scores: np.ndarray,
        positive: np.ndarray,
        *,
        image: np.ndarray | None = None,
        pro: np.ndarray | None = None,
        n_regions: int = 0,
    ) -> _Ranking:
        order = np.argsort(scores)[::-1]
        ranked = scores[order]
        ends = np.append(np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1)
        return cls(
            positive=positive[order],
            ends=ends,
            image=None if image is None else image[order],
            pro=None if pro is None else pro[order],
            n_regions=n_regions,
        )

    def curves(self, counts: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Cumulative counts at each distinct threshold, one row per weighting.

        ``counts``: ``[B, n_images]`` image multiplicities (a bootstrap resample each; image
        rankings only), or None for the data as given. Returns ``tp``, ``fp`` (``[B, T]``) and,
        for the data as given with regions, ``pro`` (summed overlap fractions) and ``regions``.
        """
        if counts is None:
            tp = np.cumsum(self.positive, dtype=np.int64)[self.ends]
            out = {
                "tp": tp[None].astype(np.float64),
                "fp": (self.ends + 1 - tp)[None].astype(np.float64),
            }
            if self.pro is not None:
                out["pro"] = np.cumsum(self.pro)[self.ends][None]
                out["regions"] = np.array([float(self.n_regions)])
            return out
        assert self.image is not None, "weighting needs the image of each item"
        weight = counts[:, self.image]
        pos = np.where(self.positive, weight, 0.0)
        return {
            "tp": np.cumsum(pos, axis=1)[:, self.ends],
            "fp": np.cumsum(weight - pos, axis=1)[:, self.ends],
        }


def _with_origin(x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((x.shape[0], 1)), x], axis=1)


def _auroc_rows(tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Trapezoidal area under the ROC curve of each row (NaN where a class is absent)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = _with_origin(tp / tp[:, -1:])
        fpr = _with_origin(fp / fp[:, -1:])
    return np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]), axis=1) / 2


def _f1_max_rows(tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Best F1 = 2TP / (2TP + FP + FN) over all thresholds, per row."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.max(2 * tp / (tp + fp + tp[:, -1:]), axis=1)


def _pro_area_rows(fpr: np.ndarray, pro: np.ndarray, limit: float) -> np.ndarray:
    """Area under (fpr, pro) from 0 to ``limit`` divided by ``limit``, per row.

    Rows start at (0, 0) and end at (1, 1), both non-decreasing. Trapezoids over the segments that
    end at or before ``limit``; the segment that crosses ``limit`` is cut there, its PRO value
    linearly interpolated.
    """
    x0, x1 = fpr[:, :-1], fpr[:, 1:]
    y0, y1 = pro[:, :-1], pro[:, 1:]
    inside = x1 <= limit
    area = np.sum(np.where(inside, (x1 - x0) * (y0 + y1) / 2, 0.0), axis=1)
    crossing = ~inside
    has_cross = crossing.any(axis=1)
    k = np.argmax(crossing, axis=1)
    rows = np.arange(fpr.shape[0])
    a, b, ya, yb = x0[rows, k], x1[rows, k], y0[rows, k], y1[rows, k]
    with np.errstate(invalid="ignore", divide="ignore"):
        y_lim = ya + (limit - a) * (yb - ya) / (b - a)
    area = area + np.where(has_cross, (limit - a) * (ya + y_lim) / 2, 0.0)
    return np.clip(area / limit, 0.0, 1.0)


def _aupro_rows(curves: dict[str, np.ndarray], limit: float) -> np.ndarray:
    fp, pro, regions = curves["fp"], curves["pro"], curves["regions"]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = _with_origin(fp / fp[:, -1:])
        pro = _with_origin(pro / regions[:, None])
    return _pro_area_rows(fpr, pro, limit)


# --------------------------------------------------------------------------------------------
# image and pixel rankings


def _image_ranking(labels: np.ndarray, scores: np.ndarray) -> _Ranking:
    return _Ranking.build(scores, labels.astype(bool), image=np.arange(labels.size))


def _pixel_regions(gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected regions (8-connectivity) of each image: per-pixel region id (0 = normal pixel,
    flattened) and the image of each region (index 0 unused)."""
    from scipy import ndimage

    regions, n_regions = ndimage.label(gt, structure=_REGION_STRUCTURE)
    regions = regions.reshape(-1)
    region_image = np.zeros(n_regions + 1, dtype=np.intp)
    inside = np.flatnonzero(regions)
    region_image[regions[inside]] = inside // (gt.shape[1] * gt.shape[2])
    return regions, region_image


def _pixel_ranking(gt: np.ndarray, maps: np.ndarray, *, with_regions: bool) -> _Ranking:
    """Rank all pixels of all images (with AUPRO region weights if asked)."""
    if not with_regions:
        return _Ranking.build(maps.reshape(-1), gt.reshape(-1))
    regions, region_image = _pixel_regions(gt)
    sizes = np.bincount(regions, minlength=region_image.size).astype(np.float64)
    inverse = np.zeros_like(sizes)
    inverse[1:] = 1.0 / sizes[1:]
    return _Ranking.build(
        maps.reshape(-1), gt.reshape(-1), pro=inverse[regions], n_regions=region_image.size - 1
    )


@dataclass(frozen=True)
class _BinnedPixels:
    """Per-image pixel histograms over a fixed set of thresholds, for the pixel bootstrap.

    The thresholds are ``levels`` quantiles of the normal pixels' scores and ``levels`` of the
    anomalous pixels' (so both FPR and TPR are finely resolved). Column ``j`` (thresholds in
    descending order) counts, per image, the pixels whose highest threshold ``<= score`` is
    threshold ``j``; cumulative sums over columns give the exact curves at those thresholds.
    """

    pos: np.ndarray
    neg: np.ndarray
    pro: np.ndarray
    regions: np.ndarray

    @classmethod
    def build(cls, gt: np.ndarray, maps: np.ndarray, levels: int) -> _BinnedPixels:
        n = gt.shape[0]
        flat_gt = gt.reshape(-1)
        scores = maps.reshape(-1)
        q = np.linspace(0.0, 1.0, levels)
        classes = [scores[flat_gt], scores[~flat_gt]]
        edges = np.unique(np.concatenate([np.quantile(c, q) for c in classes if c.size]))
        t = edges.size
        column = t - np.searchsorted(edges, scores, side="right")  # 0 = highest threshold
        cell = np.repeat(np.arange(n, dtype=np.intp), gt[0].size) * t + column
        regions, region_image = _pixel_regions(gt)
        sizes = np.bincount(regions, minlength=region_image.size).astype(np.float64)
        inverse = np.zeros_like(sizes)
        inverse[1:] = 1.0 / sizes[1:]

        def hist(weights: np.ndarray) -> np.ndarray:
            return np.bincount(cell, weights=weights, minlength=n * t).reshape(n, t)

        return cls(
            pos=hist(flat_gt.astype(np.float64)),
            neg=hist((~flat_gt).astype(np.float64)),
            pro=hist(inverse[regions]),
            regions=np.bincount(region_image[1:], minlength=n).astype(np.float64),
        )

    def curves(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Like :meth:`_Ranking.curves`, at the fixed thresholds."""
        return {
            "tp": np.cumsum(counts @ self.pos, axis=1),
            "fp": np.cumsum(counts @ self.neg, axis=1),
            "pro": np.cumsum(counts @ self.pro, axis=1),
            "regions": counts @ self.regions,
        }


def _check_classes(curves: dict[str, np.ndarray], unit: str) -> None:
    """Raise :class:`UndefinedMetricError` unless both classes are present."""
    p, n = curves["tp"][0, -1], curves["fp"][0, -1]
    if unit == "images":
        if p == 0:
            raise UndefinedMetricError("only normal images among the test images")
        if n == 0:
            raise UndefinedMetricError("only anomalous images among the test images")
    else:
        if p == 0:
            raise UndefinedMetricError("no anomalous pixels in the ground-truth masks")
        if n == 0:
            raise UndefinedMetricError("no normal pixels in the ground-truth masks")


# --------------------------------------------------------------------------------------------
# public metrics


def image_auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve of the image scores (ties count one half, as in scikit-learn)."""
    labels = _as_labels(labels)
    curves = _image_ranking(labels, _as_scores(scores, labels.size)).curves()
    _check_classes(curves, "images")
    return float(_auroc_rows(curves["tp"], curves["fp"])[0])


def image_f1_max(labels: ArrayLike, scores: ArrayLike) -> float:
    """Best F1 score of the image scores over all thresholds (prediction: score >= threshold).

    Undefined with one class only: with only anomalous images a constant detector reaches 1.
    """
    labels = _as_labels(labels)
    curves = _image_ranking(labels, _as_scores(scores, labels.size)).curves()
    _check_classes(curves, "images")
    return float(_f1_max_rows(curves["tp"], curves["fp"])[0])


def _pixel_inputs(masks: ArrayLike | None, maps: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    if masks is None:
        raise UndefinedMetricError("no ground-truth masks")
    if maps is None:
        raise UndefinedMetricError("no anomaly maps")
    gt = _as_masks(masks)
    return gt, _as_maps(maps, gt.shape)


def pixel_auroc(masks: ArrayLike | None, maps: ArrayLike | None) -> float:
    """Area under the ROC curve over all pixels of all test images."""
    gt, values = _pixel_inputs(masks, maps)
    curves = _pixel_ranking(gt, values, with_regions=False).curves()
    _check_classes(curves, "pixels")
    return float(_auroc_rows(curves["tp"], curves["fp"])[0])


def pixel_f1_max(masks: ArrayLike | None, maps: ArrayLike | None) -> float:
    """Best F1 score over all pixels of all test images, over all thresholds."""
    gt, values = _pixel_inputs(masks, maps)
    curves = _pixel_ranking(gt, values, with_regions=False).curves()
    _check_classes(curves, "pixels")
    return float(_f1_max_rows(curves["tp"], curves["fp"])[0])


def aupro(
    masks: ArrayLike | None, maps: ArrayLike | None, *, fpr_limit: float = AUPRO_FPR_LIMIT
) -> float:
    """Normalised area under the per-region-overlap curve, as in the MVTec AD benchmark.

    Regions are the connected components (8-connectivity) of each image's ground truth. For every
    distinct threshold ``t`` (prediction: ``map >= t``) the PRO is the mean, over all regions of all
    images, of the fraction of the region predicted anomalous, and the FPR is the fraction of all
    normal pixels of all images predicted anomalous. The (FPR, PRO) curve from (0, 0) to (1, 1) is
    integrated with trapezoids up to ``fpr_limit`` (the PRO at ``fpr_limit`` linearly
    interpolated) and divided by ``fpr_limit``, so the result lies in [0, 1]: 1 for a perfect map,
    about ``fpr_limit / 2`` for a random one.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    gt, values = _pixel_inputs(masks, maps)
    curves = _pixel_ranking(gt, values, with_regions=True).curves()
    _check_classes(curves, "pixels")
    return float(_aupro_rows(curves, fpr_limit)[0])


def threshold_at_tpr(labels: ArrayLike, scores: ArrayLike, tpr: float = DEFAULT_TPR) -> float:
    """The operating threshold: the largest ``t`` that still flags ``tpr`` of the anomalous images.

    Precisely: with ``n`` anomalous images and ``k = ceil(tpr * n)``, ``t`` is the ``k``-th largest
    anomalous score, so at least ``tpr`` of them have ``score >= t`` and any higher threshold flags
    fewer. (The smallest such ``t`` would be minus infinity; the largest keeps false alarms
    lowest.) Normal images play no part. Undefined without anomalous images.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    labels = _as_labels(labels)
    values = _as_scores(scores, labels.size)
    anomalous = np.sort(values[labels == 1])[::-1]
    if anomalous.size == 0:
        raise UndefinedMetricError("no anomalous images to set the threshold on")
    k = max(1, math.ceil(tpr * anomalous.size - 1e-9))
    return float(anomalous[k - 1])


def miss_rate(labels: ArrayLike, scores: ArrayLike, threshold: float) -> float:
    """Fraction of anomalous images with ``score < threshold`` (missed defects)."""
    labels = _as_labels(labels)
    values = _as_scores(scores, labels.size)
    anomalous = values[labels == 1]
    if anomalous.size == 0:
        raise UndefinedMetricError("no anomalous images among the test images")
    return float(np.mean(anomalous < threshold))


def false_alarm_rate(labels: ArrayLike, scores: ArrayLike, threshold: float) -> float:
    """Fraction of normal images with ``score >= threshold`` (false alarms)."""
    labels = _as_labels(labels)
    values = _as_scores(scores, labels.size)
    normal = values[labels == 0]
    if normal.size == 0:
        raise UndefinedMetricError("no normal images among the test images")
    return float(np.mean(normal >= threshold))


def operating_point(
    labels: ArrayLike, scores: ArrayLike, threshold: float | None
) -> dict[str, Estimate]:
    """``{"miss_rate": Estimate, "false_alarm_rate": Estimate}`` at a threshold from clean data.

    ``scores`` may be clean or attacked (e.g. :func:`worst_case_scores`); ``threshold`` comes from
    :func:`threshold_at_tpr` on the clean scores, or None when that was undefined.
    """
    out: dict[str, Estimate] = {}
    for name, fn in (("miss_rate", miss_rate), ("false_alarm_rate", false_alarm_rate)):
        if threshold is None:
            out[name] = Estimate(None, None, "no operating threshold (no anomalous clean images)")
            continue
        try:
            out[name] = Estimate(float(fn(labels, scores, threshold)))
        except UndefinedMetricError as exc:
            out[name] = Estimate(None, None, str(exc))
    return out


# --------------------------------------------------------------------------------------------
# worst case over attacks


def worst_case_scores(labels: ArrayLike, *score_arrays: ArrayLike) -> np.ndarray:
    """Per-image worst case over several score arrays (AutoAttack's per-example convention).

    For each normal image the highest score any array gives, for each anomalous image the lowest.
    Pass the clean scores too when the zero perturbation should count (it lies in every ε-ball).
    """
    if not score_arrays:
        raise ValueError("worst_case_scores needs at least one score array")
    labels = _as_labels(labels)
    stacked = np.stack([_as_scores(s, labels.size) for s in score_arrays])
    return np.where(labels == 1, stacked.min(axis=0), stacked.max(axis=0))


def worst_case_maps(masks: ArrayLike, *maps: ArrayLike) -> np.ndarray:
    """Per-pixel worst case over several ``[N, H, W]`` maps.

    Where the ground truth is normal (mask 0) the highest value any map gives, where it is
    anomalous (mask 1) the lowest. The result is a pessimistic composite: different pixels may
    take their worst value from different attacks, so no single perturbation need reach it.
    Keeps the maps' float dtype (float16 stays float16).
    """
    if not maps:
        raise ValueError("worst_case_maps needs at least one map array")
    gt = _as_masks(masks)
    arrays = [np.asarray(m) for m in maps]
    for arr in arrays:
        _as_maps(arr, gt.shape)  # shape and finiteness checks
    dtype = np.result_type(*arrays)
    if not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float32)
    out = arrays[0].astype(dtype, copy=True)
    for values in arrays[1:]:
        out = np.where(gt, np.minimum(out, values), np.maximum(out, values)).astype(dtype)
    return out


# --------------------------------------------------------------------------------------------
# evaluate: all metrics, with optional bootstrap CIs


def _resample_counts(n: int, bootstrap: int, seed: int) -> np.ndarray:
    """``[bootstrap, n]`` image multiplicities; resample ``b`` is the ``b``-th draw of
    ``np.random.default_rng(seed).integers(0, n, n)``."""
    rng = np.random.default_rng(seed)
    counts = np.empty((bootstrap, n))
    for b in range(bootstrap):
        counts[b] = np.bincount(rng.integers(0, n, n), minlength=n)
    return counts


def _bootstrap_rows(
    ranking: _Ranking | _BinnedPixels, counts: np.ndarray, names: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Each metric on each resample (NaN where undefined), in memory-bounded chunks."""
    width = ranking.positive.size if isinstance(ranking, _Ranking) else ranking.pos.shape[1]
    step = max(1, _CHUNK_ELEMENTS // max(width, 1))
    values: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, counts.shape[0], step):
        curves = ranking.curves(counts[start : start + step])
        tp, fp = curves["tp"], curves["fp"]
        defined = (tp[:, -1] > 0) & (fp[:, -1] > 0)
        for name in names:
            if name.endswith("auroc"):
                row = _auroc_rows(tp, fp)
            elif name.endswith("f1_max"):
                row = _f1_max_rows(tp, fp)
            else:
                row = _aupro_rows(curves, AUPRO_FPR_LIMIT)
            values[name].append(np.where(defined, row, np.nan))
    return {name: np.concatenate(rows) for name, rows in values.items()}


def _interval(values: np.ndarray) -> tuple[float, float] | None:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def evaluate(
    labels: ArrayLike,
    image_scores: ArrayLike,
    masks: ArrayLike | None = None,
    maps: ArrayLike | None = None,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    bootstrap_levels: int = BOOTSTRAP_LEVELS,
) -> dict[str, Estimate]:
    """All metrics: ``{name: Estimate(value, ci, reason)}``.

    Names: ``image_auroc``, ``pixel_auroc``, ``aupro``, ``image_f1_max``, ``pixel_f1_max``.
    An undefined metric gets ``value`` None and the reason.

    ``bootstrap=B > 0`` adds 95 % percentile intervals: the test images are resampled with
    replacement ``B`` times (``np.random.default_rng(seed)``; the same resamples for every metric),
    each metric is recomputed, and resamples where it is undefined are skipped (``ci`` is None when
    all are). Pixel metrics are bootstrapped with every pixel but on a fixed set of thresholds:
    ``bootstrap_levels`` quantiles of the normal and as many of the anomalous pixel scores. The
    pixels are counted once into per-image histograms over those thresholds, so a resample costs
    one small matrix product (images x thresholds) whatever the image size; the curves at those
    thresholds are exact, and the intervals differ from all-threshold ones by about
    ``1 / bootstrap_levels``. Point values always use every distinct threshold. Same inputs and
    seed give identical intervals.
    """
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    labels = _as_labels(labels)
    n = labels.size
    scores = _as_scores(image_scores, n, "image_scores")
    counts = _resample_counts(n, bootstrap, seed) if bootstrap else None
    out: dict[str, Estimate] = {}

    def record(
        names: tuple[str, ...], ranking: _Ranking, unit: str, boot: _Ranking | _BinnedPixels | None
    ) -> None:
        curves = ranking.curves()
        try:
            _check_classes(curves, unit)
        except UndefinedMetricError as exc:
            for name in names:
                out[name] = Estimate(None, None, str(exc))
            return
        rows = (
            _bootstrap_rows(boot, counts, names) if counts is not None and boot is not None else {}
        )
        for name in names:
            if name.endswith("auroc"):
                value = _auroc_rows(curves["tp"], curves["fp"])[0]
            elif name.endswith("f1_max"):
                value = _f1_max_rows(curves["tp"], curves["fp"])[0]
            else:
                value = _aupro_rows(curves, AUPRO_FPR_LIMIT)[0]
            ci = _interval(rows[name]) if name in rows else None
            out[name] = Estimate(float(value), ci)

    image = _image_ranking(labels, scores)
    record(("image_auroc", "image_f1_max"), image, "images", image)

    pixel_names = ("pixel_auroc", "aupro", "pixel_f1_max")
    try:
        gt, values = _pixel_inputs(masks, maps)
        if gt.shape[0] != n:
            raise ValueError(f"masks must hold one mask per label ({n}), got {gt.shape[0]}")
    except UndefinedMetricError as exc:
        for name in pixel_names:
            out[name] = Estimate(None, None, str(exc))
    else:
        full = _pixel_ranking(gt, values, with_regions=True)
        boot = None if counts is None else _BinnedPixels.build(gt, values, bootstrap_levels)
        record(pixel_names, full, "pixels", boot)
    return {name: out[name] for name in METRIC_NAMES}
