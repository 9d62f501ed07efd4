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
