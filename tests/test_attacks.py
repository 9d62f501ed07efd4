"""The attack engine: budgets, objectives, native vs ART PGD, suites, the runner and the CLI.

A toy detector stands in for a trained one: its patch logit is the mean red-minus-green of the
patch, scaled; synthetic defects are reddish squares. It separates the classes perfectly on clean
images, and a budget of a few /255 is enough to fool it, like an undefended detector.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn
from torch.utils.data import Dataset

from pgaudit.attacks.algorithms import make_attack
from pgaudit.attacks.eps import eps_label, eps_slug, parse_eps, parse_eps_list
from pgaudit.attacks.native import pgd, random_start
from pgaudit.attacks.objectives import (
    DetectionMarginLoss,
    LocalizationMarginLoss,
    detection_objective,
    localization_objective,
    objective_values,
)
from pgaudit.attacks.runner import run_audit as _run_audit
from pgaudit.attacks.suites import AttackSpec, Suite, build_suite, l2_eps
from pgaudit.attacks.testset import stratified_subset
from pgaudit.data.grid import mask_to_grid
from pgaudit.errors import ParameterError, PgauditError
from pgaudit.models.adapters import as_detector
from pgaudit.models.detector import DetectorOutput, smooth_upsample, topk_mean
from pgaudit.results import load_results


def run_audit(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The audit's results as the dict it wrote to results.json."""
    return _run_audit(*args, **kwargs).to_json()


SIZE = 32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Toy-sized tensors gain nothing from threads, and on shared cores threads spin-wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class ToyDetector(nn.Module):
    """Patch logits ``100 · mean(R − G) − 2`` on 4x4 patches: an 8x8 grid, top-3 image score."""

    image_size = SIZE
    top_k = 3

    def __init__(self) -> None:
        super().__init__()
        self.color = nn.Conv2d(3, 1, 1, bias=False)
        self.head = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.color.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1))
            self.head.weight.fill_(100.0)
            self.head.bias.fill_(-2.0)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(F.avg_pool2d(self.color(images), 4)).squeeze(1)


class FunctionDetector:
    """The same rule as a plain callable: the Detector protocol without nn.Module."""

    image_size = SIZE

    def __call__(self, images: Tensor) -> Tensor:
        diff = images[:, 0] - images[:, 1]
        return 100 * F.avg_pool2d(diff.unsqueeze(1), 4).squeeze(1) - 2


