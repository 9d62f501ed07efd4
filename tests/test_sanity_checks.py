"""Sanity checks that only compare attack entries, and the adaptive-evaluation helpers."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from pgaudit.attacks import adaptive, sanity
from pgaudit.attacks.adaptive import EOTDetector, adaptive_note, pixel_map_objective
from pgaudit.models.detector import DetectorOutput, smooth_upsample
from pgaudit.results import AttackResult, MetricValue, Section


def entry(
    attack: str,
    eps: float,
    steps: int,
    value: float | None,
    *,
    objective: str = "detection",
    restarts: int = 1,
    norm: str = "inf",
    loss: str = "margin",
) -> AttackResult:
    """An attacks[] entry of results.json with only the metric the checks read."""
    metric = "image_auroc" if objective == "detection" else "pixel_auroc"
    reason = None if value is not None else "undefined"
    return AttackResult(
        id=f"{attack}-{norm}-{eps}-{steps}x{restarts}-{objective}-{loss}", attack=attack,
        library="art", norm=norm, eps=eps, steps=steps, restarts=restarts, objective=objective,
        loss=loss, metrics={metric: MetricValue(value, None, reason)},
    )  # fmt: skip


def results(*attacks: AttackResult) -> list[AttackResult]:
    return list(attacks)


def clean(value: float) -> Section:
    """A clean section with both primary metrics at ``value``."""
    return Section({"image_auroc": MetricValue(value), "pixel_auroc": MetricValue(value)})


E2, E4, E8 = 2 / 255, 4 / 255, 8 / 255


# ---- more steps / restarts


def test_more_steps_not_weaker_passes_when_more_steps_are_stronger_or_equal_within_noise():
    r = results(entry("pgd", E8, 10, 0.50), entry("pgd", E8, 50, 0.51))
    check = sanity.check_more_steps_not_weaker(r)
    assert check.status == "pass"
    assert "0.510" in check.evidence and "0.500" in check.evidence


def test_more_steps_not_weaker_fails_when_more_steps_are_weaker():
    r = results(entry("pgd", E8, 10, 0.40), entry("pgd", E8, 50, 0.55))
    check = sanity.check_more_steps_not_weaker(r)
    assert check.status == "fail"
    assert "+0.150" in check.evidence


def test_more_restarts_count_as_more_and_other_budgets_are_not_paired():
    r = results(
        entry("pgd", E8, 100, 0.45, restarts=5),
        entry("pgd", E8, 50, 0.30),
        entry("pgd", E4, 10, 0.10),  # other eps: never compared with the 8/255 runs
    )
    assert sanity.check_more_steps_not_weaker(r).status == "fail"
    alone = results(entry("pgd", E8, 10, 0.4), entry("pgd", E4, 50, 0.9), entry("fgsm", E8, 1, 0.9))
    assert sanity.check_more_steps_not_weaker(alone).status == "skip"


def test_localization_entries_compare_pixel_auroc_and_undefined_values_are_ignored():
    r = results(
        entry("pgd", E8, 10, 0.30, objective="localization"),
        entry("pgd", E8, 50, 0.60, objective="localization"),
        entry("pgd", E8, 10, None),
        entry("pgd", E8, 50, None),
    )
    check = sanity.check_more_steps_not_weaker(r)
    assert check.status == "fail" and "pixel AUROC" in check.evidence
    assert "1 pairs" in check.evidence


# ---- monotone in eps


def test_monotone_in_eps_pass_and_fail():
    good = results(entry("pgd", E2, 10, 0.8), entry("pgd", E4, 10, 0.6), entry("pgd", E8, 10, 0.3))
    assert sanity.check_monotone_in_eps(good, clean(0.95)).status == "pass"
    bad = results(entry("pgd", E2, 10, 0.8), entry("pgd", E4, 10, 0.5), entry("pgd", E8, 10, 0.6))
    check = sanity.check_monotone_in_eps(bad)
    assert check.status == "fail"
    assert "0.600" in check.evidence and "0.500" in check.evidence


def test_monotone_in_eps_counts_clean_as_eps_zero_and_skips_without_pairs():
    above_clean = results(entry("fgsm", E8, 1, 0.97))
    assert sanity.check_monotone_in_eps(above_clean, clean(0.90)).status == "fail"
    assert sanity.check_monotone_in_eps(results()).status == "skip"
    # families are separate: PGD-50 at 8/255 above PGD-10 at 4/255 is not a monotonicity issue
    mixed = results(entry("pgd", E4, 10, 0.2), entry("pgd", E8, 50, 0.3))
    assert sanity.check_monotone_in_eps(mixed).status == "skip"


def test_other_losses_at_the_same_budget_are_not_a_budget_comparison():
    # The auto suite runs APGD with the margin and the smoothmax loss at one ε: a weaker second
    # loss is not "a higher AUROC at a larger budget" (the hardened widget model's audit failed
    # on exactly this: smoothmax 0.300 vs margin 0.262, both at 8/255).
    r = results(entry("apgd", E8, 100, 0.262), entry("apgd", E8, 100, 0.300, loss="smoothmax"))
    assert sanity.check_monotone_in_eps(r, clean(0.91)).status == "pass"
    assert sanity.check_more_steps_not_weaker(r).status == "skip"
    # each loss is still its own family across budgets
    rising = results(
        entry("apgd", E4, 100, 0.20, loss="smoothmax"),
        entry("apgd", E8, 100, 0.30, loss="smoothmax"),
    )
    assert sanity.check_monotone_in_eps(rising).status == "fail"
    # runs that differ in something the family does not name (here the step size) are not
    # budgets either
    a, b = entry("pgd", E8, 10, 0.2), entry("pgd", E8, 10, 0.4)
    sizes = results(replace(a, step_size=E2 / 4), replace(b, id="pgd-big-steps", step_size=E2))
    assert sanity.check_monotone_in_eps(sizes).status == "skip"
    # and more steps with a different loss is not "more of the same attack"
    steps = results(entry("apgd", E8, 10, 0.2), entry("apgd", E8, 100, 0.4, loss="smoothmax"))
    assert sanity.check_more_steps_not_weaker(steps).status == "skip"
    assert sanity.check_convergence(steps).status == "skip"  # nor a schedule to converge


# ---- black box, FGSM


def test_blackbox_not_stronger():
    ok = results(entry("pgd", E8, 50, 0.30), entry("square", E8, 1000, 0.45))
    assert sanity.check_blackbox_not_stronger(ok).status == "pass"
    masked = results(
        entry("pgd", E8, 50, 0.70), entry("apgd", E8, 100, 0.65), entry("square", E8, 1000, 0.20)
    )
    check = sanity.check_blackbox_not_stronger(masked)
    assert check.status == "fail"
    assert "0.200" in check.evidence and "0.650" in check.evidence  # vs the best white-box
    assert sanity.check_blackbox_not_stronger(results(entry("pgd", E8, 10, 0.3))).status == "skip"
    other_eps = results(entry("pgd", E4, 10, 0.9), entry("square", E8, 1000, 0.1))
    assert sanity.check_blackbox_not_stronger(other_eps).status == "skip"


def test_fgsm_not_stronger():
    ok = results(entry("fgsm", E8, 1, 0.40), entry("pgd", E8, 10, 0.25), entry("pgd", E8, 50, 0.2))
    assert sanity.check_fgsm_not_stronger(ok).status == "pass"
    bad = results(entry("fgsm", E8, 1, 0.10), entry("pgd", E8, 10, 0.45), entry("pgd", E8, 50, 0.4))
    check = sanity.check_fgsm_not_stronger(bad)
    assert check.status == "fail" and "0.100" in check.evidence
    assert sanity.check_fgsm_not_stronger(results(entry("pgd", E8, 10, 0.4))).status == "skip"


# ---- convergence


def test_convergence_pass_warn_skip():
    converged = results(entry("pgd", E8, 10, 0.31), entry("pgd", E8, 50, 0.30))
    assert sanity.check_convergence(converged).status == "pass"
    drifting = results(entry("pgd", E8, 10, 0.40), entry("pgd", E8, 50, 0.30))
    check = sanity.check_convergence(drifting)
    assert check.status == "warn" and "-0.100" in check.evidence
    restarts = results(entry("pgd", E8, 100, 0.20, restarts=5), entry("pgd", E8, 100, 0.35))
    assert sanity.check_convergence(restarts).status == "warn"
    not_doubled = results(entry("pgd", E8, 10, 0.40), entry("pgd", E8, 15, 0.30))
    assert sanity.check_convergence(not_doubled).status == "skip"


def test_entries_are_json_ready_and_explained():
    checks = [
        sanity.check_more_steps_not_weaker(results()),
        sanity.check_convergence(results()),
        sanity.check_monotone_in_eps(results()),
        sanity.check_blackbox_not_stronger(results()),
        sanity.check_fgsm_not_stronger(results()),
    ]
    for c in checks:
        assert set(c.to_json()) == {"name", "status", "evidence", "meaning"}
        assert c.status == "skip" and c.evidence and c.meaning == sanity.MEANINGS[c.name]
    json.dumps([c.to_json() for c in checks], allow_nan=False)
    with pytest.raises(ValueError, match="status"):
        sanity.make_check("convergence", "ok", "…")


def test_budgets_bound_the_extra_cost():
    assert sanity.sanity_budget("quick") == sanity.BUDGETS["standard"]
    assert sanity.sanity_budget("standard").n_images <= 16
    assert sanity.sanity_budget("full").n_images <= 32
    with pytest.raises(ValueError, match="budget"):
        sanity.sanity_budget("huge")


def test_sanity_positions_are_balanced_seeded_and_bounded():
    labels = [0] * 30 + [1] * 5
    pos = sanity.sanity_positions(labels, 16, seed=3)
    assert len(pos) == 16 and sorted(pos) == list(pos)
    assert sum(labels[p] for p in pos) == 5  # all anomalous images, the rest normal
    assert list(pos) == list(sanity.sanity_positions(labels, 16, seed=3))
    assert len(sanity.sanity_positions([0, 1, 1], 16)) == 3


# ---- adaptive evaluation


class _Grid(nn.Module):
    """Images -> a 4x4 logit grid (mean-pooled brightness); optional own score / noise."""

    def __init__(self, noise: float = 0.0) -> None:
        super().__init__()
        self.image_size = 16
        self.noise = noise

    def forward(self, x: Tensor) -> Tensor:
        logits = nn.functional.avg_pool2d(x.mean(1, keepdim=True), 4).squeeze(1)
        return logits + self.noise * torch.randn_like(logits)


class _MaxScore(_Grid):
    def image_score(self, logits: Tensor) -> Tensor:
        return logits.flatten(1).amax(1)


class _DetachedScore(_Grid):
    """Scores the brightest cell, but its gradient is that of the mean (a straight-through proxy)."""

    def image_score(self, logits: Tensor) -> Tensor:
        mean = logits.flatten(1).mean(1)
        return mean + (logits.flatten(1).amax(1) - mean).detach()


class _NoGradScore(_Grid):
    def image_score(self, logits: Tensor) -> Tensor:
        with torch.no_grad():
            return logits.flatten(1).amax(1)


def test_detection_objective_differentiates_the_real_score_rule():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert adaptive.detection_gradient_is_faithful(_Grid(), x) is True
    assert adaptive.detection_gradient_is_faithful(_MaxScore(), x) is True  # its own rule
    note = adaptive_note(_MaxScore(), x)
    assert "own image_score" in note["differentiated"] and "warning" not in note
    assert note["gradient_checked"] is True and "finite differences" in note["detection_objective"]
    note = adaptive_note(_Grid(), x)
    assert note["differentiated"].startswith("image score = top-3 mean")
    assert "Gaussian smoothing" in note["differentiated"]
    assert note["eot"] is False and note["eot_draws"] is None
    json.dumps(note)
    unchecked = adaptive_note(_Grid())  # no images: says so instead of claiming a check
    assert (
        unchecked["gradient_checked"] is None and "not checked" in unchecked["detection_objective"]
    )


def test_a_score_whose_gradient_is_a_proxy_is_caught():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert adaptive.detection_gradient_is_faithful(_DetachedScore(), x) is False
    assert adaptive.detection_gradient_is_faithful(_NoGradScore(), x) is False
    note = adaptive_note(_DetachedScore(), x)
    assert note["gradient_checked"] is False
    assert "NOT verified" in note["detection_objective"] and "proxy" in note["warning"]
    assert adaptive.detection_gradient_is_faithful(_Grid(noise=1.0), x) is None  # random


def test_a_proxy_objective_is_reported(monkeypatch):
    def proxy(detector, output, labels, threshold=0.0):  # mean instead of the top-k rule
        sign = 1.0 - 2.0 * labels.float()
        return sign * (output.logits.flatten(1).mean(1) - threshold)

    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(adaptive, "detection_objective", proxy)
    note = adaptive_note(_Grid(), x)
    assert not adaptive.detection_gradient_is_faithful(_Grid(), x)
    assert "NOT verified" in note["detection_objective"] and "proxy" in note["warning"]


def test_eot_detector_averages_draws_and_keeps_the_rules():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    plain = _Grid()
    assert torch.allclose(EOTDetector(plain, 5)(x), plain(x))
    noisy = _MaxScore(noise=1.0)
    eot = EOTDetector(noisy, 16)
    assert eot.image_size == 16 and eot.eot_draws == 16
    spread_one = torch.stack([noisy(x) for _ in range(20)]).std(0).mean()
    spread_eot = torch.stack([eot(x) for _ in range(20)]).std(0).mean()
    assert spread_eot < spread_one / 2.5  # ~ 1/sqrt(16) of the single-draw spread
    logits = eot(x)
    assert torch.equal(eot.scores(DetectorOutput(logits)), logits.flatten(1).amax(1))  # inner
    note = adaptive_note(eot)
    assert note["eot"] is True and note["eot_draws"] == 16
    assert "own image_score" in note["differentiated"]
    with pytest.raises(ValueError):
        EOTDetector(plain, 0)


def test_eot_detector_averages_an_adapter_score():
    from pgaudit.models.adapters import DetectorAdapter

    generator = torch.Generator().manual_seed(0)
    drawn: list[Tensor] = []

    class Scored(nn.Module):
        """A user module giving its own (random) image score next to the map."""

        def forward(self, x: Tensor) -> dict[str, Tensor]:
            logits = nn.functional.avg_pool2d(x.mean(1, keepdim=True), 4).squeeze(1)
            drawn.append(7.0 + torch.rand(x.shape[0], generator=generator))
            return {"anomaly_map": logits, "image_score": drawn[-1]}

    eot = EOTDetector(DetectorAdapter(Scored(), 16), 4)
    scores = eot.scores(eot.predict(torch.rand(2, 3, 16, 16, generator=generator)))
    assert len(drawn) == 4
    # the module's own score, averaged over the draws (not one draw, not the map's rule)
    assert torch.allclose(scores, torch.stack(drawn).mean(0))
    assert not any(torch.allclose(scores, d) for d in drawn)


def test_pixel_map_objective_is_the_margin_on_the_smoothed_map():
    det = _Grid()
    logits = torch.zeros(2, 4, 4)
    logits[0, :2] = 2.0  # top half of image 0 scores high
    masks = torch.zeros(2, 16, 16)
    masks[0, :8] = 1
    maps = smooth_upsample(logits, 16)
    want0 = maps[0, 8:].mean() - maps[0, :8].mean()
    got = pixel_map_objective(det, logits, masks)
    assert torch.allclose(got[0], want0)
    assert got[0] < 0  # the map already separates the defect: the attack has work to do
    assert torch.allclose(got[1], maps[1].mean())  # normal image: no anomalous pixels
