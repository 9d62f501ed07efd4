"""Foreground-mask estimation: accuracy on the synthetic widget, method choice, overwrite guard."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from pgaudit.data import open_category
from pgaudit.data.foreground import estimate_foreground_masks, mask_iou
from pgaudit.data.images import mask_array
from pgaudit.errors import ParameterError


def _without_foreground(src, dst):
    """Copy a synthetic category, moving its true foreground masks aside; returns (copy, truth)."""
    shutil.copytree(src, dst)
    truth = dst.parent / f"{dst.name}_true_foreground"
    shutil.move(dst / "train" / "foreground_mask", truth)
    return dst, truth


def test_widget_masks_match_the_truth(synth_default, tmp_path):
    root, truth = _without_foreground(synth_default / "widget", tmp_path / "widget")
    report = estimate_foreground_masks(open_category(root))
    assert report.method == "border" and "plain background" in report.reason
    assert len(report.written) == 80
    ious = [mask_iou(mask_array(p), mask_array(truth / p.name)) for p in report.written]
    assert np.mean(ious) >= 0.9 and min(ious) >= 0.8
    assert open_category(root).has_foreground


def test_fabric_gets_full_masks(synth_root, tmp_path):
    shutil.copytree(synth_root / "fabric", tmp_path / "fabric")
    report = estimate_foreground_masks(open_category(tmp_path / "fabric"))
    assert report.method == "full"
    assert all(mask_array(p).all() for p in report.written)


def test_consistent_textured_background_uses_the_set_median(tmp_path):
    rng = np.random.default_rng(0)
    size = 96
    backdrop = rng.uniform(0.2, 0.8, (size // 8, size // 8, 3))
    backdrop = np.kron(backdrop, np.ones((8, 8, 1)))  # a fixed chequered backdrop
    yy, xx = np.mgrid[0:size, 0:size]
    root = tmp_path / "scene"
    truths = {}
    for i in range(10):
        cx, cy = rng.uniform(25, 71, 2)
        disc = np.hypot(xx - cx, yy - cy) <= 14
        image = np.where(disc[..., None], [0.9, 0.1, 0.1], backdrop * rng.uniform(0.95, 1.05))
        image = np.clip(image + rng.normal(0, 0.01, image.shape), 0, 1)
        path = root / "train" / "good" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).astype(np.uint8)).save(path)
        truths[path.name] = disc
    (root / "test" / "good").mkdir(parents=True)
    shutil.copy(path, root / "test" / "good" / "000.png")
    report = estimate_foreground_masks(open_category(root))
    assert report.method == "background"
    ious = [mask_iou(mask_array(p), truths[p.name]) for p in report.written]
    assert np.mean(ious) >= 0.9


def test_existing_masks_are_not_overwritten(synth_root, tmp_path, run_cli):
    shutil.copytree(synth_root / "widget", tmp_path / "widget")
    fg_dir = tmp_path / "widget" / "train" / "foreground_mask"
    before = (fg_dir / "000.png").read_bytes()
    with pytest.raises(ParameterError, match="pass overwrite to replace them") as info:
        estimate_foreground_masks(open_category(tmp_path / "widget"))
    assert info.value.parameters == ("overwrite",)  # the API names its parameter, the CLI its flag
    result = run_cli("masks", tmp_path / "widget")
    assert result.exit_code == 2
    assert str(fg_dir) in result.stderr.replace("\n", "") and "--overwrite" in result.stderr
    assert (fg_dir / "000.png").read_bytes() == before
    result = run_cli("masks", tmp_path / "widget", "--overwrite", "--method", "full")
    assert result.exit_code == 0, result.stderr
    assert "full" in result.stdout and mask_array(fg_dir / "000.png").all()


def test_root_is_refused_before_anything_is_written(synth_root, tmp_path, run_cli):
    shutil.copytree(synth_root, tmp_path / "d")
    result = run_cli("masks", tmp_path / "d")  # widget has masks; fabric comes first
    assert result.exit_code == 2
    assert not (tmp_path / "d" / "fabric" / "train" / "foreground_mask").exists()
    result = run_cli("masks", tmp_path / "d", "--category", "fabric")
    assert result.exit_code == 0, result.stderr
    assert "method full (auto:" in result.stdout


def test_unknown_method_is_a_usage_error(synth_root, run_cli):
    result = run_cli("masks", synth_root / "fabric", "--method", "magic")
    assert result.exit_code == 2 and "--method magic" in result.stderr


def test_non_png_training_images_get_png_masks(tmp_path):
    root = tmp_path / "jpgs"
    for split in ("train/good", "test/good"):
        (root / split).mkdir(parents=True)
    image = np.full((40, 40, 3), 230, dtype=np.uint8)
    image[10:30, 12:28] = (30, 60, 160)
    Image.fromarray(image).save(root / "train" / "good" / "a.jpg", quality=95)
    Image.fromarray(image).save(root / "test" / "good" / "b.jpg", quality=95)
    report = estimate_foreground_masks(open_category(root), method="border")
    assert [p.name for p in report.written] == ["a.png"]
    truth = np.zeros((40, 40), dtype=bool)
    truth[10:30, 12:28] = True
    assert mask_iou(mask_array(report.written[0]), truth) >= 0.9
    assert open_category(root).train[0].foreground == report.written[0]
