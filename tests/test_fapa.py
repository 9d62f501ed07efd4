"""FAPA generator: placement, masks, labels, determinism, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from pgaudit.fapa import FapaConfig, make_pseudo_anomalies, patch_labels
from pgaudit.fapa.placement import Region, dilate, fitting_corners, foreground_regions
from pgaudit.fapa.warp import rotate_patch, rotate_patches, rotated_extent


def _disc(size: int, batch: int, radius: float = 0.3) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (radius * size) ** 2
    return np.repeat(disc[None], batch, axis=0).astype(np.float32)


def _images(size: int, batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 3, size, size), dtype=np.float32)


def _dilated(foreground: np.ndarray, radius: int) -> np.ndarray:
    square = np.ones((1, 2 * radius + 1, 2 * radius + 1), dtype=bool)
    return ndimage.binary_dilation(foreground > 0.5, structure=square)


def test_pasted_region_inside_dilated_foreground() -> None:
    size, config = 64, FapaConfig()
    fg = _disc(size, 16)
    _, masks = make_pseudo_anomalies(_images(size, 16), fg, np.random.default_rng(1), config)
    allowed = _dilated(fg, config.dilate_radius(size))
    assert masks.sum(axis=(1, 2)).min() > 0
    assert not (masks.astype(bool) & ~allowed).any()


def test_dilate_matches_scipy() -> None:
    masks = np.random.default_rng(2).random((3, 23, 31)) > 0.97
    for radius in (0, 1, 2, 5, 40):
        assert np.array_equal(dilate(masks, radius), _dilated(masks, radius))


def test_region_rectangles_inside_irregular_allowed_mask() -> None:
    rng = np.random.default_rng(2)
    allowed = ndimage.gaussian_filter(rng.random((80, 80)), 4) > 0.5
    region = Region(80, 80, allowed)
    found = 0
    for h, w in [(4, 4), (9, 5), (12, 20), (1, 1)]:
        for _ in range(20):
            corner = region.sample(h, w, rng)
            if corner is None:
                continue
            found += 1
            y, x = corner
            assert 0 <= y <= 80 - h and 0 <= x <= 80 - w
            assert allowed[y : y + h, x : x + w].all()
    assert found > 0


def test_fitting_corners_matches_naive_scan() -> None:
    allowed = np.random.default_rng(3).random((11, 13)) > 0.2
    for h, w in [(1, 1), (2, 3), (3, 2), (5, 4), (11, 13)]:
        naive = np.array(
            [
                [allowed[y : y + h, x : x + w].all() for x in range(13 - w + 1)]
                for y in range(11 - h + 1)
            ]
        )
        assert np.array_equal(fitting_corners(allowed, h, w), naive)


@pytest.mark.parametrize("kind", ["noise", "flat_mid", "flat_white", "flat_black"])
def test_mask_equals_changed_pixels(kind: str) -> None:
    size, batch = 48, 12
    if kind == "noise":
        images = _images(size, batch)
    else:
        value = {"flat_mid": 0.5, "flat_white": 1.0, "flat_black": 0.0}[kind]
        images = np.full((batch, 3, size, size), value, dtype=np.float32)
    out, masks = make_pseudo_anomalies(images, None, np.random.default_rng(4))
    changed = (np.abs(out - images) > 0).any(axis=1)
    assert not (changed & (masks == 0)).any()  # nothing changes outside the mask
    assert np.array_equal(changed, masks == 1)  # every pasted pixel differs from the original


@pytest.mark.parametrize("seed", range(6))
def test_invariants_on_random_shapes_and_foregrounds(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    size, batch = int(rng.integers(8, 90)), int(rng.integers(1, 5))
    blobs = ndimage.gaussian_filter(rng.random((batch, size, size)), (0, 3, 3))
    fg = blobs > np.quantile(blobs, rng.uniform(0.2, 0.95))
    images = rng.random((batch, 3, size, size), dtype=np.float32)
    config = FapaConfig(max_side=int(rng.integers(14, 120)))
    out, masks = make_pseudo_anomalies(images, fg, rng, config)
    assert out.shape == images.shape and masks.shape == (batch, size, size)
    assert (masks.sum(axis=(1, 2)) > 0).all()
    assert np.array_equal((out != images).any(axis=1), masks == 1)
    assert out.min() >= 0 and out.max() <= 1


def test_outputs_types_ranges_and_nonempty_masks() -> None:
    images = torch.from_numpy(_images(32, 5))
    out, masks = make_pseudo_anomalies(images, torch.ones(5, 32, 32), np.random.default_rng(5))
    assert isinstance(out, torch.Tensor) and out.shape == images.shape
    assert out.dtype == torch.float32 and masks.dtype == torch.float32
    assert masks.shape == (5, 32, 32)
    assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}
    assert (masks.sum(dim=(1, 2)) > 0).all()
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(images, torch.from_numpy(_images(32, 5)))  # input left untouched

    as_float64 = _images(32, 2).astype(np.float64) * 1.2 - 0.1  # out of range on purpose
    out64, masks64 = make_pseudo_anomalies(as_float64, None, np.random.default_rng(5))
    assert isinstance(out64, np.ndarray) and out64.dtype == np.float64
    assert masks64.dtype == np.float32 and out64.min() >= 0 and out64.max() <= 1


def test_deterministic_given_seed() -> None:
    images, fg = _images(40, 6), _disc(40, 6, 0.4)
    a = make_pseudo_anomalies(images, fg, np.random.default_rng(7))
    b = make_pseudo_anomalies(images, fg, np.random.default_rng(7))
    c = make_pseudo_anomalies(images, fg, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("case", ["empty", "tiny", "thin_line", "corner_pixel"])
def test_tiny_or_empty_foreground_falls_back(case: str) -> None:
    size, batch = 64, 6
    fg = np.zeros((batch, size, size), dtype=np.float32)
    if case == "tiny":
        fg[:, 30:32, 30:32] = 1
    elif case == "thin_line":
        fg[:, 32, 5:60] = 1
    elif case == "corner_pixel":
        fg[:, 0, 0] = 1
    out, masks = make_pseudo_anomalies(_images(size, batch), fg, np.random.default_rng(9))
    assert out.shape == (batch, 3, size, size)
    assert (masks.sum(axis=(1, 2)) > 0).all()
    if case == "thin_line":  # a line 55 px long holds small patches: placement stays near it
        radius = FapaConfig().dilate_radius(size)
        assert not (masks.astype(bool) & ~_dilated(fg, radius)).any()


def test_pinholes_in_foreground_are_bridged_by_dilation() -> None:
    size, batch = 64, 8
    fg = _disc(size, batch, 0.45)
    fg[:, ::4, ::4] = 0  # a noisy estimated mask: holes every 4 px
    config = FapaConfig(max_angle=0.0)
    _, masks = make_pseudo_anomalies(_images(size, batch), fg, np.random.default_rng(3), config)
    assert not (masks.astype(bool) & ~_dilated(fg, config.dilate_radius(size))).any()
    low, high = config.side_range(size)
    assert masks.sum(axis=(1, 2)).max() > (low + 2) ** 2  # patches are not shrunk to the minimum


def test_tiny_images() -> None:
    for size in (4, 7, 16):
        out, masks = make_pseudo_anomalies(_images(size, 2), None, np.random.default_rng(size))
        assert out.shape == (2, 3, size, size) and (masks.sum(axis=(1, 2)) > 0).all()


@pytest.mark.parametrize("size", [4, 7, 32])
def test_a_batch_of_one_image(size: int) -> None:
    images = _images(size, 1)
    fg = _disc(size, 1) if size >= 32 else None
    out, masks = make_pseudo_anomalies(images, fg, np.random.default_rng(size))
    assert out.shape == (1, 3, size, size) and masks.shape == (1, size, size)
    assert masks.sum() > 0
    changed = np.abs(out - images).max(axis=1) > 0
    assert changed.any() and not (changed & (masks == 0)).any()  # pasted where the mask says
    if fg is not None:
        size_config = FapaConfig()
        assert not (masks.astype(bool) & ~_dilated(fg, size_config.dilate_radius(size))).any()
    tensor_out, tensor_masks = make_pseudo_anomalies(
        torch.from_numpy(images), None if fg is None else torch.from_numpy(fg),
        np.random.default_rng(size),
    )  # fmt: skip
    assert tensor_out.shape == (1, 3, size, size)
    assert np.array_equal(tensor_masks.numpy(), masks)


def test_patch_sides_respect_bounds_without_rotation() -> None:
    config = FapaConfig(min_side=14, max_side=39, max_angle=0.0)
    size = 112
    low, high = config.side_range(size)
    assert (low, high) == (7, 20)
    _, masks = make_pseudo_anomalies(_images(size, 20), None, np.random.default_rng(10), config)
    for mask in masks:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert low <= h <= high and low <= w <= high
        assert mask.sum() == h * w  # an axis-aligned rectangle


def test_side_range_scales_with_image_size() -> None:
    assert FapaConfig().side_range(224) == (14, 86)
    assert FapaConfig().side_range(448) == (28, 172)
    assert FapaConfig(max_side=39).side_range(224) == (14, 39)
    with pytest.raises(ValueError, match="min_side"):
        FapaConfig(min_side=50, max_side=20)
    with pytest.raises(ValueError, match="unknown corruption"):
        FapaConfig(operations=("nope",))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="foreground"):
        make_pseudo_anomalies(_images(16, 2), np.ones((2, 8, 8)), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        make_pseudo_anomalies(np.zeros((2, 16, 16)), None, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        make_pseudo_anomalies(_images(16, 2), None, 0)  # type: ignore[arg-type]


def test_foreground_with_channel_axis_accepted() -> None:
    """A ``[B, 1, H, W]`` foreground is the same foreground: patches stay inside it."""
    size, batch = 64, 8
    corner = np.zeros((batch, size, size), dtype=np.float32)
    corner[:, :28, :28] = 1  # the top-left corner only
    images = torch.from_numpy(_images(size, batch))
    with_axis = torch.from_numpy(corner)[:, None]
    out, masks = make_pseudo_anomalies(images, with_axis, np.random.default_rng(0))
    assert masks.shape == (batch, size, size)
    allowed = _dilated(corner, FapaConfig().dilate_radius(size))
    assert not (masks.numpy().astype(bool) & ~allowed).any()
    assert torch.equal(out[..., 40:, :], images[..., 40:, :])  # far from the corner: untouched
    plain_out, plain_masks = make_pseudo_anomalies(
        images, torch.from_numpy(corner), np.random.default_rng(0)
    )
    assert torch.equal(masks, plain_masks) and torch.equal(out, plain_out)


def _naive_labels(masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    batch, height, width = masks.shape
    gh, gw = grid
    labels = np.zeros((batch, gh, gw), dtype=np.float32)
    for b in range(batch):
        for i in range(gh):
            for j in range(gw):
                y0, y1 = (i * height) // gh, -((-(i + 1) * height) // gh)
                x0, x1 = (j * width) // gw, -((-(j + 1) * width) // gw)
                labels[b, i, j] = float(masks[b, y0:y1, x0:x1].any())
    return labels


@pytest.mark.parametrize(("size", "patch"), [(56, 14), (64, 8), (60, 14), (30, 7)])
def test_patch_labels_any_pixel_rule(size: int, patch: int) -> None:
    rng = np.random.default_rng(11)
    masks = (rng.random((3, size, size)) > 0.995).astype(np.float32)
    masks[0] = 0
    expected = _naive_labels(masks, (size // patch, size // patch))
    labels = patch_labels(masks, patch)
    assert isinstance(labels, np.ndarray) and labels.dtype == np.float32
    assert np.array_equal(labels, expected)
    as_torch = patch_labels(torch.from_numpy(masks), patch)
    assert isinstance(as_torch, torch.Tensor) and np.array_equal(as_torch.numpy(), expected)


def test_patch_labels_of_generated_masks() -> None:
    _, masks = make_pseudo_anomalies(_images(56, 4), None, np.random.default_rng(12))
    labels = patch_labels(masks, 14)
    assert np.array_equal(labels, _naive_labels(masks, (4, 4)))
    assert (labels.sum(axis=(1, 2)) > 0).all()


def test_foreground_regions_hold_the_dilated_foreground() -> None:
    rng = np.random.default_rng(14)
    fg = np.zeros((4, 40, 50), dtype=bool)
    fg[0, 3:9, 30:48] = True
    fg[1] = ndimage.gaussian_filter(rng.random((40, 50)), 3) > 0.55
    fg[2, 35:40, 0:4] = True
    fg[3, 20, 25] = True
    radius = 3
    expected = _dilated(fg, radius)
    for mask, region, want in zip(fg, foreground_regions(fg, radius, 1), expected, strict=True):
        assert not region.is_whole_image
        y0, y1, x0, x1 = region.bbox
        full = np.zeros_like(mask)
        full[y0:y1, x0:x1] = region._allowed
        assert np.array_equal(full, want)


def test_foreground_regions_fallbacks() -> None:
    fg = np.zeros((3, 20, 20), dtype=bool)
    fg[1] = True
    fg[2, 5:15, 5:15] = True
    regions = foreground_regions(fg, radius=1, min_area=4)
    assert [r.is_whole_image for r in regions] == [True, True, False]


def test_rotation_geometry() -> None:
    patch = np.random.default_rng(13).random((3, 5, 8), dtype=np.float32)
    same, inside = rotate_patch(patch, 0.0)
    assert np.allclose(same, patch, atol=1e-5) and inside.all()
    turned, inside = rotate_patch(patch, 90.0)
    assert turned.shape == (3, 8, 5) and inside.all()
    # Positive angles turn clockwise on screen (y down): the first row becomes the last column.
    assert np.allclose(turned, np.rot90(patch, k=-1, axes=(1, 2)), atol=1e-5)
    rotated, inside = rotate_patch(patch, 45.0)
    assert rotated.shape[1:] == rotated_extent(5, 8, 45.0) == inside.shape
    assert 0.8 * 40 <= inside.sum() <= 1.2 * 40  # the area of the patch is preserved
    assert not inside[0, 0] and not inside[-1, -1]  # transparent corners


def test_rotation_matches_scipy_resampling() -> None:
    patch = np.random.default_rng(15).random((3, 11, 16), dtype=np.float32)
    angle = 33.0
    rotated, inside = rotate_patch(patch, angle)
    box_h, box_w = inside.shape
    theta = np.radians(angle)
    oy, ox = np.mgrid[:box_h, :box_w].astype(np.float64)
    oy -= (box_h - 1) / 2
    ox -= (box_w - 1) / 2
    sx = np.cos(theta) * ox + np.sin(theta) * oy + (16 - 1) / 2
    sy = np.cos(theta) * oy - np.sin(theta) * ox + (11 - 1) / 2
    interior = (sx >= 0) & (sx <= 15) & (sy >= 0) & (sy <= 10)
    assert inside[interior].all()
    for channel in range(3):
        expected = ndimage.map_coordinates(patch[channel], [sy, sx], order=1, mode="nearest")
        assert np.allclose(rotated[channel][interior], expected[interior], atol=1e-4)


def test_rotating_a_batch_equals_rotating_each_patch() -> None:
    rng = np.random.default_rng(16)
    sizes, angles = [(5, 9), (12, 4), (7, 7)], [-80.0, 12.5, 45.0]
    buffer = np.zeros((3, 3, 12, 9), dtype=np.float32)
    singles = []
    for index, (h, w) in enumerate(sizes):
        buffer[index, :, :h, :w] = rng.random((3, h, w), dtype=np.float32)
        singles.append(rotate_patch(buffer[index, :, :h, :w], angles[index]))
    batch = rotate_patches(buffer, sizes, angles)
    for index, (values, inside) in enumerate(singles):
        batch_values, batch_inside = batch.box(index)
        assert np.array_equal(batch_inside, inside)
        assert np.allclose(batch_values[:, inside], values[:, inside], atol=1e-5)