def make_toy_data(n: int, seed: int, amp: float = 0.05) -> tuple[Tensor, Tensor, Tensor]:
    """Grey textures; the first n // 2 get a reddish square defect (images, labels, masks)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 1, 8, 8, generator=g)
    images = (0.5 + 0.1 * F.interpolate(low, size=SIZE, mode="bilinear")).repeat(1, 3, 1, 1)
    images = images + 0.003 * torch.randn(images.shape, generator=g)
    masks = torch.zeros(n, SIZE, SIZE)
    labels = torch.zeros(n, dtype=torch.long)
    for i in range(n // 2):
        side = int(torch.randint(6, 11, (1,), generator=g))
        y, x = torch.randint(0, SIZE - side, (2,), generator=g).tolist()
        images[i, 0, y : y + side, x : x + side] += amp / 2
        images[i, 1, y : y + side, x : x + side] -= amp / 2
        masks[i, y : y + side, x : x + side] = 1
        labels[i] = 1
    return images.clamp(0, 1), labels, masks


class ToySet(Dataset):
    """pgaudit dataset items over :func:`make_toy_data`."""

    def __init__(self, n: int, seed: int = 1, with_masks: bool = True) -> None:
        self.images, self.label_tensor, self.masks = make_toy_data(n, seed)
        if not with_masks:
            self.masks.zero_()

    def __len__(self) -> int:
        return len(self.label_tensor)

    @property
    def labels(self) -> list[int]:
        return self.label_tensor.tolist()

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.images[i],
            "label": int(self.label_tensor[i]),
            "mask": self.masks[i],
            "foreground": torch.ones(SIZE, SIZE),
            "index": i,
        }


def _value(section: dict, name: str) -> float:
    value = section["metrics"][name]["value"]
    assert value is not None, section["metrics"][name]["reason"]
    return value


def _by_id(results: dict) -> dict[str, dict]:
    return {a["id"]: a for a in results["attacks"]}


# ------------------------------------------------------------------------------------------------
# budgets


def test_parse_eps_reads_fractions_and_decimals():
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps(" 0.5 ") == 0.5
    assert parse_eps(0.25) == 0.25
    assert parse_eps_list("8/255, 2/255,2/255") == pytest.approx([2 / 255, 8 / 255])
    assert eps_label(8 / 255) == "8/255"
    assert eps_label(1.71) == "1.71"
    assert eps_slug(8 / 255) == "8_255"


@pytest.mark.parametrize("bad", ["", "abc", "0", "-1/255", "1/0", "inf", "nan", "8/", "/255"])
def test_parse_eps_rejects_bad_values_with_the_option_name(bad):
    with pytest.raises(PgauditError, match="--step-size"):
        parse_eps(bad, option="--step-size")


# ------------------------------------------------------------------------------------------------
# objectives and losses


def test_margin_losses_keep_their_gradient_for_large_scores():
    s = torch.tensor([1e4, -1e4], requires_grad=True)
    z = torch.stack([-s, s], dim=1)
    labels = torch.tensor([1, 0])
    # Cross-entropy saturates: exactly zero gradient on a confidently right score.
    (ce_grad,) = torch.autograd.grad(F.cross_entropy(z, labels, reduction="sum"), s)
    assert ce_grad[0] == 0
    (grad,) = torch.autograd.grad(DetectionMarginLoss()(z, F.one_hot(labels, 2)), s)
    assert torch.all(grad.abs() == 1)

    logits = torch.full((2, 4, 4), 1e4, requires_grad=True)
    det = detection_objective(as_detector(ToyDetector()), DetectorOutput(logits), labels)
    (grad,) = torch.autograd.grad(det.sum(), logits)
    assert grad.abs().sum() > 0
    masks = torch.zeros(2, 4, 4)
    masks[0, :2] = 1
    loc = LocalizationMarginLoss()(logits.flatten(1), masks.flatten(1))
    (grad,) = torch.autograd.grad(loc, logits)
    assert torch.all(grad != 0)


def test_losses_honour_reduction():
    z = torch.randn(5, 2)
    y = F.one_hot(torch.tensor([0, 1, 1, 0, 1]), 2).float()
    loss = DetectionMarginLoss()
    per_image = 0.5 * ((z * (1 - y)).sum(1) - (z * y).sum(1))
    for reduction, expected in (("none", per_image), ("sum", per_image.sum())):
        loss.reduction = reduction
        assert torch.allclose(loss(z, y), expected)
    loss.reduction = "mean"
    assert torch.allclose(loss(z, torch.tensor([0, 1, 1, 0, 1])), per_image.mean())
    loc = LocalizationMarginLoss(reduction="none")
    assert loc(torch.randn(3, 16), torch.zeros(3, 16)).shape == (3,)


def test_objectives_push_the_wrong_way():
    logits = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]).repeat(2, 1, 1)
    mask = torch.tensor([[[0.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    # anomalous: mean of the normal cells (2) minus the anomalous cell (4); normal: plain mean.
    assert localization_objective(logits, mask).tolist() == [-2.0, 2.5]
    det, output = as_detector(ToyDetector()), DetectorOutput(logits)
    scores = det.scores(output)  # top-3 mean = 3
    values = detection_objective(det, output, torch.tensor([0, 1]), threshold=1.0)
    assert values.tolist() == [scores[0].item() - 1, -(scores[1].item() - 1)]
    own = DetectorOutput(logits, torch.tensor([5.0, 7.0]))  # a detector's own score wins
    assert detection_objective(det, own, torch.tensor([0, 1])).tolist() == [5.0, -7.0]
    with pytest.raises(ValueError, match="masks"):
        objective_values(det, output, "localization", torch.tensor([0, 1]), None)


# ------------------------------------------------------------------------------------------------
# native PGD


@pytest.mark.parametrize("norm, eps", [("inf", 4 / 255), ("2", 0.5)])
def test_native_pgd_stays_in_budget_and_raises_the_objective(norm, eps):
    det = as_detector(ToyDetector().eval().requires_grad_(False))
    images, labels, masks = make_toy_data(8, seed=3)
    grid = mask_to_grid(masks, (8, 8))

    def objective(x: Tensor) -> Tensor:
        return objective_values(det, det.predict(x), "localization", labels, grid)

    adv = pgd(objective, images, eps=eps, norm=norm, steps=5, rng=np.random.RandomState(0))
    delta = (adv - images).flatten(1)
    bound = delta.abs().amax(1) if norm == "inf" else delta.norm(dim=1)
    assert torch.all(bound <= eps * (1 + 1e-5))
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert torch.all(objective(adv) > objective(images))


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_random_start_is_arts_draw_under_the_same_seed(norm):
    from art.utils import random_sphere

    np.random.seed(7)
    theirs = random_sphere(3, 2 * 4 * 4, 0.1, np.inf if norm == "inf" else 2)
    ours = random_start((3, 2, 4, 4), 0.1, norm, np.random.RandomState(7))
    assert np.allclose(ours.flatten(1).numpy(), theirs, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# the runner on the toy detector


@pytest.fixture(scope="module")
def cross_check(tmp_path_factory):
    """Native and ART PGD with identical settings (L∞ and L2), each objective, 48 images."""
    specs = [
        AttackSpec("pgd", lib, norm, eps, 10, objective)
        for norm, eps in (("inf", 3 / 255), ("2", 0.3))
        for objective in ("detection", "localization")
        for lib in ("native", "art")
    ]
    return run_audit(
        ToyDetector(),
        ToySet(48),
        Suite("cross-check", "native vs ART", specs, headline_eps=3 / 255),
        out_dir=tmp_path_factory.mktemp("cross"),
        progress=False,
        gallery_size=0,
        batch_size=24,
    )


def test_art_and_native_pgd_agree(cross_check):
    entries = cross_check["attacks"]
    assert len(entries) == 8
    for native, art in zip(entries[0::2], entries[1::2], strict=True):
        assert (native["library"], art["library"]) == ("native", "art")
        assert native["id"] == art["id"]
        target = "image_auroc" if native["objective"] == "detection" else "pixel_auroc"
        # not vacuous: the attack moved the targeted metric well below the clean one
        assert _value(native, target) < _value(cross_check["clean"], target) - 0.2
        for name in ("image_auroc", "pixel_auroc"):
            assert abs(_value(native, name) - _value(art, name)) <= 0.02, (native["id"], name)


def test_attacks_lower_the_metric_they_target(cross_check):
    clean = cross_check["clean"]
    assert _value(clean, "image_auroc") > 0.99 and _value(clean, "pixel_auroc") > 0.95
    attacks = _by_id(cross_check)
    assert _value(attacks["pgd-linf-3_255-10-detection"], "image_auroc") < 0.6
    assert _value(attacks["pgd-linf-3_255-10-localization"], "pixel_auroc") < 0.4
    robust = cross_check["robust"]
    assert (
        robust["attack_ids"]
        == ["pgd-linf-3_255-10-detection"] * 2 + ["pgd-linf-3_255-10-localization"] * 2
    )
    assert _value(robust, "image_auroc") <= min(
        _value(a, "image_auroc") for a in cross_check["attacks"] if a["norm"] == "inf"
    )


@pytest.fixture(scope="module")
def full_audit(tmp_path_factory):
    """Every attack of the full suite (2 steps, 2 restarts) on 12 toy images, maps saved."""
    out = tmp_path_factory.mktemp("full")
    suite = build_suite("full", image_size=SIZE, steps=2, restarts=2)
    results = run_audit(
        ToyDetector(), ToySet(12), suite, out_dir=out, save_maps=True, progress=False, seed=3
    )
    return out, suite, results


def test_every_attack_of_the_full_suite_runs(full_audit):
    out, suite, results = full_audit
    assert results == load_results(out)
    assert [a["id"] for a in results["attacks"]] == [s.id for s in suite.attacks]
    kinds = {(a["attack"], a["norm"], a["objective"]) for a in results["attacks"]}
    assert ("apgd", "inf", "detection") in kinds and ("apgd", "inf", "localization") not in kinds
    assert {("square", "inf", "detection"), ("square", "inf", "localization")} <= kinds
    assert {("pgd", "2", "detection"), ("fgsm", "inf", "localization")} <= kinds
    for entry in results["attacks"]:
        for name in ("image_auroc", "pixel_auroc", "aupro"):
            assert math.isfinite(_value(entry, name)), (entry["id"], name)
        assert entry["library"] == "art" and entry["seconds"] >= 0
    apgd = next(a for a in results["attacks"] if a["attack"] == "apgd")
    assert "decision" in apgd["notes"] and "DLR" in apgd["notes"]
    assert results["sanity"][0]["status"] == "pass"
    assert results["headline_eps_label"] == "8/255"
    assert results["meta"]["seed"] == 3 and results["meta"]["art"]


def test_every_attack_of_the_full_suite_lowers_the_metric_it_targets(full_audit):
    """FGSM, PGD, AutoPGD and Square each move their target well below the clean value: an
    attack that returned its input (a Square doing nothing would make ``blackbox-not-stronger``
    pass forever) fails here."""
    _, _, results = full_audit
    clean = results["clean"]
    assert _value(clean, "image_auroc") > 0.99 and _value(clean, "pixel_auroc") > 0.99
    assert {a["attack"] for a in results["attacks"]} == {"fgsm", "pgd", "apgd", "square"}
    for entry in results["attacks"]:
        target = "image_auroc" if entry["objective"] == "detection" else "pixel_auroc"
        assert _value(entry, target) < _value(clean, target) - 0.1, (entry["id"], target)


def test_score_and_map_files_have_the_documented_keys(full_audit):
    out, suite, results = full_audit
    scores = np.load(out / "scores.npz")
    expected = {"labels", "names", "clean.image_scores", "robust.image_scores"}
    expected |= {f"{s.id}.image_scores" for s in suite.attacks}
    assert set(scores.files) == expected
    assert scores["labels"].shape == (12,) and scores["names"].shape == (12,)
    maps = np.load(out / "maps.npz")
    assert {"masks", "clean.maps", "robust.maps"} <= set(maps.files)
    assert maps["clean.maps"].dtype == np.float16 and maps["clean.maps"].shape == (12, SIZE, SIZE)
    assert len(results["gallery"]) == 6
    assert {g["label"] for g in results["gallery"]} == {0, 1}
    for item in results["gallery"]:
        for kind in ("clean", "adversarial", "perturbation", "ground_truth", "clean_map"):
            assert (out / item[kind]).is_file()
        assert item["attack_id"].endswith("localization")


def test_numbers_match_an_independent_computation(full_audit):
    out, suite, results = full_audit
    scores = np.load(out / "scores.npz")
    labels = scores["labels"]
    data = ToySet(12)
    det = ToyDetector()
    with torch.no_grad():
        logits = det(data.images)
    assert np.allclose(scores["clean.image_scores"], topk_mean(logits, 3).numpy(), atol=1e-5)
    assert _value(results["clean"], "image_auroc") == pytest.approx(
        roc_auc_score(labels, scores["clean.image_scores"])
    )
    maps = smooth_upsample(logits, SIZE).numpy()
    assert _value(results["clean"], "pixel_auroc") == pytest.approx(
        roc_auc_score(data.masks.numpy().ravel() > 0.5, maps.ravel()), abs=1e-6
    )
    for spec in suite.attacks:
        entry = _by_id(results)[spec.id]
        assert _value(entry, "image_auroc") == pytest.approx(
            roc_auc_score(labels, scores[f"{spec.id}.image_scores"])
        )


def test_robust_is_the_per_example_worst_case(full_audit):
    out, _, results = full_audit
    scores = np.load(out / "scores.npz")
    labels = scores["labels"]
    head = results["robust"]["attack_ids"]
    assert head and all(_by_id(results)[i]["eps_label"] == "8/255" for i in head)
    assert all(_by_id(results)[i]["norm"] == "inf" for i in head)
    stack = np.stack([scores["clean.image_scores"], *(scores[f"{i}.image_scores"] for i in head)])
    worst = np.where(labels == 1, stack.min(0), stack.max(0))
    assert np.allclose(scores["robust.image_scores"], worst)
    assert _value(results["robust"], "image_auroc") == pytest.approx(roc_auc_score(labels, worst))


def test_worst_case_over_attacks_is_per_example_not_the_minimum_auroc():
    from pgaudit.metrics import worst_case_scores

    labels = np.array([0, 0, 1, 1])
    clean = np.array([0.1, 0.2, 0.8, 0.9])
    attack_a = np.array([0.85, 0.2, 0.8, 0.9])  # raises normal image 0 only: AUROC 0.75
    attack_b = np.array([0.1, 0.2, 0.8, 0.15])  # lowers anomalous image 3 only: AUROC 0.75
    worst = worst_case_scores(labels, clean, attack_a, attack_b)
    assert worst.tolist() == [0.85, 0.2, 0.8, 0.15]
    assert roc_auc_score(labels, attack_a) == roc_auc_score(labels, attack_b) == 0.75
    assert roc_auc_score(labels, worst) == 0.25


class _Spy(ToyDetector):
    """Records whether any weight required grad, or the model was in train mode, in a forward."""

    def __init__(self) -> None:
        super().__init__()
        self.saw_trainable = False

    def forward(self, images: Tensor) -> Tensor:
        self.saw_trainable |= self.training or any(p.requires_grad for p in self.parameters())
        return super().forward(images)


def test_attacks_freeze_weights_then_restore_flags_without_gradients(tmp_path):
    det = _Spy().train()
    det.head.bias.requires_grad_(False)  # mixed flags must come back exactly
    flags = [p.requires_grad for p in det.parameters()]
    specs = [
        AttackSpec("pgd", "native", "inf", 4 / 255, 2, "detection"),
        AttackSpec("pgd", "art", "inf", 4 / 255, 2, "localization"),
        AttackSpec("apgd", "art", "inf", 4 / 255, 2, "detection"),
        AttackSpec("square", "art", "inf", 4 / 255, 2, "localization"),
    ]
    run_audit(
        det, ToySet(8), Suite("t", "t", specs, 4 / 255), out_dir=tmp_path, progress=False,
        gallery_size=0,
    )  # fmt: skip
    assert not det.saw_trainable
    assert det.training
    assert [p.requires_grad for p in det.parameters()] == flags
    assert all(p.grad is None for p in det.parameters())


def test_any_callable_detector_can_be_attacked(tmp_path):
    specs = [
        AttackSpec("pgd", lib, "inf", 8 / 255, 5, objective)
        for lib in ("native", "art")
        for objective in ("detection", "localization")
    ]
    results = run_audit(
        FunctionDetector(), ToySet(12), Suite("t", "t", specs), out_dir=tmp_path,
        progress=False, gallery_size=2,
    )  # fmt: skip
    assert results["model"]["fingerprint"] is None
    for entry in results["attacks"]:
        target = "image_auroc" if entry["objective"] == "detection" else "pixel_auroc"
        assert _value(entry, target) < 0.5 < _value(results["clean"], target)


class _BatchNormToy(ToyDetector):
    """The toy rule behind an identity BatchNorm: a CNN whose state holds a 0-d tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(3, affine=False, track_running_stats=True)
        self.norm.running_var.zero_().add_(1 - self.norm.eps)  # identity in eval mode

    def forward(self, images: Tensor) -> Tensor:
        return super().forward(self.norm(images))


