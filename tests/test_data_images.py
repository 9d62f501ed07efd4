"""Image and mask loading: modes, Lanczos resizing, the any-channel mask rule, corrupt files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pgaudit.data.images import image_size_of, load_image, load_mask, verify_image
from pgaudit.errors import PgauditError


def _save(path, array, mode=None):
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(path)
    return path


def test_rgb_image_is_lanczos_resized_to_chw_float(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    path = _save(tmp_path / "a.png", pixels)
    out = load_image(path, 32)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    expected = np.array(Image.fromarray(pixels).resize((32, 32), Image.Resampling.LANCZOS))
    assert torch.allclose(out, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)


def test_same_size_image_is_unchanged(tmp_path):
    pixels = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    out = load_image(_save(tmp_path / "a.png", pixels), 16)
    assert torch.equal(out, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    gray = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    out = load_image(_save(tmp_path / "g.png", gray), 16)
    assert out.shape == (3, 16, 16)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert out[0, 0, 1].item() == pytest.approx(16 / 255)


def test_rgba_is_composited_onto_black(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[:, :4, 3] = 255  # left half opaque, right half transparent
    out = load_image(_save(tmp_path / "t.png", rgba), 8)
    assert out[:, :, :4].min().item() == pytest.approx(200 / 255)
    assert out[:, :, 4:].max().item() == 0.0


def test_palette_image_matches_its_rgb_colours(tmp_path):
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[:4] = (255, 0, 0)
    rgb[4:] = (0, 0, 255)
    path = tmp_path / "p.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(path)
    assert Image.open(path).mode == "P"
    out = load_image(path, 8)
    assert out[:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert out[:, 7, 0].tolist() == [0.0, 0.0, 1.0]


def test_16_bit_image_keeps_its_range_and_precision(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = load_image(path, 4)
    assert out.shape == (3, 4, 4)
    assert out[0, 0].tolist() == pytest.approx([0.0, 257 / 65535, 32768 / 65535, 1.0], abs=1e-6)


def test_mask_counts_a_pixel_when_any_channel_is_nonzero(tmp_path):
    mask = np.zeros((8, 8, 3), dtype=np.uint8)
    mask[2, 3, 2] = 1  # only the blue channel, value 1
    out = load_mask(_save(tmp_path / "m.png", mask), 8)
    assert out.dtype == torch.float32 and out.shape == (8, 8)
    assert out.sum().item() == 1.0 and out[2, 3].item() == 1.0


def test_thin_mask_line_survives_downscaling(tmp_path):
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[100, 20:200] = 255  # one pixel wide at 256 px
    out = load_mask(_save(tmp_path / "m.png", mask), 64)
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert out[25].sum().item() >= 40  # the line is still there at 64 px


def test_mask_upscaling_keeps_the_region(tmp_path):
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:16, 8:16] = 255
    out = load_mask(_save(tmp_path / "m.png", mask), 64)
    assert out[16:32, 16:32].min().item() == 1.0
    assert out[:10].sum().item() == 0.0 and out[40:].sum().item() == 0.0


def test_corrupt_image_names_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    for call in (lambda: load_image(bad, 8), lambda: load_mask(bad, 8), lambda: image_size_of(bad)):
        with pytest.raises(PgauditError, match="bad.png"):
            call()


def test_truncated_png_is_caught(tmp_path):
    path = _save(
        tmp_path / "cut.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PgauditError, match="cut.png"):
        verify_image(path)
    with pytest.raises(PgauditError, match="cut.png"):
        load_image(path, 8)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(PgauditError, match="nothere.png"):
        load_image(tmp_path / "nothere.png", 8)


def test_image_size_of_reads_the_header(tmp_path):
    path = _save(tmp_path / "s.png", np.zeros((30, 50, 3), dtype=np.uint8))
    assert image_size_of(path) == (50, 30)
