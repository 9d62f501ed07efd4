"""Native Auto-PGD (pgaudit.attacks.apgd): budget, its own objective, seeding, batch independence,
the step-size rule, and strength against PGD at equal budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from test_attacks import ToyDetector, make_toy_data

from pgaudit.attacks.algorithms import NativeAPGD, make_attack
from pgaudit.attacks.apgd import apgd, checkpoints
from pgaudit.attacks.execute import Attacker, BatchTarget
from pgaudit.attacks.native import pgd, random_start
from pgaudit.attacks.suites import AttackSpec
from pgaudit.data.grid import mask_to_grid
from pgaudit.errors import ParameterError
from pgaudit.models.adapters import as_detector


@pytest.fixture(scope="module")
def toy():
    images, labels, masks = make_toy_data(24, seed=1)
    detector = as_detector(ToyDetector().eval().requires_grad_(False))
    return detector, images, labels, mask_to_grid(masks, (8, 8))


def _objective(detector, labels, grid, objective):
    from pgaudit.attacks.objectives import objective_values

    return lambda x: objective_values(detector, detector.predict(x), objective, labels, grid)


def test_checkpoints_are_the_published_ones():
    # p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (exact arithmetic, as the paper states)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == [] and checkpoints(10) == [3, 5, 6, 7, 8, 9]


@pytest.mark.parametrize(("norm", "eps"), [("inf", 4 / 255), ("2", 0.5)])
@pytest.mark.parametrize("objective", ["detection", "localization"])
def test_apgd_stays_in_budget_and_raises_its_objective(toy, norm, eps, objective):
    detector, images, labels, grid = toy
    fn = _objective(detector, labels, grid, objective)
    adv = apgd(fn, images, eps=eps, norm=norm, steps=10, rng=np.random.RandomState(0))
    delta = (adv - images).flatten(1)
    size = delta.abs().amax(1) if norm == "inf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-5
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        start = fn(images + random_start(tuple(images.shape), eps, norm, np.random.RandomState(0)))
        end = fn(adv)
    assert (end >= start - 1e-4).all()  # the best iterate never loses to its start
    assert float(end.mean()) > float(start.mean()) + 1.0


def test_apgd_is_deterministic_under_a_seed_and_independent_of_the_batch(toy):
    detector, images, labels, grid = toy
    fn = _objective(detector, labels, grid, "detection")
    runs = [apgd(fn, images, eps=3 / 255, steps=10, rng=np.random.RandomState(7)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    start = random_start(tuple(images.shape), 3 / 255, "inf", np.random.RandomState(7))
    whole = apgd(fn, images, eps=3 / 255, steps=10, start=start)
    halves = [
        apgd(
            _objective(detector, labels[sl], grid[sl], "detection"),
            images[sl],
            eps=3 / 255,
            steps=10,
            start=start[sl],
        )  # fmt: skip
        for sl in (slice(0, 12), slice(12, 24))
    ]
    assert torch.allclose(whole, torch.cat(halves), atol=1e-6)


def test_the_step_size_rule_homes_in_where_a_fixed_step_overshoots():
    """Maximise -|x - c|² with c inside the ball: PGD with the initial step 2ε keeps jumping
    around c; APGD halves its step when progress stalls and ends much closer."""
    torch.manual_seed(0)
    x0 = torch.full((4, 3, 8, 8), 0.5)
    c = x0 + (torch.rand_like(x0) - 0.5) * 0.02  # within eps = 0.02 of x0
    fn = lambda x: -((x - c) ** 2).flatten(1).sum(1)  # noqa: E731
    adaptive = apgd(fn, x0, eps=0.02, steps=40, random_init=False)
    fixed = pgd(fn, x0, eps=0.02, steps=40, step_size=0.04, random_init=False)
    start_gap = float((x0 - c).abs().max())
    assert float((fixed - c).abs().max()) > start_gap  # the fixed step overshoots
    assert float((adaptive - c).abs().max()) < 0.1 * start_gap


def test_the_halving_rule_is_the_papers():
    """Halve when fewer than 75 % of the steps rose, or when the step was not halved at the last
    checkpoint and the best value has not risen since; a step just halved gets another chance."""
    from pgaudit.attacks.apgd import halving

    rises = torch.tensor([2.0, 8.0, 8.0, 8.0])  # of 8 steps: only the first image stalled
    halved_last = torch.tensor([False, False, True, False])
    best, best_at_last = torch.tensor([1.0, 1.0, 1.0, 1.5]), torch.ones(4)
    assert halving(rises, 8, halved_last, best, best_at_last).tolist() == [
        True,  # stalled
        True,  # no new best, and the step was not halved last time
        False,  # no new best, but the step was just halved
        False,  # a new best
    ]


def test_apgd_returns_the_best_iterate_even_when_every_step_loses():
    x0 = torch.full((2, 3, 8, 8), 0.5)
    # The optimum lies 1e-4 from the start: every step (at least eps / 16 here) moves away.
    fn = lambda x: -((x - x0 + 1e-4) ** 2).flatten(1).sum(1)  # noqa: E731
    assert torch.equal(apgd(fn, x0, eps=0.02, steps=5, random_init=False), x0)


@pytest.mark.parametrize("eps", [2 / 255, 3 / 255])
def test_apgd_is_at_least_as_strong_as_pgd_at_equal_budget(toy, eps):
    detector, images, labels, grid = toy
    attacker = Attacker(detector)
    auroc = {}
    for name in ("pgd", "apgd"):
        attack = make_attack(AttackSpec(name, "native", "inf", eps, 20, "detection"))
        _, out = attacker.run(attack, images, BatchTarget(labels, grid))
        auroc[name] = roc_auc_score(labels.numpy(), detector.scores(out).numpy())
    assert auroc["apgd"] <= auroc["pgd"] + 0.01, auroc
    assert auroc["apgd"] < 0.95  # not vacuous: it does lower the AUROC


def test_a_step_size_for_apgd_is_refused_naming_it():
    with pytest.raises(ParameterError, match="adapts its own step size") as info:
        make_attack(AttackSpec("apgd", "native", "inf", 8 / 255, 10, "detection", step_size=0.01))
    assert info.value.parameters == ("step_size",)
    assert isinstance(make_attack(AttackSpec("apgd", "native", "2", 0.5, 5, "localization")),
                      NativeAPGD)  # fmt: skip


def test_native_apgd_moves_scores_further_than_arts_decision_flip_autopgd(toy):
    detector, images, labels, grid = toy
    attacker = Attacker(detector, input_shape=(3, 32, 32), cells=64)
    auroc = {}
    for library in ("native", "art"):
        attack = make_attack(AttackSpec("apgd", library, "inf", 3 / 255, 20, "detection"))
        _, out = attacker.run(attack, images, BatchTarget(labels, grid))
        auroc[library] = roc_auc_score(labels.numpy(), detector.scores(out).numpy())
    assert auroc["native"] <= auroc["art"] + 0.01, auroc


def test_the_auto_suite_is_apgd_with_two_losses_and_square_on_each_objective():
    from pgaudit.attacks.suites import build_suite

    suite = build_suite("auto", image_size=32)
    assert [s.id for s in suite.attacks] == [
        "apgd-linf-8_255-100-detection", "apgd-linf-8_255-100-localization",
        "apgd-linf-8_255-100-detection-smoothmax", "apgd-linf-8_255-100-localization-smoothmax",
        "square-linf-8_255-1000-detection", "square-linf-8_255-1000-localization",
    ]  # fmt: skip
    assert {(s.attack, s.library) for s in suite.attacks} == {("apgd", "native"), ("square", "art")}
    with pytest.raises(ParameterError, match="maximises margin only") as info:
        make_attack(AttackSpec("pgd", "art", "inf", 8 / 255, 10, "detection", loss="smoothmax"))
    assert info.value.parameters == ("loss",)


def test_an_auto_audit_lowers_each_targeted_metric_and_records_the_losses(tmp_path):
    from dataclasses import replace

    from test_attacks import ToySet, run_audit

    from pgaudit.attacks.suites import build_suite
    from pgaudit.results import read_results

    suite = build_suite("auto", image_size=32, eps=[3 / 255])
    suite.attacks = [replace(s, steps=20 if s.attack == "apgd" else 300) for s in suite.attacks]
    results = run_audit(ToyDetector(), ToySet(16), suite, out_dir=tmp_path, progress=False,
                        gallery_size=0, bootstrap=0)  # fmt: skip
    clean = results["clean"]["metrics"]
    for entry in results["attacks"]:
        target = "image_auroc" if entry["objective"] == "detection" else "pixel_auroc"
        assert entry["metrics"][target]["value"] < clean[target]["value"] - 0.1, entry["id"]
        assert entry.get("loss", "margin") == (
            "smoothmax" if "smoothmax" in entry["id"] else "margin"
        )
    assert len(results["robust"]["attack_ids"]) == 6
    assert "precision-parity" not in {c["name"] for c in results["sanity"]}
    assert {c["name"] for c in results["sanity"]} >= {"gradient-health", "blackbox-not-stronger"}
    reread = read_results(tmp_path / "results.json")
    assert [a.loss for a in reread.attacks] == ["margin"] * 2 + ["smoothmax"] * 2 + ["margin"] * 2


def test_the_second_loss_reaches_cells_the_top_k_margin_cannot_see():
    from pgaudit.attacks.objectives import objective_values
    from pgaudit.models.detector import DetectorOutput

    detector = as_detector(ToyDetector())  # top-3 image score
    logits = torch.tensor([[[5.0, 5.0, 5.0, 4.9], [0.0, 0.0, 0.0, 0.0]]], requires_grad=True)
    labels, grid = torch.ones(1, dtype=torch.long), torch.zeros(1, 2, 4)
    grid[0, 0] = 1  # the top row is defective
    grads = {}
    for loss in ("margin", "smoothmax"):
        for objective in ("detection", "localization"):
            value = objective_values(detector, DetectorOutput(logits), objective, labels, grid,
                                     loss=loss)  # fmt: skip
            grads[loss, objective] = torch.autograd.grad(value.sum(), logits)[0][0]
    assert grads["margin", "detection"][0, 3] == 0  # the 4th-highest cell is invisible to top-3
    assert grads["smoothmax", "detection"][0, 3] < 0  # ... the smooth max pushes it down too
    flat = logits.detach().flatten()
    expected = flat[4:].logsumexp(0) - flat[:4].logsumexp(0)
    value = objective_values(detector, DetectorOutput(logits), "localization", labels, grid,
                             loss="smoothmax")  # fmt: skip
    assert torch.allclose(value, expected.view(1))
    assert not torch.allclose(grads["margin", "localization"], grads["smoothmax", "localization"])


def test_attacks_maximise_the_loss_their_spec_names(toy):
    from pgaudit.attacks.objectives import objective_values

    detector, images, labels, grid = toy
    attacker = Attacker(detector)
    for loss in ("margin", "smoothmax"):
        spec = AttackSpec("apgd", "native", "inf", 3 / 255, 5, "detection", loss=loss)
        with torch.no_grad():
            got = attacker.objective_fn(spec, BatchTarget(labels, grid))(images)
            want = objective_values(detector, detector.predict(images), "detection", labels, grid,
                                    loss=loss)  # fmt: skip
        assert torch.equal(got, want), loss
