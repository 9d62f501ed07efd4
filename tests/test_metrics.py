"""Metrics against independent computations: scikit-learn, and a slow loop-based AUPRO."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

from pgaudit import metrics as M
from pgaudit.metrics import METRIC_NAMES

# --------------------------------------------------------------------------------------------
# helpers: random data and a slow reference AUPRO


def _random_case(seed: int, n: int = 6, size: int = 9, levels: int | None = None):
    """Labels, image scores, masks (blobs, some touching only diagonally) and maps."""
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1] * (n // 2))
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in np.flatnonzero(labels):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 2, 2)
            masks[i, y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = 1
        masks[i, 0, 0] = masks[i, 1, 1] = 1  # two pixels joined only by a corner
    maps = rng.normal(size=masks.shape) + 1.2 * masks
    if levels is not None:  # coarse values: many ties
        maps = np.round(maps * levels) / levels
    scores = rng.normal(size=n) + labels
    return labels, scores, masks, maps.astype(np.float32)


def _reference_aupro(masks: np.ndarray, maps: np.ndarray, limit: float = 0.3) -> float:
    """Sweep every distinct threshold with plain loops; trapezoids, linear interpolation at limit."""
    eight = np.ones((3, 3), dtype=int)
    regions = []  # (image index, boolean region)
    for i, mask in enumerate(masks):
        labelled, k = ndimage.label(mask > 0, structure=eight)
        regions += [(i, labelled == j) for j in range(1, k + 1)]
    background = masks == 0
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        predicted = maps >= t
        overlaps = [predicted[i][r].sum() / r.sum() for i, r in regions]
        fpr = (predicted & background).sum() / background.sum()
        points.append((float(fpr), float(np.mean(overlaps))))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        if x0 >= limit:
            break
        if x1 > limit:
            y_at = y0 + (limit - x0) * (y1 - y0) / (x1 - x0)
            area += (limit - x0) * (y0 + y_at) / 2
            break
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def _f1_max_sklearn(y: np.ndarray, s: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return float(np.nanmax(f1))


# --------------------------------------------------------------------------------------------
# AUROC and F1-max


@pytest.mark.parametrize("seed", range(5))
def test_image_auroc_and_f1_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    labels[:2] = [0, 1]
    scores = rng.integers(0, 6, 40) + labels  # integer scores: many ties
    assert M.image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert M.image_f1_max(labels, scores) == pytest.approx(
        _f1_max_sklearn(labels, scores), abs=1e-12
    )


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_pixel_auroc_and_f1_match_sklearn(dtype):
    _, _, masks, maps = _random_case(1, n=8, size=16)
    maps = maps.astype(dtype)
    y, s = masks.ravel(), maps.ravel().astype(np.float64)
    assert M.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.pixel_f1_max(masks, maps) == pytest.approx(_f1_max_sklearn(y, s), abs=1e-12)


def test_auroc_extremes():
    labels = [0, 0, 1, 1]
    assert M.image_auroc(labels, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert M.image_auroc(labels, [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert M.image_auroc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert M.image_f1_max(labels, [0.1, 0.2, 0.3, 0.4]) == 1.0


# --------------------------------------------------------------------------------------------
# AUPRO


def test_aupro_hand_computed():
    # One region of 2 pixels, 2 normal pixels. Curve: (0,0) (0,.5) (.5,.5) (.5,1) (1,1).
    masks = np.array([[[1, 1, 0, 0]]])
    maps = np.array([[[0.9, 0.5, 0.7, 0.1]]])
    assert M.aupro(masks, maps) == pytest.approx(0.5)  # PRO 0.5 over FPR [0, 0.3]
    assert M.aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.75)
    assert M.aupro(masks, maps, fpr_limit=0.6) == pytest.approx((0.25 + 0.1) / 0.6)


def test_aupro_regions_use_8_connectivity():
    # The corner pixel touches the 3-pixel L diagonally: one region of 4 pixels (4-connectivity
    # would make two regions and a PRO of mean(1, 0) = 0.5 at the top threshold).
    masks = np.zeros((1, 4, 4))
    masks[0, 0, 0] = 1
    masks[0, 1, 1] = masks[0, 1, 2] = masks[0, 2, 1] = 1
    maps = np.zeros((1, 4, 4))
    maps[0, 0, 0] = 1.0
    # Top threshold: PRO 1/4 at FPR 0; next (all pixels): PRO 1 at FPR 1.
    expected = (0.25 * 0.3 + 0.3 * (0.75 * 0.3) / 2) / 0.3
    assert M.aupro(masks, maps) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_aupro_matches_slow_reference(seed, limit):
    _, _, masks, maps = _random_case(seed, levels=4 if seed % 2 else None)
    expected = _reference_aupro(masks, maps, limit)
    assert M.aupro(masks, maps, fpr_limit=limit) == pytest.approx(expected, abs=1e-10)


def test_aupro_bounds_and_known_values():
    _, _, masks, _ = _random_case(3)
    assert M.aupro(masks, masks.astype(np.float32)) == pytest.approx(1.0)
    assert M.aupro(masks, -masks.astype(np.float32)) == pytest.approx(0.0)
    # A constant map: one threshold, the curve is the diagonal, area fpr_limit / 2.
    assert M.aupro(masks, np.zeros(masks.shape)) == pytest.approx(0.15)
    rng = np.random.default_rng(0)
    for _ in range(20):
        value = M.aupro(masks, rng.normal(size=masks.shape) + rng.normal() * masks)
        assert 0.0 <= value <= 1.0


def test_aupro_counts_every_region_equally():
    # A large and a small region in different images: finding only the large one gives PRO 0.5.
    masks = np.zeros((2, 6, 6))
    masks[0, :4, :4] = 1
    masks[1, 0, 0] = 1
    maps = masks.copy()
    maps[1, 0, 0] = 0
    maps[0, 5, 5] = 0.5  # one false positive at the second threshold
    # 55 normal pixels. Thresholds: 1 -> (0, .5); 0.5 -> (1/55, .5); 0 -> (1, 1).
    fpr1 = 1 / 55
    y_at = 0.5 + (0.3 - fpr1) * 0.5 / (1 - fpr1)
    expected = (fpr1 * 0.5 + (0.3 - fpr1) * (0.5 + y_at) / 2) / 0.3
    assert M.aupro(masks, maps) == pytest.approx(expected)


def test_pixel_metrics_run_on_large_float16_maps():
    rng = np.random.default_rng(0)
    masks = np.zeros((100, 128, 128), dtype=bool)
    masks[50:, 40:60, 30:70] = True
    maps = (rng.normal(size=masks.shape) + 2 * masks).astype(np.float16)
    result = M.evaluate(np.r_[np.zeros(50), np.ones(50)], rng.normal(size=100), masks, maps)
    assert 0.5 < result["aupro"].value < 1.0
    assert result["pixel_auroc"].value > 0.9


# --------------------------------------------------------------------------------------------
# undefined metrics and bad input


def test_undefined_metrics_raise_with_reason():
    with pytest.raises(M.UndefinedMetricError, match="only normal images"):
        M.image_auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(M.UndefinedMetricError, match="only anomalous images"):
        M.image_f1_max([1, 1], [0.1, 0.2])
    with pytest.raises(M.UndefinedMetricError, match="no ground-truth masks"):
        M.aupro(None, np.zeros((1, 2, 2)))
    with pytest.raises(M.UndefinedMetricError, match="no anomalous pixels"):
        M.pixel_auroc(np.zeros((2, 3, 3)), np.ones((2, 3, 3)))
    with pytest.raises(M.UndefinedMetricError, match="no normal pixels"):
        M.aupro(np.ones((1, 3, 3)), np.ones((1, 3, 3)))
    assert issubclass(M.UndefinedMetricError, ValueError)


def test_bad_input_is_a_plain_value_error():
    for call, match in [
        (lambda: M.image_auroc([0, 1, 2], [0.1, 0.2, 0.3]), "labels must be 0"),
        (lambda: M.image_auroc([0, 1], [0.1]), "shape"),
        (lambda: M.image_auroc([0, 1], [0.1, np.nan]), "NaN"),
        (lambda: M.pixel_auroc(np.zeros((2, 3, 3)), np.zeros((2, 3, 4))), "shape"),
    ]:
        with pytest.raises(ValueError, match=match) as info:
            call()
        assert not isinstance(info.value, M.UndefinedMetricError)


def test_evaluate_reports_undefined_metrics_as_none_with_reason():
    result = M.evaluate([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert list(result) == list(METRIC_NAMES)
    assert result["image_auroc"] == M.Estimate(0.75, None, None)
    for name in ("pixel_auroc", "aupro", "pixel_f1_max"):
        assert result[name] == M.Estimate(None, None, "no ground-truth masks")
    one_class = M.evaluate([0, 0], [0.1, 0.2], np.zeros((2, 3, 3)), np.ones((2, 3, 3)))
    assert one_class["image_auroc"].value is None
    assert "only normal images" in one_class["image_auroc"].reason
    assert "no anomalous pixels" in one_class["aupro"].reason
    no_maps = M.evaluate([0, 1], [0.1, 0.2], np.zeros((2, 3, 3)), None)
    assert no_maps["pixel_auroc"].reason == "no anomaly maps"


# --------------------------------------------------------------------------------------------
# operating point


def test_threshold_at_tpr_is_the_largest_keeping_95_percent():
    labels = np.r_[np.zeros(5), np.ones(20)]
    scores = np.r_[[0.5, 1.5, 2.5, 3.5, 30.0], np.arange(1, 21, dtype=float)]
    t = M.threshold_at_tpr(labels, scores)
    assert t == 2.0  # 19 of 20 anomalous scores are >= 2; any higher threshold keeps 18
    assert M.miss_rate(labels, scores, t) == pytest.approx(0.05)
    assert M.false_alarm_rate(labels, scores, t) == pytest.approx(3 / 5)
    assert M.threshold_at_tpr(labels, scores, tpr=1.0) == 1.0
    # With ties at the threshold every tied anomalous image counts as detected.
    assert M.threshold_at_tpr([1, 1, 1, 1], [1.0, 1.0, 1.0, 5.0], tpr=0.5) == 1.0


def test_operating_point_on_attacked_scores():
    labels = [0, 0, 1, 1]
    t = M.threshold_at_tpr(labels, [0.1, 0.2, 0.8, 0.9])
    attacked = [0.85, 0.2, 0.3, 0.95]
    point = M.operating_point(labels, attacked, t)
    assert point["miss_rate"].value == 0.5
    assert point["false_alarm_rate"].value == 0.5
    undefined = M.operating_point(labels, attacked, None)
    assert undefined["miss_rate"].value is None and undefined["miss_rate"].reason
    with pytest.raises(M.UndefinedMetricError):
        M.threshold_at_tpr([0, 0], [0.1, 0.2])


# --------------------------------------------------------------------------------------------
# worst case over attacks


def test_worst_case_scores_per_example():
    labels = [0, 1, 0, 1]
    a = [0.1, 0.9, 0.5, 0.4]
    b = [0.3, 0.7, 0.2, 0.6]
    np.testing.assert_array_equal(M.worst_case_scores(labels, a, b), [0.3, 0.7, 0.5, 0.4])
    # The per-example worst case is at least as bad as every attack on its own.
    auc = M.image_auroc(labels, M.worst_case_scores(labels, a, b))
    assert auc <= min(M.image_auroc(labels, a), M.image_auroc(labels, b))
    with pytest.raises(ValueError):
        M.worst_case_scores(labels)


def test_worst_case_maps_per_pixel():
    masks = np.array([[[0, 1], [1, 0]]])
    a = np.array([[[0.1, 0.9], [0.2, 0.8]]], dtype=np.float16)
    b = np.array([[[0.4, 0.5], [0.6, 0.3]]], dtype=np.float16)
    out = M.worst_case_maps(masks, a, b)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, np.array([[[0.4, 0.5], [0.2, 0.8]]], dtype=np.float16))


# --------------------------------------------------------------------------------------------
# bootstrap


def test_bootstrap_is_deterministic_and_brackets_the_value():
    labels, scores, masks, maps = _random_case(2, n=20, size=12)
    first = M.evaluate(labels, scores, masks, maps, bootstrap=200, seed=7)
    again = M.evaluate(labels, scores, masks, maps, bootstrap=200, seed=7)
    other = M.evaluate(labels, scores, masks, maps, bootstrap=200, seed=8)
    assert first == again
    assert first["image_auroc"].ci != other["image_auroc"].ci
    for name in METRIC_NAMES:
        lo, hi = first[name].ci
        assert 0.0 <= lo <= hi <= 1.0
        assert lo - 0.02 <= first[name].value <= hi + 0.02
        assert hi - lo > 0.0


def test_bootstrap_equals_explicit_resampling():
    # Resample b is the b-th draw rng.integers(0, n, n) of default_rng(seed) (documented).
    labels, scores, masks, maps = _random_case(4, n=10, size=8, levels=3)
    boot = 25
    result = M.evaluate(labels, scores, masks, maps, bootstrap=boot, seed=3, bootstrap_levels=4096)
    rng = np.random.default_rng(3)
    values: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
    for _ in range(boot):
        idx = rng.integers(0, labels.size, labels.size)
        y, s, m, a = labels[idx], scores[idx], masks[idx], maps[idx]
        if 0 < y.sum() < y.size:
            values["image_auroc"].append(roc_auc_score(y, s))
            values["image_f1_max"].append(_f1_max_sklearn(y, s))
        if m.any():
            values["pixel_auroc"].append(roc_auc_score(m.ravel(), a.ravel()))
            values["pixel_f1_max"].append(_f1_max_sklearn(m.ravel(), a.ravel()))
            values["aupro"].append(_reference_aupro(m, a))
    for name in METRIC_NAMES:
        expected = np.percentile(values[name], [2.5, 97.5])
        np.testing.assert_allclose(result[name].ci, expected, atol=1e-9, err_msg=name)


def test_bootstrap_skips_undefined_resamples():
    # One anomalous image among 12: many resamples miss it and are skipped, not counted as 0.
    labels = np.r_[np.zeros(11), 1]
    scores = np.r_[np.linspace(0, 1, 11), 2.0]
    result = M.evaluate(labels, scores, bootstrap=100, seed=0)
    assert result["image_auroc"].ci == (1.0, 1.0)
    none_defined = M.evaluate(
        [0, 1], [0.0, 1.0], np.zeros((2, 2, 2)), np.ones((2, 2, 2)), bootstrap=5
    )
    assert none_defined["aupro"].value is None and none_defined["aupro"].ci is None
