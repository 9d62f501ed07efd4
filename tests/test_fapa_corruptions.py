"""FAPA corruption operations, levels and Perlin noise."""

from __future__ import annotations

import numpy as np
import pytest

from pgaudit.fapa import CORRUPTIONS, LEVELS, corrupt_patch, fractal_noise, perlin_noise
from pgaudit.fapa.corruptions import color_jitter, jitter_maps

OPS = {**CORRUPTIONS, "color_jitter": color_jitter}
SIZES = [(13, 17), (1, 1), (2, 5), (8, 8), (31, 9), (86, 86)]


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("shape", SIZES)
def test_op_keeps_shape_range_and_input(name: str, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    patch = rng.random((3, *shape), dtype=np.float32)
    original = patch.copy()
    out = OPS[name](patch, np.random.default_rng(1))
    assert out.shape == patch.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert np.array_equal(patch, original)  # not modified in place
    again = OPS[name](patch, np.random.default_rng(1))
    assert np.array_equal(out, again)  # deterministic given the generator


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_accepts_channels_last(name: str) -> None:
    patch = np.random.default_rng(2).random((3, 13, 17), dtype=np.float32)
    first = OPS[name](patch, np.random.default_rng(3))
    last = OPS[name](patch.transpose(1, 2, 0), np.random.default_rng(3))
    assert last.shape == (13, 17, 3)
    assert np.allclose(last.transpose(2, 0, 1), first, atol=1e-6)


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_changes_a_textured_patch(name: str) -> None:
    patch = np.random.default_rng(4).random((3, 24, 24), dtype=np.float32)
    changed = [
        not np.allclose(OPS[name](patch, np.random.default_rng(seed)), patch) for seed in range(5)
    ]
    assert any(changed)


def test_op_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match="patch"):
        CORRUPTIONS["swirl"](np.zeros((4, 5, 6), dtype=np.float32), np.random.default_rng(0))


def test_levels_and_corrupt_patch() -> None:
    assert [level.name for level in LEVELS] == ["light", "medium", "heavy"]
    assert [level.max_ops for level in LEVELS] == [1, 2, 4]
    assert LEVELS[2].jitter == (0.8, 1.0)
    patch = np.random.default_rng(5).random((3, 15, 11), dtype=np.float32)
    for level in LEVELS:
        out = corrupt_patch(patch, level, np.random.default_rng(6))
        assert out.shape == patch.shape and 0.0 <= out.min() and out.max() <= 1.0
    only_blur = corrupt_patch(patch, LEVELS[2], np.random.default_rng(6), ("gaussian_blur",))
    assert only_blur.shape == patch.shape