def test_a_cnn_with_batchnorm_is_audited_without_model_info(tmp_path):
    det = _BatchNormToy().eval()
    assert det.state_dict()["norm.num_batches_tracked"].dim() == 0
    results = run_audit(det, ToySet(8), "quick", out_dir=tmp_path, progress=False)
    assert results["model"]["fingerprint"].startswith("sha256-weights:")
    other = _BatchNormToy().eval()
    other.norm.num_batches_tracked.fill_(7)  # the 0-d tensor is part of the fingerprint
    from pgaudit.models.checkpoint import weights_fingerprint

    assert weights_fingerprint(other) != results["model"]["fingerprint"]


def test_api_audits_have_intervals_the_gate_can_use(tmp_path):
    from pgaudit.gate import GateCriteria, evaluate_gate

    results = _run_audit(ToyDetector(), ToySet(12), "quick", out_dir=tmp_path, progress=False)
    entry = results.robust.metric("image_auroc")
    assert entry.ci is not None and entry.ci[0] <= entry.value <= entry.ci[1]
    outcome = evaluate_gate(results, GateCriteria(min_robust_auroc=0.0, use_lower_bound=True))
    assert outcome.passed
    with pytest.raises(PgauditError, match="^bootstrap -1 must be 0"):
        run_audit(ToyDetector(), ToySet(4), "quick", out_dir=tmp_path, bootstrap=-1)


