"""`pgaudit data check` on good and bad data: every bad input exits 2 and names the path."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image


def _flat(text: str) -> str:
    """Output without rich's line wrapping."""
    return text.replace("\n", "")


def _category(root, n_train=2, defects=("dent",), masks=True, size=16):
    img = Image.fromarray(np.full((size, size, 3), 120, dtype=np.uint8))
    mask = Image.fromarray(np.full((size, size), 255, dtype=np.uint8))
    for i in range(n_train):
        (root / "train" / "good").mkdir(parents=True, exist_ok=True)
        img.save(root / "train" / "good" / f"{i:03d}.png")
    (root / "test" / "good").mkdir(parents=True, exist_ok=True)
    img.save(root / "test" / "good" / "000.png")
    for defect in defects:
        (root / "test" / defect).mkdir(parents=True, exist_ok=True)
        (root / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            img.save(root / "test" / defect / f"{i:03d}.png")
            if masks:
                mask.save(root / "ground_truth" / defect / f"{i:03d}_mask.png")
    return root


def _fails_naming(result, path) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert str(path) in _flat(result.stderr), result.stderr


def test_check_a_good_category(tmp_path, run_cli):
    root = _category(tmp_path / "part")
    result = run_cli("data", "check", root)
    assert result.exit_code == 0, result.stderr
    assert "dent" in result.stdout and "2/2" in result.stdout and "16x16" in result.stdout


def test_check_the_default_synthetic_widget(synth_default, run_cli):
    result = run_cli("data", "check", synth_default / "widget")
    assert result.exit_code == 0, result.stderr
    assert "80/80" in result.stdout  # foreground masks present


def test_missing_folder(tmp_path, run_cli):
    _fails_naming(run_cli("data", "check", tmp_path / "nope"), tmp_path / "nope")


def test_no_train_good(tmp_path, run_cli):
    root = _category(tmp_path / "part")
    shutil.rmtree(root / "train")
    _fails_naming(run_cli("data", "check", root), root / "train" / "good")


def test_detection_only_is_a_warning(tmp_path, run_cli):
    root = _category(tmp_path / "part", masks=False)
    result = run_cli("data", "check", root)
    assert result.exit_code == 0, result.stderr
    assert "detection only" in _flat(result.stdout)


def test_mask_missing_for_one_image(tmp_path, run_cli):
    root = _category(tmp_path / "part")
    missing = root / "ground_truth" / "dent" / "001_mask.png"
    missing.unlink()
    _fails_naming(run_cli("data", "check", root), missing)


def test_mask_size_differs_from_its_image(tmp_path, run_cli):
    root = _category(tmp_path / "part")
    mask = root / "ground_truth" / "dent" / "000_mask.png"
    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(mask)
    result = run_cli("data", "check", root)
    _fails_naming(result, mask)
    assert "8x8" in _flat(result.stderr) and "16x16" in _flat(result.stderr)


def test_corrupt_image(tmp_path, run_cli):
    root = _category(tmp_path / "part")
    bad = root / "test" / "dent" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _fails_naming(run_cli("data", "check", root), bad)


def test_truncated_image(tmp_path, run_cli):
    root = _category(tmp_path / "part", size=64)
    bad = root / "train" / "good" / "000.png"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(bad)
    bad.write_bytes(bad.read_bytes()[:-200])
    _fails_naming(run_cli("data", "check", root), bad)


def test_empty_train_split(tmp_path, run_cli):
    root = _category(tmp_path / "part", n_train=0)
    (root / "train" / "good").mkdir(parents=True)
    _fails_naming(run_cli("data", "check", root), root / "train" / "good")


def test_empty_test_split(tmp_path, run_cli):
    root = _category(tmp_path / "part")
    shutil.rmtree(root / "test")
    shutil.rmtree(root / "ground_truth")
    (root / "test" / "good").mkdir(parents=True)
    _fails_naming(run_cli("data", "check", root), root / "test")


def test_unknown_layout(tmp_path, run_cli):
    (tmp_path / "stuff" / "photos").mkdir(parents=True)
    (tmp_path / "stuff" / "readme.txt").write_text("hello")
    _fails_naming(run_cli("data", "check", tmp_path / "stuff"), tmp_path / "stuff")


def test_root_checks_every_category_or_one(tmp_path, run_cli):
    _category(tmp_path / "root" / "a")
    _category(tmp_path / "root" / "b", masks=False)
    result = run_cli("data", "check", tmp_path / "root")
    assert result.exit_code == 0, result.stderr
    assert "a (mvtec)" in result.stdout and "b (mvtec)" in result.stdout
    only = run_cli("data", "check", tmp_path / "root", "--category", "b")
    assert only.exit_code == 0 and "a (mvtec)" not in only.stdout
    unknown = run_cli("data", "check", tmp_path / "root", "--category", "zz")
    _fails_naming(unknown, tmp_path / "root")
    assert "a, b" in unknown.stderr


def test_several_problems_are_all_listed(tmp_path, run_cli):
    root = _category(tmp_path / "part")
    first = root / "test" / "dent" / "000.png"
    second = root / "test" / "dent" / "001.png"
    first.write_bytes(b"junk")
    second.write_bytes(b"junk")
    result = run_cli("data", "check", root)
    _fails_naming(result, first)
    assert str(second) in _flat(result.stdout)
