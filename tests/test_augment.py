"""Geometric train-time augmentation: image and mask move together; every orientation occurs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgaudit.errors import ParameterError
from pgaudit.models.checkpoint import read_torch_file
from pgaudit.models.presets import TrainConfig
from pgaudit.training.batches import turn


def _planted() -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.zeros(1, 3, 8, 8)
    image[0, :, 1, 2] = 1.0  # one bright pixel, off every axis of symmetry
    mask = torch.zeros(1, 8, 8)
    mask[0, 1, 2] = 1.0
    return image, mask


@pytest.mark.parametrize(("kind", "expected"), [("none", 1), ("flips", 4), ("dihedral", 8)])
def test_turn_keeps_image_and_mask_aligned_and_reaches_every_orientation(kind, expected):
    image, mask = _planted()
    seen = set()
    for seed in range(64):
        out_image, out_mask = turn(image, mask, kind, np.random.default_rng(seed))
        assert torch.equal(out_image[0, 0], out_mask[0])  # the pixel and its mask moved together
        assert out_image.sum() == image.sum()  # a permutation of the pixels, nothing lost
        seen.add(tuple(torch.nonzero(out_mask[0])[0].tolist()))
    assert len(seen) == expected


def test_turn_is_seeded():
    image = torch.rand(1, 3, 8, 8)
    mask = torch.rand(1, 8, 8)
    a = turn(image, mask, "dihedral", np.random.default_rng(3))
    b = turn(image, mask, "dihedral", np.random.default_rng(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_unknown_augmentation_is_refused_naming_the_parameter():
    with pytest.raises(ParameterError, match="^augment 'rotate': use one of none, flips, dihedral"):
        TrainConfig(augment="rotate")


def test_cli_augment_reaches_the_recipe_and_a_bad_value_exits_2(synth_root, run_cli, tmp_path):
    out = tmp_path / "m.pt"
    res = run_cli("train", synth_root / "widget", "--out", out, "--epochs", "1", "--clean",
                  "--augment", "dihedral", "--device", "cpu", "--workers", "0")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert read_torch_file(out)["training"]["recipe"]["augment"] == "dihedral"
    res = run_cli("train", synth_root / "widget", "--out", tmp_path / "x.pt", "--augment", "spin",
                  "--device", "cpu")  # fmt: skip
    assert res.exit_code == 2
    assert "--augment 'spin': use one of none, flips, dihedral." in res.stderr
    assert not (tmp_path / "x.pt").exists()