class _ArrayLabels(ToySet):
    """A dataset whose ``labels`` is a numpy array (or a tensor): truthiness is ambiguous."""

    def __init__(self, n: int, kind: str) -> None:
        super().__init__(n)
        self._kind = kind

    @property
    def labels(self):  # type: ignore[override]
        y = self.label_tensor
        return y.numpy() if self._kind == "numpy" else y


@pytest.mark.parametrize("kind", ["numpy", "tensor"])
def test_datasets_with_array_labels_are_audited(tmp_path, kind):
    from pgaudit.attacks.testset import prepare_test_set

    test = prepare_test_set(_ArrayLabels(8, kind), SIZE, None, 0)
    assert test.labels.tolist() == ToySet(8).labels


def test_localization_attacks_are_skipped_without_masks(tmp_path):
    results = run_audit(
        ToyDetector(), ToySet(8, with_masks=False), "quick", out_dir=tmp_path, progress=False
    )
    assert [a["objective"] for a in results["attacks"]] == ["detection"]
    assert results["suite"]["skipped"][0]["id"] == "pgd-linf-8_255-10-localization"
    assert results["clean"]["metrics"]["pixel_auroc"]["value"] is None
    assert results["data"]["has_masks"] is False


def test_same_seed_same_numbers(tmp_path):
    specs = [
        AttackSpec("pgd", "native", "inf", 4 / 255, 3, "detection", restarts=2),
        AttackSpec("square", "art", "inf", 4 / 255, 3, "localization"),
    ]
    runs = [
        run_audit(
            ToyDetector(),
            ToySet(8),
            Suite("t", "t", specs, 4 / 255),
            out_dir=tmp_path / str(i),
            progress=False,
            gallery_size=0,
            seed=5,
        )  # fmt: skip
        for i in range(2)
    ]
    first, second = (np.load(tmp_path / str(i) / "scores.npz") for i in range(2))
    for key in first.files:
        assert np.array_equal(first[key], second[key]), key
    assert runs[0]["attacks"][0]["metrics"] == runs[1]["attacks"][0]["metrics"]


