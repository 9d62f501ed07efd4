"""The shipped baselines (PatchCore-style, autoencoder): fit, save safely, load, get attacked."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from pgaudit.attacks.runner import run_audit as _run_audit
from pgaudit.attacks.suites import build_suite
from pgaudit.data.layouts import open_category
from pgaudit.models.baselines import fit_baseline
from pgaudit.models.patchcore import PatchCoreConfig, greedy_coreset, nearest_distance
from pgaudit.models.resolve import load_detector


def run_audit(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The audit's results as the dict it wrote to results.json."""
    return _run_audit(*args, **kwargs).to_json()


def _value(section: dict, name: str) -> float:
    return section["metrics"][name]["value"]


@pytest.fixture(scope="module")
def widget(tmp_path_factory):
    """The synthetic object category at 128 px (20 train; 8 normal + 8 defective test)."""
    from pgaudit.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("widget128")
    make_synthetic_dataset(root, size=128, n_train=20, n_test=16, categories=["widget"])
    return root / "widget"


@pytest.fixture(scope="module")
def patchcore_file(widget, tmp_path_factory):
    path, summary = fit_baseline("patchcore", widget, tmp_path_factory.mktemp("pc") / "pc.pt")
    assert summary["memory_bank"] == round(20 * 16 * 16 * 0.1)
    return path


def test_patchcore_file_is_safe_and_loads(patchcore_file):
    payload = torch.load(patchcore_file, weights_only=True)  # tensors + primitives only
    assert payload["kind"] == "patchcore" and payload["config"]["coreset"] == 0.1
    loaded = load_detector(patchcore_file)
    assert (loaded.kind, loaded.trainable) == ("patchcore", False)
    assert loaded.card["memory_bank"] == 512 and loaded.card["patch_grid"] == [16, 16]
    x = torch.rand(2, 3, 128, 128, requires_grad=True)
    logits = loaded.detector(x)
    assert logits.shape == (2, 16, 16) and (logits >= 0).all()
    (grad,) = torch.autograd.grad(logits.sum(), x)  # white-box attacks apply
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        again = load_detector(patchcore_file).detector(x)
    assert torch.equal(logits.detach(), again)


def test_patchcore_detects_well_and_breaks_under_pgd(patchcore_file, widget, tmp_path):
    """The report's motivating example: a strong clean detector with no robustness at 8/255."""
    loaded = load_detector(patchcore_file)
    suite = build_suite("quick", image_size=128, objective="detection")  # native PGD-10, 8/255
    results = run_audit(
        loaded.detector,
        open_category(widget),
        suite,
        out_dir=tmp_path / "audit",
        progress=False,
        gallery_size=0,
        model_info=loaded.model_info(),
    )
    clean = _value(results["clean"], "image_auroc")
    (pgd,) = results["attacks"]
    assert pgd["attack"] == "pgd" and pgd["steps"] == 10 and pgd["eps_label"] == "8/255"
    assert clean >= 0.9
    assert _value(pgd, "image_auroc") < 0.5 * clean
    assert results["model"]["kind"] == "patchcore"


