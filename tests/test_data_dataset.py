"""AnomalyDataset: item shapes and values, defaults for absent masks, size checks, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pgaudit.data import AnomalyDataset, Sample, open_category
from pgaudit.errors import PgauditError


def test_items_have_the_contract_shapes(synth_root):
    cat = open_category(synth_root / "widget")
    ds = AnomalyDataset(cat.test, image_size=48)
    assert len(ds) == len(cat.test)
    for index in (0, len(ds) - 1):
        item = ds[index]
        assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
        assert item["mask"].shape == (48, 48) and item["foreground"].shape == (48, 48)
        assert item["index"] == index and item["label"] == cat.test[index].label
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    normal = ds[0]
    assert cat.test[0].label == 0 and normal["mask"].sum() == 0
    assert normal["foreground"].min() == 1.0  # test samples have no foreground: all ones
    anomalous = ds[len(ds) - 1]
    assert anomalous["label"] == 1 and anomalous["mask"].sum() > 0


def test_training_items_carry_their_foreground(synth_root):
    cat = open_category(synth_root / "widget")
    item = AnomalyDataset(cat.train, image_size=64)[0]
    fg = item["foreground"]
    assert 0.05 < fg.mean().item() < 0.6  # an object on a background, not all ones
    batch = next(iter(DataLoader(AnomalyDataset(cat.train, 32), batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["foreground"].shape == (4, 32, 32)


def test_cache_returns_equal_independent_tensors(synth_root):
    cat = open_category(synth_root / "fabric")
    ds = AnomalyDataset(cat.test, image_size=32, cache=True)
    first = ds[3]
    first["image"].zero_()
    again = ds[3]
    assert again["image"].abs().sum() > 0
    assert torch.equal(again["image"], AnomalyDataset(cat.test, 32)[3]["image"])


def test_mask_size_mismatch_names_both_files(tmp_path):
    image, mask = tmp_path / "img.png", tmp_path / "img_mask.png"
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(image)
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(mask)
    ds = AnomalyDataset([Sample(image, 1, "dent", mask)], image_size=16)
    with pytest.raises(PgauditError, match=r"img_mask\.png.*10x10.*img\.png.*20x20"):
        ds[0]
    unchecked = AnomalyDataset([Sample(image, 1, "dent", mask)], 16, validate_masks=False)
    assert unchecked[0]["mask"].shape == (16, 16)


def test_index_out_of_range(synth_root):
    ds = AnomalyDataset(open_category(synth_root / "widget").test, 16)
    with pytest.raises(IndexError):
        ds[len(ds)]
    assert ds[-1]["index"] == len(ds) - 1