def test_color_jitter_strength_zero_is_identity() -> None:
    patch = np.random.default_rng(7).random((3, 9, 9), dtype=np.float32)
    out = color_jitter(patch, np.random.default_rng(0), strength=0.0)
    assert np.allclose(out, patch, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_jitter_maps_compose_the_steps_in_their_drawn_order(seed: int) -> None:
    grey = np.array([0.299, 0.587, 0.114])
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    pixels = np.random.default_rng(seed).random((3, 50))
    strength, hue = 0.8, 0.5
    matrix, offset = jitter_maps(
        np.array([strength]), pixels.mean(axis=1)[None], np.random.default_rng(seed)
    )
    # The same draws, applied step by step (brightness, contrast, saturation, hue).
    rng = np.random.default_rng(seed)
    factors = rng.uniform([[1 - strength]], [[1 + strength]], size=(1, 3))[0]
    shift = rng.uniform(-np.array([hue]), np.array([hue]))[0]
    order = np.argsort(rng.random((1, 4)), axis=1)[0]
    x = pixels.copy()
    for step in order:
        if step == 0:
            x = factors[0] * x
        elif step == 1:
            x = factors[1] * x + (1 - factors[1]) * (grey @ x).mean()
        elif step == 2:
            x = factors[2] * x + (1 - factors[2]) * (grey @ x)[None]
        else:
            c, s = np.cos(2 * np.pi * shift), np.sin(2 * np.pi * shift)
            rotation = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
            x = np.linalg.inv(to_yiq) @ rotation @ to_yiq @ x
    assert np.allclose(matrix[0] @ pixels + offset[0][:, None], x, atol=1e-9)


@pytest.mark.parametrize("shape", [(1, 1), (13, 17), (64, 40)])
@pytest.mark.parametrize("res", [(1, 1), (3, 2), (8, 8)])
def test_perlin_noise_range_and_determinism(shape: tuple[int, int], res: tuple[int, int]) -> None:
    noise = perlin_noise(shape, res, np.random.default_rng(0))
    assert noise.shape == shape and noise.dtype == np.float32
    assert np.abs(noise).max() <= 1.0 + 1e-5
    assert np.array_equal(noise, perlin_noise(shape, res, np.random.default_rng(0)))


def test_perlin_noise_is_smooth_and_varied() -> None:
    noise = perlin_noise((64, 64), (4, 4), np.random.default_rng(1))
    assert noise.std() > 0.1
    assert np.abs(np.diff(noise, axis=0)).max() < 0.25  # no jumps between neighbours
    fractal = fractal_noise((33, 35), (2, 2), np.random.default_rng(2), octaves=3)
    assert fractal.shape == (33, 35) and np.abs(fractal).max() <= 1.0 + 1e-5


def _fade(t: float) -> float:
    return t * t * t * (t * (t * 6 - 15) + 10)


def test_perlin_noise_matches_per_pixel_definition() -> None:
    shape, res = (9, 7), (3, 2)
    angles = np.random.default_rng(3).uniform(0.0, 2.0 * np.pi, size=(res[0] + 1, res[1] + 1))
    expected = np.zeros(shape)
    for y in range(shape[0]):
        for x in range(shape[1]):
            py, px = (y + 0.5) * res[0] / shape[0], (x + 0.5) * res[1] / shape[1]
            cy, cx = min(int(py), res[0] - 1), min(int(px), res[1] - 1)
            fy, fx = py - cy, px - cx
            dots = {}
            for a in (0, 1):
                for b in (0, 1):
                    theta = angles[cy + a, cx + b]
                    dots[a, b] = np.cos(theta) * (fx - b) + np.sin(theta) * (fy - a)
            u, v = _fade(fx), _fade(fy)
            top = dots[0, 0] + u * (dots[0, 1] - dots[0, 0])
            bottom = dots[1, 0] + u * (dots[1, 1] - dots[1, 0])
            expected[y, x] = (top + v * (bottom - top)) * np.sqrt(2.0)
    noise = perlin_noise(shape, res, np.random.default_rng(3))
    assert np.allclose(noise, expected, atol=1e-5)


@pytest.fixture
def applied(monkeypatch) -> list[str]:
    """The names of the corruption operations applied, in order, while the test runs."""
    import pgaudit.fapa.corruptions as corruptions

    names: list[str] = []
    for name, op in CORRUPTIONS.items():
        inner = corruptions._CHANNELS_FIRST[op]

        def spy(patch, rng, _name=name, _inner=inner):
            names.append(_name)
            return _inner(patch, rng)

        monkeypatch.setitem(corruptions._CHANNELS_FIRST, op, spy)
    return names


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: level.name)
def test_a_level_applies_at_most_max_ops_distinct_chosen_operations(applied, level) -> None:
    from pgaudit.fapa.corruptions import apply_operations

    patch = np.random.default_rng(8).random((3, 12, 12), dtype=np.float32)
    for ops in (tuple(CORRUPTIONS), ("swirl", "gaussian_blur")):
        counts, seen = [], set()
        for seed in range(60):
            applied.clear()
            apply_operations(patch, level, np.random.default_rng(seed), ops)
            assert len(set(applied)) == len(applied)  # distinct
            counts.append(len(applied))
            seen |= set(applied)
        assert seen <= set(ops)
        # every count from 0 to max_ops (capped by the operations offered) is drawn, no more
        assert set(counts) == set(range(min(level.max_ops, len(ops)) + 1)), (ops, counts)


def test_the_generator_draws_only_the_configured_operations(applied) -> None:
    from pgaudit.fapa import FapaConfig, make_pseudo_anomalies

    images = np.random.default_rng(9).random((16, 3, 48, 48), dtype=np.float32)
    config = FapaConfig(operations=("swirl", "torn_lines"), level_probs=(0, 0, 1))
    make_pseudo_anomalies(images, None, np.random.default_rng(0), config)
    assert set(applied) == {"swirl", "torn_lines"}
    applied.clear()
    config = FapaConfig(operations=("perlin_fill",), level_probs=(1, 0, 0))
    make_pseudo_anomalies(images, None, np.random.default_rng(0), config)
    assert set(applied) == {"perlin_fill"}


def test_a_heavier_level_changes_the_patch_more() -> None:
    """The colour jitter alone (no operations): light < medium < heavy in mean change."""
    patch = np.random.default_rng(10).random((3, 16, 16), dtype=np.float32) * 0.5 + 0.25
    change = []
    for level in LEVELS:
        diffs = [
            np.abs(corrupt_patch(patch, level, np.random.default_rng(seed), ()) - patch).mean()
            for seed in range(30)
        ]
        change.append(float(np.mean(diffs)))
    assert 0 < change[0] < change[1] < change[2], change
