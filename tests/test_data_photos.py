"""Real-photograph categories (scikit-image photographs, a dev dependency): layout, disjoint
regions, exact masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from pgaudit.data import photos
from pgaudit.data.layouts import open_category
from pgaudit.errors import PgauditError


def test_only_the_two_fixed_splits_are_used() -> None:
    assert photos.TUNING == ("immunohistochemistry", "moon", "cell")
    assert photos.REPORT == ("coins", "hubble_deep_field", "coffee")
    with pytest.raises(PgauditError, match="not one of the benchmark photographs"):
        photos.load_photograph("astronaut")


def test_grey_photographs_become_rgb_and_cells_split_them() -> None:
    moon = photos.load_photograph("moon")
    assert moon.shape == (512, 512, 3) and np.array_equal(moon[..., 0], moon[..., 2])
    for name in photos.PHOTOGRAPHS:
        h, w = photos.load_photograph(name).shape[:2]
        grid = photos.cells(h, w)
        train = [c for c in grid if c[4]]
        test = [c for c in grid if not c[4]]
        assert train and test and all(min(c[2], c[3]) >= 128 for c in grid)
        covered = np.zeros((h, w), int)
        for top, left, ch, cw, _ in grid:
            covered[top : top + ch, left : left + cw] += 1
        assert covered.max() == 1  # cells never overlap, so train and test pixels are disjoint


def test_crops_come_from_their_own_cells() -> None:
    photo = np.zeros((340, 340, 3), np.float32)
    grid = photos.cells(340, 340)
    for top, left, ch, cw, is_train in grid:  # paint train cells white, test cells black
        photo[top : top + ch, left : left + cw] = 1.0 if is_train else 0.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert photos.crop(photo, rng, 64, True).mean() > 0.9
        assert photos.crop(photo, rng, 64, False).mean() < 0.1


@pytest.mark.parametrize("defect", photos.DEFECT_TYPES)
def test_each_defect_changes_exactly_its_masked_pixels(defect) -> None:
    image = photos.crop(photos.load_photograph("coins"), np.random.default_rng(1), 128, False)
    new, mask = photos.make_photo_defect(np.random.default_rng(2), image, defect)
    change = np.abs(new - image).max(axis=2)
    assert 20 < mask.sum() < 0.3 * mask.size
    assert change[mask].mean() > 0.1  # visible where the mask says
    near = ndimage.binary_dilation(mask, iterations=4)  # the soft edge (under half weight)
    assert change[~near].max() < 1e-6  # nothing changes away from the defect
    weak, weak_mask = photos.make_photo_defect(np.random.default_rng(2), image, defect, 0.2)
    assert np.abs(weak - image).max(axis=2)[weak_mask].mean() < change[mask].mean()


def test_category_is_an_mvtec_layout_and_deterministic(tmp_path) -> None:
    a = photos.write_photo_category(tmp_path / "a", "coffee", n_train=4, n_test=6, size=64)
    b = photos.write_photo_category(tmp_path / "b", "coffee", n_train=4, n_test=6, size=64)
    cat = open_category(a)
    assert len(cat.train) == 4 and len(cat.test) == 6 and len(cat.anomalous) == 3
    assert cat.has_masks
    for sample in cat.anomalous:
        assert Image.open(sample.image).size == (64, 64)
        assert np.asarray(Image.open(sample.mask)).max() == 255
    for path in a.rglob("*.png"):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()
    with pytest.raises(PgauditError, match="not empty"):
        photos.write_photo_category(a, "coffee", n_train=1, n_test=2)