def test_autoencoder_via_cli_loads_and_is_attacked(run_cli, synth_root, tmp_path):
    out = tmp_path / "ae.pt"
    result = run_cli(
        "fit-baseline", "autoencoder", synth_root / "fabric", "--out", out,
        "--image-size", "64", "--epochs", "2", "--max-train", "8",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "saved" in result.stdout and out.is_file()
    loaded = load_detector(out)
    assert (loaded.kind, loaded.detector.image_size) == ("autoencoder", 64)
    assert loaded.card["training"]["train_images"] == 8
    results = run_audit(
        loaded.detector,
        open_category(synth_root / "fabric"),
        "quick",
        out_dir=tmp_path / "audit",
        progress=False,
        gallery_size=0,
        max_images=8,
    )
    assert len(results["attacks"]) == 2
    for entry in results["attacks"]:  # each attack lowers the metric it targets
        target = "image_auroc" if entry["objective"] == "detection" else "pixel_auroc"
        assert _value(entry, target) < _value(results["clean"], target), entry["id"]
    for name in ("image_auroc", "pixel_auroc"):
        assert _value(results["robust"], name) < _value(results["clean"], name), name
    data = results["data"]  # --max-images 8: a stratified subset of the 16 test images
    assert (data["n_test"], data["max_images"], data["n_normal"], data["n_anomalous"]) == (
        8,
        8,
        4,
        4,
    )
    assert np.load(tmp_path / "audit" / "scores.npz")["labels"].shape == (8,)


@pytest.mark.parametrize("sampler", ["greedy", "random"])
def test_fit_baseline_patchcore_via_cli(run_cli, synth_root, tmp_path, sampler):
    out = tmp_path / f"pc-{sampler}.pt"
    result = run_cli(
        "fit-baseline", "patchcore", synth_root / "widget", "--out", out, "--image-size", "64",
        "--max-train", "4", "--sampler", sampler,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "saved" in result.stdout and "memory bank 26 features" in result.stdout
    loaded = load_detector(out)
    assert (loaded.kind, loaded.detector.image_size) == ("patchcore", 64)
    assert loaded.card["sampler"] == sampler and loaded.card["memory_bank"] == round(4 * 64 * 0.1)
    assert loaded.card["patch_grid"] == [8, 8]


def test_the_random_sampler_picks_another_bank_than_greedy():
    from pgaudit.models.patchcore import select_coreset

    generator = torch.Generator().manual_seed(0)
    features = torch.cat([torch.randn(300, 8, generator=generator) * 0.1, torch.full((1, 8), 5.0)])
    greedy = select_coreset(features, PatchCoreConfig(coreset=0.02, sampler="greedy"))
    random = select_coreset(features, PatchCoreConfig(coreset=0.02, sampler="random"))
    assert greedy.shape == random.shape == (6, 8)
    rows = {tuple(r.tolist()) for r in features}
    assert all(tuple(r.tolist()) in rows for r in random)  # rows of the features
    assert len({tuple(r.tolist()) for r in random}) == 6  # without repetition
    assert (greedy == 5.0).all(dim=1).any() and not (random == 5.0).all(dim=1).any()
    again = select_coreset(features, PatchCoreConfig(coreset=0.02, sampler="random"))
    assert torch.equal(random, again)  # seeded


@pytest.mark.parametrize(
    "args, message",
    [
        (["knn"], "unknown; choose one of patchcore, autoencoder"),
        (["patchcore", "--coreset", "0"], "--coreset 0.0: must be a fraction"),
        (["patchcore", "--image-size", "100"], "--image-size 100: use a multiple of 16"),
    ],
)
def test_fit_baseline_errors(run_cli, synth_root, tmp_path, args, message):
    kind, *options = args
    result = run_cli(
        "fit-baseline", kind, synth_root / "widget", "--out", tmp_path / "x.pt", *options
    )
    assert result.exit_code == 2 and message in result.stderr


def test_nearest_distance_matches_cdist_min_and_its_gradient():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(50, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    bank = torch.randn(30, 8, generator=generator, dtype=torch.float64)
    ours = nearest_distance(queries, bank)
    reference = torch.cdist(queries, bank).min(dim=1).values
    assert torch.allclose(ours, reference)
    (g1,) = torch.autograd.grad(ours.sum(), queries)
    (g2,) = torch.autograd.grad(torch.cdist(queries, bank).min(dim=1).values.sum(), queries)
    assert torch.allclose(g1, g2)


def test_greedy_coreset_covers_outliers():
    generator = torch.Generator().manual_seed(0)
    features = torch.cat(
        [torch.randn(200, 16, generator=generator) * 0.1, torch.full((1, 16), 5.0)]
    )
    chosen = greedy_coreset(features, 5, projection_dim=8, seed=0)
    assert len(set(chosen.tolist())) == 5 and 200 in chosen.tolist()
    assert PatchCoreConfig().sampler == "greedy"
