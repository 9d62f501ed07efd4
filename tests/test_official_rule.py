"""Official PatchGuard checkpoints are judged by the official code's own rule, and ``--suite
official`` reproduces its test (checked against an in-test reference of that rule: PGD-10 on the
patch objective, step 2.5·ε/10, no random start; top-3 mean; scipy's Gaussian, sigma 6, radius 7)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from pgaudit.models.detector import official_upsample
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import PatchGuardConfig


@pytest.mark.parametrize("grid, size", [(4, 56), (8, 128), (2, 4), (2, 5)])
def test_the_official_map_rule_is_scipys_gaussian_filter(grid, size):
    logits = torch.randn(3, grid, grid)
    ref = F.interpolate(logits[:, None], size=(size, size), mode="bilinear", align_corners=False)
    ref = gaussian_filter(ref[:, 0].numpy(), sigma=6, radius=7, axes=(1, 2))
    assert np.abs(official_upsample(logits, size).numpy() - ref).max() < 1e-5


def _official_pgd(model, images, patch_masks, eps, steps=10):
    """The official test attack, restated from its description (not its code)."""
    alpha, x0, x = 2.5 * eps / steps, images.clone(), images.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        scores = model(x).flatten(1)
        normal = ((1 - patch_masks) * scores).sum(1) / ((patch_masks == 0).sum(1) + 1e-8)
        defective = (patch_masks * scores).sum(1) / ((patch_masks != 0).sum(1) + 1e-8)
        (grad,) = torch.autograd.grad((normal - defective).sum(), x)
        x = torch.clamp(x0 + torch.clamp(x + alpha * grad.sign() - x0, -eps, eps), 0, 1).detach()
    return x


def _official_numbers(model, images, labels, masks, patch):
    with torch.no_grad():
        scores = model(images)
    image = scores.flatten(1).topk(3, dim=1).values.mean(1).numpy()
    up = F.interpolate(scores[:, None], size=masks.shape[-2:], mode="bilinear", align_corners=False)
    pixel = gaussian_filter(up[:, 0].numpy(), sigma=6, radius=7, axes=(1, 2))
    return roc_auc_score(labels, image), roc_auc_score(masks.reshape(-1), pixel.reshape(-1))


def test_suite_official_gives_the_official_codes_numbers(tmp_path, run_cli):
    from pgaudit.attacks.testset import iterate_batches, prepare_test_set
    from pgaudit.data import open_category
    from pgaudit.data.synth import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "data", size=56, n_train=4, n_test=12,
                           categories=("widget",))  # fmt: skip
    config = PatchGuardConfig(backbone="vit_small_patch14_dinov2", backbone_kwargs={"depth": 2},
                              image_size=56, feature_blocks=(2,), reg_blocks=(1, 2),
                              dsc_hidden=64)  # fmt: skip
    torch.manual_seed(0)
    model = PatchGuard(config).eval()
    torch.save(dict(model.state_dict()), tmp_path / "patchguard_mvtec_widget.pth")
    res = run_cli("attack", str(tmp_path / "patchguard_mvtec_widget.pth"),
                  str(tmp_path / "data/widget"), "--suite", "official", "--out",
                  str(tmp_path / "audit"), "--device", "cpu", "--bootstrap", "0", "--quiet")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    found = json.loads((tmp_path / "audit/results.json").read_text())
    assert "official PatchGuard rule" in found["adaptive"]["differentiated"]

    test = prepare_test_set(open_category(tmp_path / "data/widget"), 56, None, 0)
    (_, images, labels, masks), = iterate_batches(test, 64, torch.device("cpu"))  # fmt: skip
    patch = F.max_pool2d(masks[:, None], 14)[:, 0].flatten(1)  # any defective pixel per patch
    for p in model.parameters():
        p.requires_grad_(False)
    clean = _official_numbers(model, images, labels.numpy(), masks.numpy(), patch)
    adv = _official_pgd(model, images, patch, 8 / 255)
    robust = _official_numbers(model, adv, labels.numpy(), masks.numpy(), patch)

    def value(section: dict, name: str) -> float:
        return section["metrics"][name]["value"]

    assert value(found["clean"], "image_auroc") == pytest.approx(clean[0], abs=1e-3)
    assert value(found["clean"], "pixel_auroc") == pytest.approx(clean[1], abs=1e-3)
    (attack,) = found["attacks"]  # the official number is the attack's own row (pgaudit's robust
    # row is the per-example worst case with the clean images, lower on pixels)
    assert attack["id"] == "pgd-linf-8_255-10-localization" and attack["random_init"] is False
    assert value(attack, "image_auroc") == pytest.approx(robust[0], abs=1e-3)
    assert value(attack, "pixel_auroc") == pytest.approx(robust[1], abs=1e-3)
    assert value(found["robust"], "pixel_auroc") <= value(attack, "pixel_auroc")
