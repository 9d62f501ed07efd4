"""The attack suites on real PatchGuard models (the toy detectors of test_attacks.py aside)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import torch
from small_models import SMALL

from pgaudit.attacks.runner import run_audit as _run_audit
from pgaudit.attacks.suites import build_suite
from pgaudit.data.layouts import open_category
from pgaudit.data.synth import make_synthetic_dataset
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import TrainConfig, get_preset
from pgaudit.training.loop import harden


def run_audit(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The audit's results as the dict it wrote to results.json."""
    return _run_audit(*args, **kwargs).to_json()


def _value(section: dict, name: str) -> float:
    entry = section["metrics"][name]
    assert entry["value"] is not None, entry["reason"]
    return entry["value"]


def test_every_attack_of_the_full_suite_runs_on_the_tiny_preset(tmp_path, monkeypatch):
    import pgaudit.models.backbones as backbones

    captures = []
    original = backbones.block_with_attention

    def counting(block, x):
        captures.append(1)
        return original(block, x)

    monkeypatch.setattr(backbones, "block_with_attention", counting)
    make_synthetic_dataset(tmp_path / "d", size=32, n_train=2, n_test=4, categories=("widget",))
    torch.manual_seed(0)
    model = PatchGuard(replace(get_preset("tiny"), image_size=32))
    suite = build_suite("full", image_size=32, steps=1, restarts=1)
    results = run_audit(
        model, open_category(tmp_path / "d" / "widget"), suite, out_dir=tmp_path / "audit",
        progress=False, gallery_size=2,
    )  # fmt: skip
    assert [a["id"] for a in results["attacks"]] == [s.id for s in suite.attacks]
    for entry in results["attacks"]:
        for name, metric in entry["metrics"].items():
            assert metric["reason"] or math.isfinite(metric["value"]), (entry["id"], name)
    assert {c["name"] for c in results["sanity"]} >= {"unbounded-budget", "gradient-health"}
    # Attacks (ART and native) never capture attention nor leave parameter gradients behind.
    assert captures == []
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


@pytest.fixture(scope="module")
def widget(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root, size=64, n_train=32, n_test=20, categories=("widget",))
    return open_category(root / "widget")


def test_pgd_collapses_a_clean_trained_patchguard(widget, tmp_path):
    """Issue 4's motivating number: PGD-10 at 8/255 takes ≥ 0.3 off image and pixel AUROC."""
    torch.manual_seed(0)
    recipe = TrainConfig(epochs=40, batch_size=8, lr=1e-3, adversarial=False, fapa_max_side=60)
    model = harden(PatchGuard(SMALL), widget, recipe, seed=0, device="cpu").model
    results = run_audit(model, widget, "quick", out_dir=tmp_path, progress=False, gallery_size=0)
    clean, robust = results["clean"], results["robust"]
    assert _value(clean, "image_auroc") - _value(robust, "image_auroc") >= 0.3
    assert _value(clean, "pixel_auroc") - _value(robust, "pixel_auroc") >= 0.3