def test_stratified_subset_keeps_both_classes():
    labels = np.array([0] * 18 + [1] * 2)
    picked = stratified_subset(labels, 4, seed=0)
    assert len(picked) == 4 and set(labels[picked]) == {0, 1}
    assert picked == sorted(picked) == stratified_subset(labels, 4, seed=0)
    assert stratified_subset(labels, None, 0) == list(range(20))


# ------------------------------------------------------------------------------------------------
# suites


def test_suites_contents_and_ids():
    quick = build_suite("quick")
    assert [a.id for a in quick.attacks] == [
        "pgd-linf-8_255-10-detection",
        "pgd-linf-8_255-10-localization",
    ]
    assert {a.library for a in quick.attacks} == {"native"}
    assert quick.attacks[0].effective_step_size == pytest.approx(2.5 * (8 / 255) / 10)
    standard = build_suite("standard")
    assert len(standard.attacks) == 18 and {a.library for a in standard.attacks} == {"art"}
    assert {a.eps_label for a in standard.attacks} == {"2/255", "4/255", "8/255"}
    full = build_suite("full", image_size=128)
    ids = {a.id for a in full.attacks}
    assert set(a.id for a in standard.attacks) < ids
    assert "pgd-linf-8_255-100x5-localization" in ids
    assert f"pgd-l2-{l2_eps(128)}-50-detection" in ids and l2_eps(224) == 3.0
    assert "apgd-linf-8_255-100-detection" in ids and "square-linf-8_255-1000-detection" in ids
    assert full.to_dict()["attacks"][0]["id"] == full.attacks[0].id


def test_suite_overrides():
    suite = build_suite("standard", eps=[4 / 255, 1 / 255], steps=3, objective="detection")
    assert suite.headline_eps == pytest.approx(4 / 255)
    assert {a.objective for a in suite.attacks} == {"detection"}
    assert [a.id for a in suite.attacks] == [
        "fgsm-linf-1_255-1-detection",
        "pgd-linf-1_255-3-detection",
        "fgsm-linf-4_255-1-detection",
        "pgd-linf-4_255-3-detection",
    ]
    tuned = build_suite("quick", step_size=1 / 255, restarts=3)
    assert tuned.attacks[0].effective_step_size == pytest.approx(1 / 255)
    assert tuned.attacks[0].id == "pgd-linf-8_255-10x3-detection"
    assert "highest objective" in tuned.attacks[0].notes
    assert tuned.to_dict()["overrides"] == {"step_size": 1 / 255, "restarts": 3}
    for kwargs in ({"objective": "pixels"}, {"steps": 0}, {"restarts": 0}):
        with pytest.raises(PgauditError):
            build_suite("quick", **kwargs)
    with pytest.raises(ParameterError, match="^suite 'huge' is unknown"):
        build_suite("huge")


# ------------------------------------------------------------------------------------------------
# the command line


