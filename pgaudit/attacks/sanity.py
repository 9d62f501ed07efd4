"""Sanity checks that make an audit's robust numbers trustworthy (Carlini et al. 2019, Athalye et
al. 2018): the evaluation checklist, run automatically.

Each check returns a :class:`~pgaudit.results.SanityCheck` (``name``, ``status``: pass, warn,
fail or skip, ``evidence``: the numbers compared or why it skipped, ``meaning``). Two kinds:

* **pure** checks compare the :class:`~pgaudit.results.AttackResult` entries of an audit (and,
  for ``monotone-in-eps``, its clean section): ``more-steps-not-weaker``, ``monotone-in-eps``,
  ``blackbox-not-stronger``, ``fgsm-not-stronger`` and ``convergence`` (when the suite holds a pair of schedules);
* **extra-run** checks attack a small balanced subset of the test images with the native PGD
  (:class:`~pgaudit.attacks.algorithms.NativePGD`) on the detection objective: ``deterministic-forward``,
  ``gradient-health``, ``unbounded-budget``, ``noise-not-stronger``, ``transfer-not-stronger``
  (with a surrogate detector), ``convergence`` (when the suite lacks the pair) and, when the
  audit crafted its attacks in bf16/fp16, ``precision-parity``.

Robust AUROC means image AUROC for detection-objective attacks and pixel AUROC for
localization-objective ones. Extra cost is bounded by :data:`BUDGETS`: at most 16 (standard) or
32 (full) images; per image about ``pgd_steps + unbounded_steps`` (+ ``2 · pgd_steps`` when the
convergence pair is missing, + ``pgd_steps`` with a surrogate) forward+backward passes and
``noise_draws + 6`` forward passes (all times the EOT draws when the forward pass is random).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pgaudit.attacks.adaptive import DEFAULT_EOT_DRAWS, EOTDetector
from pgaudit.attacks.algorithms import Attack, Restarts, make_attack
from pgaudit.attacks.eps import default_step_size
from pgaudit.attacks.execute import Attacker, BatchTarget, batch_seed
from pgaudit.attacks.suites import AttackSpec
from pgaudit.models.adapters import as_detector
from pgaudit.models.detector import Detector, attack_mode
from pgaudit.results import AttackResult, SanityCheck, Section, Status

#: AUROC differences up to this size count as noise in the comparisons.
TOLERANCE = 0.02
#: Convergence: doubling steps/restarts must change robust AUROC by less than this.
CONVERGENCE_DELTA = 0.02
#: The "unbounded" L∞ budget (the whole pixel range) and the AUROC it must reach.
UNBOUNDED_EPS = 1.0
UNBOUNDED_PASS_AUROC = 0.1
UNBOUNDED_WARN_AUROC = 0.5
#: Largest PGD step of the unbounded attack (sign steps; 20 steps still cross the range).
UNBOUNDED_MAX_STEP = 0.05
#: Repeated forwards agree when logits differ by at most this (times max(1, |logit|)).
DETERMINISM_ATOL = 1e-4
#: Attacks whose success counts as "white-box" for the black-box comparison.
WHITE_BOX = ("pgd", "apgd")

MEANINGS: dict[str, str] = {
    "deterministic-forward": (
        "repeated forward passes must agree; a random forward pass needs EOT (gradients averaged "
        "over draws), otherwise attacks follow one random draw and understate the risk"
    ),
    "gradient-health": (
        "input gradients must be finite and non-zero and the attack objective must rise over the "
        "PGD steps; zero or NaN gradients mean the attack is blind (gradient masking)"
    ),
    "unbounded-budget": (
        "with an unlimited budget a working attack breaks any detector (AUROC near 0); if it "
        "does not, gradients are masked or the attack is broken"
    ),
    "more-steps-not-weaker": (
        "more steps or restarts of the same attack must not give a higher robust AUROC; if they "
        "do, the attack is unstable or gradients are unreliable"
    ),
    "convergence": (
        "doubling the steps or restarts should barely change robust AUROC; otherwise the attack "
        "has not converged and the robust numbers are optimistic (raise the attack steps or restarts)"
    ),
    "monotone-in-eps": (
        "a larger budget must not give a higher robust AUROC (per attack and objective)"
    ),
    "fgsm-not-stronger": (
        "one gradient step (FGSM) must not beat many (PGD) at the same budget; if it does, the "
        "iterative attack is failing (e.g. masked or noisy gradients)"
    ),
    "noise-not-stronger": (
        "the worst of many random perturbations must not beat a gradient attack at the same "
        "budget; if it does, the gradients point the wrong way (gradient masking)"
    ),
    "blackbox-not-stronger": (
        "a score-based black-box attack (Square) must not beat the white-box ones (PGD/AutoPGD); "
        "if it does, gradients are masked and the white-box numbers are optimistic"
    ),
    "precision-parity": (
        "the attacks were crafted in low precision (scores are always fp32); the same PGD crafted "
        "in fp32 must not be stronger, otherwise low precision weakened the attacks and the "
        "robust numbers are optimistic (rerun with precision fp32)"
    ),
    "transfer-not-stronger": (
        "adversarial images crafted on a surrogate detector must not beat white-box attacks on "
        "the detector itself; if they do, its gradients are masked"
    ),
}


@dataclass(frozen=True)
class SanityBudget:
    """How much extra attacking the sanity checks may do."""

    n_images: int
    pgd_steps: int
    unbounded_steps: int
    noise_draws: int
    eot_draws: int = DEFAULT_EOT_DRAWS
    batch_size: int = 16


BUDGETS: dict[str, SanityBudget] = {
    "standard": SanityBudget(n_images=16, pgd_steps=10, unbounded_steps=20, noise_draws=16),
    "full": SanityBudget(n_images=32, pgd_steps=20, unbounded_steps=50, noise_draws=32),
}


def sanity_budget(budget: str | SanityBudget) -> SanityBudget:
    """The :class:`SanityBudget` of a suite name ("quick" uses the standard one)."""
    if isinstance(budget, SanityBudget):
        return budget
    if budget in ("quick", "auto"):
        return BUDGETS["standard"]
    if budget not in BUDGETS:
        raise ValueError(f"unknown sanity budget {budget!r}; expected one of {tuple(BUDGETS)}")
    return BUDGETS[budget]


def make_check(name: str, status: Status, evidence: str) -> SanityCheck:
    """One results.json sanity entry (the meaning comes from :data:`MEANINGS`)."""
    return SanityCheck(name, status, evidence, MEANINGS[name])


# ------------------------------------------------------------------------------------------------
# pure checks over the attack entries of an audit

_PRIMARY = {
    "detection": ("image_auroc", "image AUROC"),
    "localization": ("pixel_auroc", "pixel AUROC"),
}


@dataclass(frozen=True)
class _Run:
    """One attack entry reduced to what the comparisons need."""

    id: str
    attack: str
    library: str
    norm: str
    eps: float
    steps: int
    restarts: int
    objective: str
    value: float
    loss: str = "margin"

    @property
    def budget(self) -> int:
        return self.steps * self.restarts


def _metric_value(section: Section | None, objective: str) -> float | None:
    entry = None if section is None else section.metric(_PRIMARY[objective][0])
    return None if entry is None or entry.value is None else float(entry.value)


def _runs(attacks: Sequence[AttackResult]) -> list[_Run]:
    """The attacks with a defined primary metric (image AUROC for detection, pixel AUROC for
    localization)."""
    runs = []
    for e in attacks:
        value = _metric_value(e, e.objective) if e.objective in _PRIMARY else None
        if value is not None:
            runs.append(
                _Run(e.id, e.attack + ("-transfer" if e.transfer else ""), e.library, e.norm,
                     float(e.eps), e.steps, e.restarts, e.objective, value, e.loss)
            )  # fmt: skip
    return runs


def _same_attack(a: _Run, b: _Run) -> bool:
    """One attack with one loss (runs of it differ only in schedule or budget)."""
    return a.attack == b.attack and a.loss == b.loss


def _same_budget(a: _Run, b: _Run) -> bool:
    return a.norm == b.norm and abs(a.eps - b.eps) <= 1e-9 and a.objective == b.objective


def _label(objective: str) -> str:
    return _PRIMARY[objective][1]


def check_more_steps_not_weaker(
    attacks: Sequence[AttackResult], tol: float = TOLERANCE
) -> SanityCheck:
    """Fail when a run with at least as many steps and restarts has a higher robust AUROC."""
    name = "more-steps-not-weaker"
    runs = _runs(attacks)
    pairs = [
        (weak, strong)
        for weak in runs
        for strong in runs
        if strong is not weak
        and _same_attack(strong, weak)
        and strong.attack != "fgsm"
        and _same_budget(weak, strong)
        and strong.steps >= weak.steps
        and strong.restarts >= weak.restarts
        and strong.budget > weak.budget
    ]
    if not pairs:
        return make_check(
            name,
            "skip",
            "the suite has no pair of one attack with fewer and more "
            "steps or restarts at the same budget",
        )
    weak, strong = max(pairs, key=lambda p: p[1].value - p[0].value)
    rise = strong.value - weak.value
    evidence = (
        f"{strong.id} {_label(strong.objective)} {strong.value:.3f} vs {weak.id} "
        f"{weak.value:.3f} ({rise:+.3f}; tolerance {tol}; {len(pairs)} pairs compared)"
    )
    return make_check(name, "fail" if rise > tol else "pass", evidence)


def check_convergence(
    attacks: Sequence[AttackResult], delta: float = CONVERGENCE_DELTA
) -> SanityCheck:
    """Warn when the strongest schedule still lowers robust AUROC by ``delta`` or more compared
    with one of at most half its steps × restarts (same attack and loss, norm, ε, objective)."""
    name = "convergence"
    runs = _runs(attacks)
    pairs = []
    for strong in runs:
        group = [r for r in runs if _same_attack(r, strong) and _same_budget(r, strong)]
        if strong.attack == "fgsm" or strong.budget != max(r.budget for r in group):
            continue
        weaker = [
            r
            for r in group
            if 2 * r.budget <= strong.budget
            and r.steps <= strong.steps
            and r.restarts <= strong.restarts
        ]
        if weaker:
            pairs.append((max(weaker, key=lambda r: r.budget), strong))
    if not pairs:
        return make_check(
            name,
            "skip",
            "the suite has no pair of schedules (steps or restarts doubled at least) to compare",
        )
    weak, strong = max(pairs, key=lambda p: abs(p[0].value - p[1].value))
    change = strong.value - weak.value
    evidence = (
        f"{_label(strong.objective)} {weak.value:.3f} with {weak.id}, {strong.value:.3f} with "
        f"{strong.id} ({change:+.3f}; delta {delta}; largest change of {len(pairs)} pairs)"
    )
    return make_check(name, "warn" if abs(change) >= delta else "pass", evidence)


def check_monotone_in_eps(
    attacks: Sequence[AttackResult], clean: Section | None = None, tol: float = TOLERANCE
) -> SanityCheck:
    """Fail when robust AUROC rises with ε within one attack family (attack, loss, schedule) and
    objective; only strictly smaller budgets are compared (the ``clean`` metric counts as ε = 0)."""
    name = "monotone-in-eps"
    runs = _runs(attacks)
    families: dict[tuple, list[tuple[float, str, float]]] = {}
    for r in runs:
        key = (r.attack, r.loss, r.library, r.norm, r.steps, r.restarts, r.objective)
        families.setdefault(key, []).append((r.eps, r.id, r.value))
    worst: tuple[float, str, str, float, float] | None = None
    compared = 0
    for key, points in families.items():
        clean_value = _metric_value(clean, key[-1])
        if clean_value is not None:
            points = [(0.0, "clean", clean_value), *points]
        points.sort()
        for j in range(1, len(points)):
            smaller = [p for p in points[:j] if p[0] < points[j][0] - 1e-9]
            if not smaller:
                continue
            lowest = min(smaller, key=lambda p: p[2])
            compared += 1
            rise = points[j][2] - lowest[2]
            if worst is None or rise > worst[0]:
                worst = (rise, lowest[1], points[j][1], lowest[2], points[j][2])
    if worst is None:
        return make_check(
            name, "skip", "no attack was run at two budgets (nor with a clean baseline) to compare"
        )
    rise, low_id, high_id, low, high = worst
    evidence = (
        f"{high_id} {high:.3f} vs {low_id} {low:.3f} at a smaller budget ({rise:+.3f}; "
        f"tolerance {tol}; {compared} comparisons)"
    )
    return make_check(name, "fail" if rise > tol else "pass", evidence)


def _beats(
    name: str, challengers: list[_Run], references: list[_Run], tol: float, what: str
) -> SanityCheck:
    pairs = []
    for c in challengers:
        refs = [r for r in references if _same_budget(c, r)]
        if refs:
            pairs.append((c, min(refs, key=lambda r: r.value)))
    if not pairs:
        return make_check(name, "skip", what)
    c, ref = max(pairs, key=lambda p: p[1].value - p[0].value)
    lead = ref.value - c.value
    evidence = (
        f"{c.id} {_label(c.objective)} {c.value:.3f} vs {ref.id} {ref.value:.3f} "
        f"(challenger lower by {lead:+.3f}; tolerance {tol}; {len(pairs)} comparisons)"
    )
    return make_check(name, "fail" if lead > tol else "pass", evidence)


def check_blackbox_not_stronger(
    attacks: Sequence[AttackResult], tol: float = TOLERANCE
) -> SanityCheck:
    """Fail when Square reaches a lower robust AUROC than the best PGD/AutoPGD at its budget."""
    runs = _runs(attacks)
    return _beats(
        "blackbox-not-stronger",
        [r for r in runs if r.attack == "square"],
        [r for r in runs if r.attack in WHITE_BOX],
        tol,
        "the suite runs no black-box attack next to a white-box one at the same budget "
        "(Square runs in the full suite)",
    )


def check_fgsm_not_stronger(attacks: Sequence[AttackResult], tol: float = TOLERANCE) -> SanityCheck:
    """Fail when FGSM reaches a lower robust AUROC than the best PGD at its budget."""
    runs = _runs(attacks)
    return _beats(
        "fgsm-not-stronger",
        [r for r in runs if r.attack == "fgsm"],
        [r for r in runs if r.attack == "pgd"],
        tol,
        "the suite runs no FGSM next to a PGD at the same budget",
    )


# ------------------------------------------------------------------------------------------------
# extra attack runs on a subset of the test images


def sanity_positions(
    labels: Sequence[int] | np.ndarray, n_images: int, seed: int = 0
) -> np.ndarray:
    """At most ``n_images`` test positions, balanced between the classes where possible, sorted."""
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    normal, anomalous = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    k_anom = min(len(anomalous), max(n_images // 2, n_images - len(normal)))
    k_norm = min(len(normal), n_images - k_anom)
    picked = np.concatenate(
        [rng.choice(normal, k_norm, replace=False), rng.choice(anomalous, k_anom, replace=False)]
    )
    return np.sort(picked.astype(np.int64))


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | str:
    """Image AUROC, or why it is undefined (one class, or non-finite scores)."""
    from pgaudit.metrics import UndefinedMetricError, image_auroc

    if not np.isfinite(scores).all():
        return "non-finite image scores (NaN or inf reached the images or the logits)"
    try:
        return image_auroc(labels, scores)
    except UndefinedMetricError as exc:
        return f"image AUROC is undefined on the sanity subset: {exc}"


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _scores(detector: Detector, images: Tensor, batch_size: int) -> np.ndarray:
    detector = as_detector(detector)
    out = []
    with torch.no_grad():
        for sl in _chunks(images.shape[0], batch_size):
            out.append(detector.scores(detector.predict(images[sl])).float().cpu())
    return torch.cat(out).numpy()


def _rng(seed: int, tag: str, index: int = 0) -> np.random.RandomState:
    """An independent random stream per (seed, check, chunk)."""
    return np.random.RandomState(batch_seed(seed, f"sanity:{tag}", index))


def _native_pgd(
    eps: float, steps: int, step_size: float | None = None, random_init: bool = True
) -> Attack | Restarts:
    """Native L∞ PGD on the detection objective (the audit's own attack object)."""
    spec = AttackSpec(
        "pgd", "native", "inf", eps, steps, "detection", step_size=step_size,
        random_init=random_init,
    )  # fmt: skip
    return make_attack(spec)


def _pgd_detection(
    detector: Detector,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    steps: int,
    seed: int,
    tag: str,
    batch_size: int,
    step_size: float | None = None,
    random_init: bool = True,
    precision: str = "fp32",
) -> Tensor:
    """Native PGD on the detection objective, chunk by chunk; the adversarial images
    (``precision``: of the gradient passes)."""
    attacker = Attacker(detector, precision=precision)
    attack = _native_pgd(eps, steps, step_size, random_init)
    out = []
    for b, sl in enumerate(_chunks(images.shape[0], batch_size)):
        target = BatchTarget(labels[sl], None)
        out.append(attack.perturb(attacker, images[sl], target, _rng(seed, tag, b)))
    return torch.cat(out)


@dataclass
class PGDTrace:
    """A traced native PGD run on the detection objective (the white-box reference)."""

    scores: np.ndarray  #: image scores of the final adversarial images
    objective_start: float  #: mean objective at the (random) start
    objective_end: float  #: mean objective at the last iterate
    grad_elements: int  #: input-gradient entries seen over all steps
    zero_elements: int  #: of which exactly zero
    nonfinite_elements: int  #: of which NaN or inf
    blind_images: int  #: images whose gradient was zero (or non-finite) at every step
    steps: int
    eps: float


class _TracingAttacker(Attacker):
    """An Attacker whose objective records every input gradient and each batch's start value."""

    def __init__(self, detector: Detector, n: int) -> None:
        super().__init__(detector)
        self.zero = self.nonfinite = self.total = 0
        self.alive = torch.zeros(n, dtype=torch.bool)  # images with a usable gradient
        self.start = torch.zeros(n)  # objective at the (random) start
        self.rows = slice(0, 0)  # the batch being attacked
        self.calls = 0

    def objective_fn(self, spec: AttackSpec, target: BatchTarget) -> Callable[[Tensor], Tensor]:
        inner = super().objective_fn(spec, target)

        def fn(x: Tensor) -> Tensor:
            x.register_hook(self._record)
            values = inner(x)
            if self.calls == 0:
                self.start[self.rows] = values.detach().float().cpu()
            self.calls += 1
            return values

        return fn

    def _record(self, grad: Tensor) -> None:
        g = grad.detach()
        finite = torch.isfinite(g)
        self.total += g.numel()
        self.zero += int((g == 0).sum())
        self.nonfinite += int((~finite).sum())
        self.alive[self.rows] |= (finite & (g != 0)).flatten(1).any(dim=1).cpu()


def trace_pgd(
    detector: Detector,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    steps: int,
    seed: int = 0,
    batch_size: int = 16,
) -> PGDTrace:
    """Native PGD-``steps`` at ``eps`` (L∞, random start) recording gradients and objectives."""
    tracer, attack = _TracingAttacker(detector, images.shape[0]), _native_pgd(eps, steps)
    end_scores = []
    for b, sl in enumerate(_chunks(images.shape[0], batch_size)):
        tracer.rows, tracer.calls = sl, 0
        adv = attack.perturb(
            tracer, images[sl], BatchTarget(labels[sl], None), _rng(seed, "pgd", b)
        )
        end_scores.append(tracer.detector.scores(tracer.output(adv)).float().cpu())
    scores = torch.cat(end_scores)
    sign = 1.0 - 2.0 * labels.float().cpu()
    return PGDTrace(
        scores=scores.numpy(),
        objective_start=float(tracer.start.mean()),
        objective_end=float((sign * scores).mean()),
        grad_elements=tracer.total,
        zero_elements=tracer.zero,
        nonfinite_elements=tracer.nonfinite,
        blind_images=int((~tracer.alive).sum()),
        steps=steps,
        eps=eps,
    )


def forward_is_deterministic(
    detector: Detector, images: Tensor, repeats: int = 3
) -> tuple[bool, float]:
    """Whether ``repeats`` forward passes give the same logits; and the largest difference."""
    with torch.no_grad():
        outs = [detector(images).float() for _ in range(repeats)]
    diff = max(float((o - outs[0]).abs().amax()) for o in outs[1:]) if repeats > 1 else 0.0
    scale = max(1.0, float(outs[0].abs().amax()))
    return (bool(np.isfinite(diff)) and diff <= DETERMINISM_ATOL * scale), diff


def check_deterministic_forward(
    detector: Detector, images: Tensor, *, repeats: int = 3, eot_draws: int = DEFAULT_EOT_DRAWS
) -> SanityCheck:
    """Pass when repeated forwards agree; warn when they do not but ``detector`` is an
    :class:`EOTDetector` (attacks averaged draws); fail when they do not and attacks did not."""
    name = "deterministic-forward"
    eot = isinstance(detector, EOTDetector)
    inner = detector.detector if eot else detector
    same, diff = forward_is_deterministic(inner, images, repeats)
    if same:
        return make_check(
            name,
            "pass",
            f"{repeats} forward passes on {images.shape[0]} images agree "
            f"(max |logit difference| {diff:.2g})",
        )
    base = f"{repeats} forward passes differ (max |logit difference| {diff:.3g}): random forward"
    if eot:
        return make_check(
            name, "warn", f"{base}; the attacks used EOT over {detector.eot_draws} draws"
        )
    return make_check(
        name,
        "fail",
        f"{base}, and the audit's attacks did not use EOT; the sanity attacks used EOT over "
        f"{eot_draws} draws: rerun the audit with pgaudit.attacks.adaptive.EOTDetector",
    )


def check_gradient_health(
    detector: Detector,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    steps: int = 10,
    seed: int = 0,
    trace: PGDTrace | None = None,
) -> SanityCheck:
    """Fail on NaN/inf input gradients or when half the images get zero gradients at every step;
    warn when some images do, or when the objective does not rise over the PGD steps."""
    name = "gradient-health"
    t = trace or trace_pgd(detector, images, labels, eps=eps, steps=steps, seed=seed)
    n = len(t.scores)
    zero_share = t.zero_elements / max(1, t.grad_elements)
    rise = t.objective_end - t.objective_start
    evidence = (
        f"PGD-{t.steps} at eps {t.eps:.4g} on {n} images: {zero_share:.1%} of input-gradient "
        f"entries zero, {t.nonfinite_elements} NaN/inf, {t.blind_images} images with no usable "
        f"gradient at any step; objective {t.objective_start:.4g} -> {t.objective_end:.4g} "
        f"({rise:+.4g})"
    )
    if t.nonfinite_elements or 2 * t.blind_images >= n:
        status = "fail"
    elif t.blind_images or not rise > 0:
        status = "warn"
    else:
        status = "pass"
    return make_check(name, status, evidence)


def _undefined(name: str, *values: float | str) -> SanityCheck | None:
    """A skip entry naming the first undefined AUROC among ``values``, or None if all are set."""
    reasons = [v for v in values if isinstance(v, str)]
    return make_check(name, "skip", reasons[0]) if reasons else None


def check_unbounded_budget(
    detector: Detector,
    images: Tensor,
    labels: Tensor,
    *,
    steps: int = 20,
    eps: float = UNBOUNDED_EPS,
    seed: int = 0,
    batch_size: int = 16,
) -> SanityCheck:
    """PGD on the detection objective with ε = 1 (no random start, so a blind attack stays put):
    pass at image AUROC ≤ 0.1, warn ≤ 0.5, fail above."""
    name = "unbounded-budget"
    y = labels.cpu().numpy()
    clean = _auroc(y, _scores(detector, images, batch_size))
    step = min(UNBOUNDED_MAX_STEP, default_step_size(eps, steps))
    adv = _pgd_detection(
        detector,
        images,
        labels,
        eps=eps,
        steps=steps,
        seed=seed,
        tag="unbounded",
        batch_size=batch_size,
        step_size=step,
        random_init=False,
    )
    robust = _auroc(y, _scores(detector, adv, batch_size))
    attack = (
        f"PGD-{steps} (step {step:.3g}, no random start) at L-inf eps {eps:g} on {len(y)} images"
    )
    if isinstance(clean, float) and isinstance(robust, str):
        return make_check(name, "fail", f"image AUROC {clean:.3f} clean; after {attack}: {robust}")
    skip = _undefined(name, clean, robust)
    if skip is not None:
        return skip
    assert isinstance(clean, float) and isinstance(robust, float)
    evidence = (
        f"image AUROC {clean:.3f} clean -> {robust:.3f} after {attack} "
        f"(pass <= {UNBOUNDED_PASS_AUROC}, fail > {UNBOUNDED_WARN_AUROC})"
    )
    if robust <= UNBOUNDED_PASS_AUROC:
        return make_check(name, "pass", evidence)
    return make_check(name, "warn" if robust <= UNBOUNDED_WARN_AUROC else "fail", evidence)


def _reference(
    detector: Detector,
    images: Tensor,
    labels: Tensor,
    eps: float,
    steps: int,
    seed: int,
    trace: PGDTrace | None,
) -> tuple[float | str, str]:
    t = trace or trace_pgd(detector, images, labels, eps=eps, steps=steps, seed=seed)
    return _auroc(labels.cpu().numpy(), t.scores), f"white-box PGD-{t.steps}"


def check_noise_not_stronger(
    detector: Detector,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    draws: int = 16,
    steps: int = 10,
    seed: int = 0,
    tol: float = TOLERANCE,
    trace: PGDTrace | None = None,
    batch_size: int = 16,
) -> SanityCheck:
    """Fail when the worst of ``draws`` uniform L∞ perturbations per image (highest score for
    normal images, lowest for anomalous) gives a lower image AUROC than PGD at the same ε."""
    from pgaudit.metrics import worst_case_scores

    name = "noise-not-stronger"
    y = labels.cpu().numpy()
    rng = _rng(seed, "noise")
    draws_scores = []
    for _ in range(draws):
        delta = torch.from_numpy(rng.uniform(-eps, eps, tuple(images.shape)).astype(np.float32))
        noisy = (images + delta.to(images.device, images.dtype)).clamp(0, 1)
        draws_scores.append(_scores(detector, noisy, batch_size))
    noise = _auroc(y, worst_case_scores(y, *draws_scores))
    ref = _reference(detector, images, labels, eps, steps, seed, trace)
    what = f"the worst of {draws} uniform noise draws"
    return _not_stronger_than_reference(name, noise, what, "noise", ref, eps, len(y), tol)


def check_transfer_not_stronger(
    detector: Detector,
    surrogate: Detector | None,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    steps: int = 10,
    seed: int = 0,
    tol: float = TOLERANCE,
    trace: PGDTrace | None = None,
    batch_size: int = 16,
) -> SanityCheck:
    """Fail when PGD images crafted on ``surrogate`` give the detector a lower image AUROC than
    white-box PGD on the detector itself (same ε and steps)."""
    name = "transfer-not-stronger"
    if surrogate is None:
        return make_check(
            name,
            "skip",
            "no surrogate detector given (e.g. a clean-trained baseline, or the detector with "
            "its non-differentiable parts replaced by smooth ones)",
        )
    if int(surrogate.image_size) != int(detector.image_size):
        return make_check(
            name,
            "skip",
            f"the surrogate expects {surrogate.image_size} px images, the detector "
            f"{detector.image_size} px",
        )
    y = labels.cpu().numpy()
    adv = _pgd_detection(
        surrogate,
        images,
        labels,
        eps=eps,
        steps=steps,
        seed=seed,
        tag="transfer",
        batch_size=batch_size,
    )
    transfer = _auroc(y, _scores(detector, adv, batch_size))
    ref = _reference(detector, images, labels, eps, steps, seed, trace)
    what = f"PGD-{steps} transferred from the surrogate"
    return _not_stronger_than_reference(name, transfer, what, "transfer", ref, eps, len(y), tol)


def _not_stronger_than_reference(
    name: str,
    value: float | None,
    what: str,
    short: str,
    reference: tuple[float | None, str],
    eps: float,
    n_images: int,
    tol: float,
) -> SanityCheck:
    """Fail when ``value`` (image AUROC under ``what``) is below white-box PGD's by over ``tol``."""
    ref, ref_name = reference
    skip = _undefined(name, value, ref)
    if skip is not None:
        return skip
    assert isinstance(value, float) and isinstance(ref, float)
    lead = ref - value
    evidence = (
        f"image AUROC {value:.3f} under {what} vs {ref:.3f} under {ref_name} at L-inf eps "
        f"{eps:.4g} on {n_images} images ({short} lower by {lead:+.3f}; tolerance {tol})"
    )
    return make_check(name, "fail" if lead > tol else "pass", evidence)


def check_precision_parity(
    detector: Detector,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    precision: str,
    trace: PGDTrace,
    seed: int = 0,
    tol: float = TOLERANCE,
    batch_size: int = 16,
) -> SanityCheck:
    """Warn when the white-box PGD of ``trace`` (crafted in fp32) beats the same PGD, from the
    same random starts, crafted in ``precision`` by more than ``tol`` image AUROC."""
    name = "precision-parity"
    adv = _pgd_detection(
        detector, images, labels, eps=eps, steps=trace.steps, seed=seed, tag="pgd",
        batch_size=batch_size, precision=precision,
    )  # fmt: skip
    y = labels.cpu().numpy()
    low, full = _auroc(y, _scores(detector, adv, batch_size)), _auroc(y, trace.scores)
    undefined = _undefined(name, low, full)
    if undefined is not None:
        return undefined
    gap = low - full  # > 0: the low-precision attack is weaker
    evidence = (
        f"PGD-{trace.steps} at {eps:.4f} on {len(y)} images: image AUROC {low:.3f} crafted in "
        f"{precision}, {full:.3f} crafted in fp32 (both scored in fp32; gap {gap:+.3f}, "
        f"tolerance {tol})"
    )
    return make_check(name, "warn" if gap > tol else "pass", evidence)


def check_convergence_by_rerun(
    detector: Detector,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    steps: int = 10,
    seed: int = 0,
    delta: float = CONVERGENCE_DELTA,
    trace: PGDTrace | None = None,
    batch_size: int = 16,
) -> SanityCheck:
    """Warn when native PGD with ``2 · steps`` changes image AUROC by ``delta`` or more compared
    with ``steps`` (for suites that lack such a pair)."""
    name = "convergence"
    y = labels.cpu().numpy()
    ref, _ = _reference(detector, images, labels, eps, steps, seed, trace)
    if trace is not None:
        steps = trace.steps
    adv = _pgd_detection(
        detector,
        images,
        labels,
        eps=eps,
        steps=2 * steps,
        seed=seed,
        tag="convergence",
        batch_size=batch_size,
    )
    double = _auroc(y, _scores(detector, adv, batch_size))
    skip = _undefined(name, ref, double)
    if skip is not None:
        return skip
    assert isinstance(ref, float) and isinstance(double, float)
    change = double - ref
    evidence = (
        f"image AUROC {ref:.3f} with PGD-{steps}, {double:.3f} with PGD-{2 * steps} at L-inf eps "
        f"{eps:.4g} on {len(y)} images ({change:+.3f}; delta {delta}; extra run: the suite has "
        "no pair of schedules)"
    )
    return make_check(name, "warn" if abs(change) >= delta else "pass", evidence)


# ------------------------------------------------------------------------------------------------
# everything at once


NO_GRADIENT = "the detector gives no gradient w.r.t. its input: white-box runs are impossible"


def _gradient_free_checks(
    attacks: Sequence[AttackResult], clean: Section | None
) -> list[SanityCheck]:
    """A gradient-free detector's checklist: the checks on the audit's own runs; the ones that
    run white-box attacks skip, saying why."""
    skip = lambda name: make_check(name, "skip", NO_GRADIENT)  # noqa: E731
    return [
        skip("gradient-health"), skip("unbounded-budget"),
        check_more_steps_not_weaker(attacks), check_convergence(attacks),
        check_monotone_in_eps(attacks, clean), check_fgsm_not_stronger(attacks),
        skip("noise-not-stronger"), check_blackbox_not_stronger(attacks),
        skip("transfer-not-stronger"),
    ]  # fmt: skip


def run_sanity_checks(
    detector: Detector,
    images: Tensor,
    labels: Tensor | Sequence[int] | np.ndarray,
    attacks: Sequence[AttackResult],
    *,
    clean: Section | None = None,
    eps: float = 8 / 255,
    surrogate: Detector | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    budget: str | SanityBudget = "standard",
    precision: str = "fp32",
    gradients: bool = True,
) -> list[SanityCheck]:
    """All sanity checks for one audit, in report order.

    ``images`` ``[N, 3, S, S]`` / ``labels`` ``[N]``: test images (any number; a balanced subset
    of at most ``budget.n_images`` is attacked; the extra runs use the detection objective).
    ``surrogate``: a smooth stand-in detector for the transfer check (skipped without one).
    ``attacks`` / ``clean``: the audit's entries, for the pure checks; ``eps``: the headline
    budget of the extra runs. Call with the detector in
    the mode it is audited in (eval); both detectors are put in :func:`attack_mode` here (eval,
    no parameter gradients) and restored afterwards.
    When the forward pass is random and ``detector`` is not an :class:`EOTDetector`, the extra
    runs attack and score through one (and the determinism check says so). The extra runs craft
    in fp32; ``precision``, that of the audit's attacks, adds ``precision-parity`` when not fp32.
    ``gradients`` False (the detector gives none): the checks that run white-box attacks skip.
    """
    cfg = sanity_budget(budget)
    device = torch.device(device)
    eps = float(eps)
    y_all = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
    pos = torch.from_numpy(sanity_positions(y_all.numpy(), cfg.n_images, seed))
    x = images[pos].to(device=device, dtype=torch.float32)
    y = y_all[pos].to(device)

    detector = as_detector(detector)
    surrogate = None if surrogate is None else as_detector(surrogate)
    checks: dict[str, SanityCheck] = {}
    with attack_mode(detector), attack_mode(surrogate):
        checks["deterministic-forward"] = check_deterministic_forward(
            detector, x, eot_draws=cfg.eot_draws
        )
        if not gradients:
            return [*checks.values(), *_gradient_free_checks(attacks, clean)]
        target = detector
        if checks["deterministic-forward"].status == "fail":
            target = EOTDetector(detector, cfg.eot_draws)
        common = {"seed": seed, "batch_size": cfg.batch_size}
        trace = trace_pgd(target, x, y, eps=eps, steps=cfg.pgd_steps, **common)
        checks["gradient-health"] = check_gradient_health(target, x, y, eps=eps, trace=trace)
        checks["unbounded-budget"] = check_unbounded_budget(
            target, x, y, steps=cfg.unbounded_steps, **common
        )
        checks["more-steps-not-weaker"] = check_more_steps_not_weaker(attacks)
        checks["convergence"] = check_convergence(attacks)
        if checks["convergence"].status == "skip":
            checks["convergence"] = check_convergence_by_rerun(
                target, x, y, eps=eps, trace=trace, **common
            )
        checks["monotone-in-eps"] = check_monotone_in_eps(attacks, clean)
        checks["fgsm-not-stronger"] = check_fgsm_not_stronger(attacks)
        checks["noise-not-stronger"] = check_noise_not_stronger(
            target, x, y, eps=eps, draws=cfg.noise_draws, trace=trace, **common
        )
        checks["blackbox-not-stronger"] = check_blackbox_not_stronger(attacks)
        checks["transfer-not-stronger"] = check_transfer_not_stronger(
            target, surrogate, x, y, eps=eps, steps=cfg.pgd_steps, trace=trace, **common
        )
        if precision != "fp32":
            checks["precision-parity"] = check_precision_parity(
                target, x, y, eps=eps, precision=precision, trace=trace, **common
            )
    return list(checks.values())
