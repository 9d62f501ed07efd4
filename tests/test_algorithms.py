"""Attack objects: the registry covers every suite, a bad combination is refused when the attack
is made (before an audit's clean pass), restarts keep the best run per image, and one attack
object serves the audit, the sanity checks and the training-time robustness check alike."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import Tensor

from pgaudit.attacks import native, sanity
from pgaudit.attacks.algorithms import (
    REGISTRY,
    ArtAutoPGD,
    Attack,
    NativeFGSM,
    NativePGD,
    Restarts,
    make_attack,
)
from pgaudit.attacks.execute import Attacker, BatchTarget
from pgaudit.attacks.objectives import detection_objective
from pgaudit.attacks.runner import run_audit
from pgaudit.attacks.suites import SUITES, AttackSpec, Suite, build_suite
from pgaudit.errors import ParameterError
from pgaudit.models.adapters import as_detector
from tests.test_attacks import ToyDetector, ToySet, make_toy_data

EPS = 8 / 255


def spec(**changes) -> AttackSpec:
    return replace(AttackSpec("pgd", "native", "inf", EPS, 10, "detection"), **changes)


@pytest.mark.parametrize("name", SUITES)
def test_every_attack_of_every_suite_is_made_by_the_registry(name):
    for s in build_suite(name, image_size=128, restarts=None).attacks:
        attack = make_attack(s)
        assert attack.spec == s
        # The recorded step size is the one the attack object uses.
        assert s.effective_step_size == attack.step_size


def test_pgd_restarts_are_wrapped_and_art_restarts_are_left_to_art():
    assert isinstance(make_attack(spec(restarts=5)), Restarts)
    assert isinstance(make_attack(spec(restarts=1)), NativePGD)
    apgd = make_attack(spec(attack="apgd", library="art", restarts=5))
    assert isinstance(apgd, ArtAutoPGD)  # ART's nb_random_init drives them
    assert {name for name, _ in REGISTRY} == {"fgsm", "pgd", "apgd", "square", "nes"}


@pytest.mark.parametrize(
    ("changes", "parameter", "words"),
    [
        ({"attack": "square"}, "library", "use library 'art'"),
        ({"attack": "spin"}, "attack", "choose one of apgd, fgsm, nes, pgd, square"),
        (
            {"attack": "apgd", "library": "art", "objective": "localization"},
            "objective",
            "detection only",
        ),
        ({"eps": 0.0}, "eps", "must be positive"),
        ({"steps": 0}, "steps", "at least 1"),
        ({"restarts": 0}, "restarts", "at least 1"),
        ({"attack": "fgsm", "restarts": 3}, "restarts", "deterministic"),
        ({"norm": "1"}, "norm", "'inf' or '2'"),
        ({"step_size": -0.1}, "step_size", "must be positive"),
    ],
)
def test_a_bad_attack_is_refused_when_it_is_made(changes, parameter, words):
    with pytest.raises(ParameterError, match=words) as info:
        make_attack(spec(**changes))
    assert info.value.parameters == (parameter,)


class _CountingDetector(ToyDetector):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images: Tensor) -> Tensor:
        self.calls += 1
        return super().forward(images)


def test_an_audit_with_a_bad_attack_fails_before_the_clean_pass(tmp_path):
    good = spec()
    bad = spec(attack="apgd", library="art", objective="localization")
    suite = Suite("custom", "one good attack, then a bad one", [good, bad])
    detector = _CountingDetector()
    with pytest.raises(ParameterError, match="objective 'localization'"):
        run_audit(detector, ToySet(8), suite, out_dir=tmp_path / "audit", progress=False)
    assert detector.calls == 0
    assert not (tmp_path / "audit").exists()


class _Scripted(Attack):
    """Returns the next of a fixed list of perturbed batches on each run."""

    name, library = "scripted", "test"

    def __init__(self, spec: AttackSpec, runs: list[Tensor]) -> None:
        super().__init__(spec)
        self.runs = list(runs)

    def perturb(self, attacker, images, target, rng):
        return self.runs.pop(0)


def test_restarts_keep_per_image_the_run_with_the_highest_objective():
    images, labels, _ = make_toy_data(4, seed=0)
    attacker = Attacker(ToyDetector())
    runs = [(images + d).clamp(0, 1) for d in (0.01, -0.02, 0.03)]
    # Make image 1 best in the first run and image 2 best in the second.
    runs[0][1, 0] += 0.03
    runs[1][2, 0] += 0.06
    s = spec(restarts=3)
    target = BatchTarget(labels, None)
    best = Restarts(_Scripted(s, runs)).perturb(attacker, images, target, np.random.RandomState(0))
    values = torch.stack(
        [attacker.objective(s, attacker.output(r), target) for r in runs]
    )  # [runs, B]
    chosen = values.argmax(dim=0)
    for i in range(4):
        assert torch.equal(best[i], runs[int(chosen[i])][i])
    assert len(set(chosen.tolist())) > 1  # the choice really is per image


def test_fgsm_is_one_signed_step_of_size_eps_from_the_clean_image():
    images, labels, _ = make_toy_data(4, seed=2)
    attacker = Attacker(ToyDetector())
    target = BatchTarget(labels, None)
    fgsm = make_attack(spec(attack="fgsm", steps=7))
    assert isinstance(fgsm, NativeFGSM)
    adv = fgsm.perturb(attacker, images, target, np.random.RandomState(0))
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(attacker.objective_fn(fgsm.spec, target)(x).sum(), x)
    expected = (images + EPS * grad.sign()).clamp(0, 1)
    assert torch.allclose(adv, expected, atol=1e-6)


def test_the_sanity_checks_attack_with_the_audits_pgd():
    """``sanity._pgd_detection`` is the NativePGD object, chunk by chunk, on its own streams."""
    images, labels, _ = make_toy_data(6, seed=3)
    detector = as_detector(ToyDetector())
    adv = sanity._pgd_detection(
        detector, images, labels, eps=EPS, steps=4, seed=5, tag="t", batch_size=4
    )
    expected = []
    for b, sl in enumerate((slice(0, 4), slice(4, 6))):

        def fn(x: Tensor, y: Tensor = labels[sl]) -> Tensor:
            return detection_objective(detector, detector.predict(x), y)

        with torch.enable_grad():
            expected.append(
                native.pgd(fn, images[sl], eps=EPS, steps=4, rng=sanity._rng(5, "t", b))
            )
    assert torch.equal(adv, torch.cat(expected))
