"""The synthetic dataset: layout, exact masks, determinism, variation among normal images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pgaudit.data import open_category
from pgaudit.data.images import image_array, mask_array
from pgaudit.data.synth import (
    DEFECT_TYPES,
    RENDERERS,
    _rng,
    make_defect,
    make_synthetic_dataset,
)
from pgaudit.errors import ParameterError, PgauditError


@pytest.mark.parametrize("name", ["widget", "fabric"])
def test_default_layout_and_counts(synth_default, name):
    cat = open_category(synth_default / name)
    assert cat.layout == "mvtec"
    assert len(cat.train) == 80
    assert cat.defect_counts("test") == {"good": 20, **dict.fromkeys(sorted(DEFECT_TYPES), 5)}
    assert cat.has_masks
    assert cat.has_foreground == (name == "widget")
    sizes = {image_array(s.image).shape for s in cat.test[::7]}
    assert sizes == {(128, 128, 3)}
    for sample in cat.anomalous:
        values = np.unique(np.asarray(Image.open(sample.mask)))
        assert set(values.tolist()) == {0, 255}


@pytest.mark.parametrize("name", ["widget", "fabric"])
@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_masks_mark_exactly_the_changed_pixels(name, defect):
    for k in range(3):
        rng = _rng(7, 0, 2, k)
        clean, foreground, backing = RENDERERS[name](rng, 96)
        image, mask = make_defect(rng, clean, foreground, backing, defect)
        changed = np.abs(image - clean).max(axis=2) > 1e-6
        assert mask.sum() >= 6
        assert not (changed & ~mask).any()  # nothing changed outside the mask
        assert (changed & mask).sum() >= 0.95 * mask.sum()
        assert not (mask & ~foreground).any()  # defects stay on the object
        # clearly visible: a mean colour change of at least 0.1 inside the mask
        assert np.abs(image - clean)[mask].mean() >= 0.1


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", size=48, seed=3, n_train=2, n_test=4)
    make_synthetic_dataset(tmp_path / "b", size=48, seed=3, n_train=3, n_test=4)
    make_synthetic_dataset(tmp_path / "c", size=48, seed=4, n_train=2, n_test=4)
    files = sorted(p.relative_to(a[0].parent) for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 2 * (2 + 4 + 2) + 2  # images, masks; foreground for widget
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    differs = [
        (tmp_path / "a" / r).read_bytes() != (tmp_path / "c" / r).read_bytes() for r in files
    ]
    assert sum(differs) >= len(files) - 2


@pytest.mark.parametrize("name", ["widget", "fabric"])
def test_normal_images_vary(synth_root, name):
    cat = open_category(synth_root / name)
    images = np.stack([image_array(s.image) for s in cat.train[:8]])
    pairwise = [np.abs(images[i] - images[j]).mean() for i in range(8) for j in range(i + 1, 8)]
    assert min(pairwise) > 0.02  # pose / phase / lighting differ
    if name == "widget":
        masks = np.stack([mask_array(s.foreground) for s in cat.train[:8]])
        assert (masks.mean(axis=0) % 1 > 0).mean() > 0.1  # the object moves and turns


def test_refuses_a_non_empty_category_folder(tmp_path):
    make_synthetic_dataset(tmp_path, size=32, n_train=1, n_test=2, categories=("fabric",))
    with pytest.raises(PgauditError, match="fabric"):
        make_synthetic_dataset(tmp_path, size=32, n_train=1, n_test=2, categories=("fabric",))


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [({"size": 8}, "--size 8"), ({"n_train": 0}, "--n-train 0"), ({"n_test": 1}, "--n-test 1")],
)
def test_bad_options(tmp_path, kwargs, option):
    """The API names the parameter; the CLI (for_cli) the option."""
    with pytest.raises(ParameterError) as info:
        make_synthetic_dataset(tmp_path, **kwargs)
    assert str(info.value).startswith(option.lstrip("-").replace("-", "_"))
    assert info.value.for_cli().startswith(option)


def test_cli_synth_then_check(tmp_path, run_cli):
    result = run_cli(
        "data", "synth", tmp_path / "d", "--size", "48", "--n-train", "4", "--n-test", "8"
    )
    assert result.exit_code == 0, result.stderr
    assert "widget" in result.stdout and "fabric" in result.stdout
    check = run_cli("data", "check", tmp_path / "d" / "widget")
    assert check.exit_code == 0, check.stderr
    assert "scratch" in check.stdout and "usable" in check.stdout