@pytest.fixture(scope="module")
def cli_project(tmp_path_factory):
    """A 32 px synthetic category and an (untrained) micro PatchGuard checkpoint."""
    from pgaudit.data.synth import make_synthetic_dataset
    from pgaudit.models.checkpoint import save_checkpoint
    from pgaudit.models.patchguard import PatchGuard
    from pgaudit.models.presets import PatchGuardConfig

    root = tmp_path_factory.mktemp("cli")
    make_synthetic_dataset(root / "data", size=32, n_train=1, n_test=6, categories=["fabric"])
    config = PatchGuardConfig(
        name="micro",
        backbone="vit_tiny_patch16_224",
        backbone_kwargs=dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
        image_size=SIZE,
        feature_blocks=(2,),
        reg_blocks=(1, 2),
        reg_weights=(0.01, 0.05),
        dsc_hidden=64,
    )
    torch.manual_seed(0)
    save_checkpoint(root / "micro.pt", PatchGuard(config))
    return root


def test_cli_attack_writes_a_valid_audit(cli_project, run_cli, monkeypatch):
    monkeypatch.chdir(cli_project)
    res = run_cli(
        "attack", "micro.pt", "data/fabric", "--out", "audit", "--steps", "2", "--save-maps",
        "--quiet", "--device", "cpu",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    results = load_results(cli_project / "audit")
    assert results["suite"]["name"] == "quick"
    assert results["model"]["fingerprint"].startswith("sha256:")
    assert results["model"]["preset"] == "micro"
    assert results["data"]["fingerprint"].startswith("sha256:")
    assert results["data"]["n_test"] == 6
    assert results["meta"]["command"].startswith("pgaudit attack micro.pt")
    names = np.load(cli_project / "audit" / "scores.npz")["names"].tolist()
    assert all(n.startswith("test/") for n in names)
    assert (cli_project / "audit" / "maps.npz").is_file()
    assert "robust" in res.stdout


def test_cli_attack_runs_from_project_config(cli_project, run_cli, monkeypatch):
    monkeypatch.chdir(cli_project)
    (cli_project / "pgaudit.toml").write_text(
        'model = "micro.pt"\ndata = "data/fabric"\nsuite = "quick"\nout = "from-config"\n'
    )
    try:
        res = run_cli("attack", "--steps", "1", "--objective", "detection", "--quiet")
    finally:
        (cli_project / "pgaudit.toml").unlink()
    assert res.exit_code == 0, res.stderr
    results = load_results(cli_project / "from-config")
    assert [a["id"] for a in results["attacks"]] == ["pgd-linf-8_255-1-detection"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--eps", "eight"], "--eps"),
        (["--suite", "huge"], "--suite"),
        (["--max-images", "0"], "--max-images"),
    ],
)
def test_cli_attack_reports_bad_options_in_one_line(
    cli_project, run_cli, monkeypatch, args, message
):
    monkeypatch.chdir(cli_project)
    res = run_cli("attack", "micro.pt", "data/fabric", "--out", "bad", "--quiet", *args)
    assert res.exit_code == 2
    assert message in res.stderr and "Traceback" not in res.stderr


def test_cli_attack_without_model_says_how_to_fix(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run_cli("attack")
    assert res.exit_code == 2 and "pgaudit.toml" in res.stderr


def test_art_pgd_skips_its_success_rate_passes(monkeypatch):
    """ART's PGD computes a success rate only to log it (two forwards): the bridge skips it."""
    from art.attacks.evasion.projected_gradient_descent import (
        projected_gradient_descent_pytorch as pgd_module,
    )

    from pgaudit.attacks.art_bridge import ArtBridge

    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return 0.0

    monkeypatch.setattr(pgd_module, "compute_success", counting)
    images, labels, masks = make_toy_data(4, seed=0)
    bridge = ArtBridge(ToyDetector(), input_shape=(3, SIZE, SIZE), cells=(SIZE // 4) ** 2,
                       device="cpu")  # fmt: skip
    spec = next(
        s for s in build_suite("standard", image_size=SIZE, steps=2).attacks
        if s.attack == "pgd" and s.objective == "detection"
    )  # fmt: skip
    adv = bridge.generate(make_attack(spec), images, labels, None, threshold=0.0)
    assert adv.shape == images.shape and calls == []
    assert pgd_module.compute_success is counting  # restored after the run


# ------------------------------------------------------------------------------------------------
# the perturbation-budget check, the report flag and --help


class _CornerSet(ToySet):
    """Toy images with a black top-left pixel: an attack can leave [0, 1] while inside ε."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.images[:, :, 0, 0] = 0.0


def _over_eps(images: Tensor, eps: float) -> Tensor:
    return (images + 2 * eps).clamp(0, 1)


def _below_zero(images: Tensor, eps: float) -> Tensor:
    return images - (images == 0).float() * eps / 2


@pytest.mark.parametrize(
    "broken, evidence", [(_over_eps, r"> eps 0\.0313725"), (_below_zero, r"outside \[0, 1\]")]
)
def test_the_budget_check_fails_an_attack_over_eps_or_outside_the_pixel_range(
    tmp_path, monkeypatch, broken, evidence
):
    import re

    import pgaudit.attacks.native as native

    real = native.pgd

    def leaky(objective, images, *, eps, **kwargs):
        return broken(real(objective, images, eps=eps, **kwargs), eps)

    monkeypatch.setattr(native, "pgd", leaky)
    results = run_audit(
        ToyDetector(), _CornerSet(8), "quick", out_dir=tmp_path, progress=False, gallery_size=0
    )
    (check,) = [c for c in results["sanity"] if c["name"] == "perturbation-budget"]
    assert check["status"] == "fail"
    assert re.search(evidence, check["evidence"]), check["evidence"]
    assert "pgd-linf-8_255-10-detection" in check["evidence"]


def test_the_budget_check_passes_real_attacks(tmp_path):
    results = run_audit(
        ToyDetector(), _CornerSet(8), "quick", out_dir=tmp_path, progress=False, gallery_size=0
    )
    (check,) = [c for c in results["sanity"] if c["name"] == "perturbation-budget"]
    assert check["status"] == "pass", check["evidence"]


def test_cli_attack_prints_a_failed_check(cli_project, run_cli, monkeypatch):
    import pgaudit.attacks.native as native

    real = native.pgd
    monkeypatch.setattr(
        native, "pgd", lambda f, x, *, eps, **kw: _over_eps(real(f, x, eps=eps, **kw), eps)
    )
    monkeypatch.chdir(cli_project)
    res = run_cli(
        "attack", "micro.pt", "data/fabric", "--out", "leaky", "--steps", "1", "--objective",
        "detection", "--quiet", "--device", "cpu", "--bootstrap", "0",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "fail perturbation-budget: pgd-linf-8_255-1-detection" in " ".join(res.stdout.split())


def test_cli_attack_prints_the_attacks_it_skipped(cli_project, run_cli, monkeypatch, tmp_path):
    import shutil

    data = shutil.copytree(cli_project / "data" / "fabric", tmp_path / "fabric")
    shutil.rmtree(data / "ground_truth")
    monkeypatch.chdir(cli_project)
    res = run_cli(
        "attack", "micro.pt", data, "--out", tmp_path / "no-masks", "--steps", "1", "--quiet",
        "--device", "cpu", "--bootstrap", "0",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    said = " ".join((res.stdout + res.stderr).split())
    assert (
        "skipped pgd-linf-8_255-1-localization: no ground-truth masks for the anomalous test "
        "images" in said
    )
    assert "skipped pgd-linf-8_255-1-detection" not in said


def test_cli_attack_report_writes_the_html_report(cli_project, run_cli, monkeypatch):
    monkeypatch.chdir(cli_project)
    res = run_cli(
        "attack", "micro.pt", "data/fabric", "--out", "with-report", "--steps", "1", "--quiet",
        "--device", "cpu", "--bootstrap", "0", "--report",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    html = (cli_project / "with-report" / "report.html").read_text(encoding="utf-8")
    results = load_results(cli_project / "with-report")
    assert html.startswith("<!DOCTYPE html>") or html.lower().startswith("<!doctype html>")
    assert results["model"]["fingerprint"] in html or "micro" in html
    assert "pgd-linf-8_255-1-localization" in html
    assert "report.html" in " ".join(res.stdout.split())
    res = run_cli(
        "attack", "micro.pt", "data/fabric", "--out", "no-report", "--steps", "1", "--quiet",
        "--device", "cpu", "--bootstrap", "0",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert not (cli_project / "no-report" / "report.html").exists()


_ATTACK_TOKEN = r"\b(FGSM|AutoPGD-\d+|PGD-\d+|Square-\d+)"


def _spec_token(spec: AttackSpec) -> str:
    name = {"fgsm": "FGSM", "pgd": "PGD", "apgd": "AutoPGD", "square": "Square"}[spec.attack]
    return name if spec.attack == "fgsm" else f"{name}-{spec.steps}"


def test_attack_help_describes_exactly_what_build_suite_builds(run_cli, monkeypatch):
    """Every attack (kind, steps, L∞ budgets, restarts) of every suite is in `attack --help`,
    and the help names no attack the suite lacks."""
    import re

    from pgaudit.attacks.suites import SUITES

    monkeypatch.setenv("COLUMNS", "400")
    res = run_cli("attack", "--help")
    assert res.exit_code == 0
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", res.stdout).split())
    start = text.index("Attack suite (default quick).")
    sections = {}
    for name, following in zip(SUITES, (*SUITES[1:], None), strict=True):
        begin = text.index(f"{name}:", start) + len(name) + 1
        end = text.index(f"; {following}:", begin) if following else text.index("--out", begin)
        sections[name] = text[begin:end]
    described: dict[str, set[str]] = {}
    for name in SUITES:
        section = sections[name]
        tokens = set(re.findall(_ATTACK_TOKEN, section))
        budgets = set(re.findall(r"\d+/255", section))
        if section.strip().startswith("standard +"):
            tokens |= described["standard"]
            budgets |= set(re.findall(r"\d+/255", sections["standard"]))
        described[name] = tokens
        suite = build_suite(name, image_size=224)
        assert tokens == {_spec_token(s) for s in suite.attacks}, name
        assert budgets == {s.eps_label for s in suite.attacks if s.norm == "inf"}, name
        for spec in suite.attacks:
            if spec.restarts > 1:
                assert f"{_spec_token(spec)} x {spec.restarts} restarts" in section, spec.id
            if spec.norm == "2":
                assert "L2" in section, spec.id
        if {s.objective for s in suite.attacks} == {"detection", "localization"}:
            assert "each objective" in section, name


def test_a_test_set_of_one_class_is_refused_before_any_attack(tmp_path, run_cli, cli_project,
                                                              monkeypatch):  # fmt: skip
    """Only normal images (or --max-images 1) used to audit "successfully" with every metric n/a."""
    import shutil

    from pgaudit.attacks.testset import prepare_test_set

    class Normal(ToySet):
        @property
        def labels(self) -> list[int]:
            return [0] * len(self)

        def __getitem__(self, i: int) -> dict:
            return {**super().__getitem__(i), "label": 0}

    with pytest.raises(PgauditError, match="test images are all normal: AUROC"):
        prepare_test_set(Normal(6), SIZE, None, 0)
    monkeypatch.chdir(cli_project)
    res = run_cli("attack", "micro.pt", "data/fabric", "--max-images", "1", "--out", "one")
    assert res.exit_code == 2 and "chosen by --max-images are all" in " ".join(res.stderr.split())
    assert "or raise --max-images" in " ".join(res.stderr.split())
    normal = cli_project / "normal-only"
    shutil.copytree(cli_project / "data/fabric", normal)
    for folder in (normal / "test").iterdir():
        if folder.name != "good":
            shutil.rmtree(folder)
    shutil.rmtree(normal / "ground_truth", ignore_errors=True)
    res = run_cli("attack", "micro.pt", str(normal), "--out", "normal-audit")
    assert res.exit_code == 2 and "are all normal" in res.stderr
    assert not (cli_project / "normal-audit").exists()


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_an_audit_folder_changes_all_at_once_or_not_at_all(cli_project, run_cli, monkeypatch):
    """A rerun leaves no artefact of the previous run (maps.npz, report.html); a failed rerun
    leaves the previous audit byte for byte and no staging folder; a killed run's is cleaned."""
    from pgaudit.attacks import runner

    monkeypatch.chdir(cli_project)
    args = ("attack", "micro.pt", "data/fabric", "--out", "redo", "--steps", "1", "--bootstrap",
            "0", "--quiet", "--device", "cpu")  # fmt: skip
    assert run_cli(*args, "--save-maps", "--report").exit_code == 0
    (cli_project / "redo" / "notes.md").write_text("mine")  # not an artefact: kept
    assert {"maps.npz", "report.html"} <= set(_tree(cli_project / "redo"))
    assert run_cli(*args).exit_code == 0
    files = set(_tree(cli_project / "redo"))
    assert "maps.npz" not in files and "report.html" not in files and "notes.md" in files
    before = _tree(cli_project / "redo")

    def broken(*_args, **_kwargs):
        raise PgauditError("disk full (simulated)")

    monkeypatch.setattr(runner, "_write_gallery", broken)  # after scores.npz is written
    res = run_cli(*args, "--seed", "3")
    assert res.exit_code == 2 and "disk full" in res.stderr
    assert _tree(cli_project / "redo") == before
    assert not list(cli_project.glob(".redo.partial-*"))
    monkeypatch.undo()

    abandoned = cli_project / ".redo.partial-999999-deadbeef"  # a pid that does not run
    abandoned.mkdir()
    (abandoned / "results.json").write_text("{}")
    monkeypatch.chdir(cli_project)
    assert run_cli(*args).exit_code == 0
    assert not abandoned.exists()


class _Thresholded(nn.Module):
    """Patch logits from a hard threshold of redness: no gradient reaches the input."""

    image_size = SIZE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = F.avg_pool2d(x[:, :1] - x[:, 1:2], 4)[:, 0]
        return (red > 0.01).float() * 4 - 2 + red.detach()


class _NotFinite(nn.Module):
    image_size = SIZE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x[:, :1], 4)[:, 0] * float("nan")


def test_a_gradient_free_detector_gets_black_box_attacks_in_place_of_white_box_ones(tmp_path):
    """It used to start the audit and crash in PGD; then the white-box runs were skipped and a
    suite of white-box attacks only was refused. Now each white-box run is replaced by NES at
    the same budget (the reason in results.json, for the report), Square runs as it is, and the
    quick suite audits such a detector too."""
    from pgaudit.attacks.suites import AttackSpec, Suite

    suite = Suite("mixed", "PGD and Square", [
        AttackSpec("pgd", "native", "inf", 8 / 255, 5, "detection"),
        AttackSpec("square", "art", "inf", 8 / 255, 30, "detection"),
    ])  # fmt: skip
    results = run_audit(_Thresholded(), ToySet(12), suite, out_dir=tmp_path / "a",
                        progress=False, bootstrap=0)  # fmt: skip
    assert [a["attack"] for a in results["attacks"]] == ["nes", "square"]
    assert results["attacks"][0]["steps"] == 5 and results["attacks"][0]["eps"] == 8 / 255
    skipped = results["suite"]["skipped"]
    assert skipped and "no gradient" in skipped[0]["reason"] and "pgd" in skipped[0]["id"]
    assert "NES" in skipped[0]["reason"] and "--surrogate" in skipped[0]["reason"]
    assert results["robust"]["attack_ids"] == [a["id"] for a in results["attacks"]]
    quick = run_audit(_Thresholded(), ToySet(12), "quick", out_dir=tmp_path / "b",
                      progress=False, bootstrap=0)  # fmt: skip
    assert {a["attack"] for a in quick["attacks"]} == {"nes"}


def test_a_detector_with_nan_scores_is_refused_at_load(tmp_path, monkeypatch, run_cli):
    from pgaudit.models.adapters import DetectorAdapter, probe

    with pytest.raises(PgauditError, match="NaN or infinite"):
        probe(DetectorAdapter(_NotFinite(), SIZE, name="nan detector"), "nan detector")
