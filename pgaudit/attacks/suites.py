"""Named attack suites (quick / standard / full / auto): exactly which attacks an audit runs.

Pure data (no torch, no ART), so ``pgaudit attack --help`` can print the contents. A suite only
picks :class:`AttackSpec` s; what each algorithm does is :mod:`pgaudit.attacks.algorithms`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pgaudit.attacks.algorithms import REGISTRY
from pgaudit.attacks.eps import eps_label, eps_slug
from pgaudit.checks import check_at_least, check_linf_eps, check_positive
from pgaudit.errors import ParameterError
from pgaudit.results import AttackResult, AttackSettings, SuiteInfo

SUITES: tuple[str, ...] = ("quick", "standard", "full", "auto", "official", "paper")
OBJECTIVE_CHOICES: tuple[str, ...] = ("both", "detection", "localization")

HEADLINE_EPS = 8 / 255
STANDARD_EPS = (2 / 255, 4 / 255, 8 / 255)
#: L2 budget: ImageNet's customary 3.0 at 224 px, scaled with the side (i.e. with sqrt(#pixels)).
L2_EPS_AT_224 = 3.0

_APGD_NOTES = (
    "AutoPGD (ART) on the detection objective at the operating threshold (clean 95%-TPR): ART "
    "keeps its optimised image only where the decision flipped, so this is a decision-flip "
    "attack, not a score-moving one. Its DLR loss and targeted variants need >= 3 classes and do "
    "not apply to a binary score; they were not run. Not run on the localization objective: "
    "AutoPGD's success test (argmax of logits vs mask) is meaningless there."
)
_SQUARE_NOTES = (
    "Score-based black-box Square attack (ART) with a margin loss on the objective and a success "
    "criterion that never fires, so the whole query budget moves the score."
)
_PGD_NOTES = (
    "Random start uniform in the eps-ball, then sign-gradient (L-inf) or unit-gradient (L2) "
    "ascent on a margin objective; the last iterate is kept, as in ART."
)
_NATIVE_APGD_NOTES = (
    "Native Auto-PGD (Croce & Hein 2020): random start, momentum, step size halved at the "
    "published checkpoints when progress stalls, best iterate kept; score-moving."
)
_SMOOTHMAX_NOTES = (
    " Second loss: a smooth maximum (logsumexp) of the patch logits instead of the top-k score "
    "(detection), or of the normal vs the defective cells instead of their means (localization)."
)
_RESTART_NOTES = " With restarts: per image, the run with the highest objective is kept."
_NATIVE_NOTES = (
    " Native torch implementation with ART's semantics (same random start under the same seed; "
    "cross-checked against ART's PGD in the test suite)."
)
_NES_NOTES = (
    "NES (Ilyas et al. 2018), black-box: signed steps on a gradient estimated from scores alone "
    "(per step 10 antithetic pairs of Gaussian probes of width eps/4, constant on tiles of 1/16 "
    "of the image side, 21 queries), best iterate kept; it stands in for the suite's white-box attack of the same budget, schedule and "
    "objective on a detector without input gradients."
)
_TRANSFER_NOTES = (
    " Transfer: crafted white-box on the surrogate (--surrogate), scored by the detector; weaker "
    "than a white-box attack on the detector itself, so a lower bound on the risk."
)
_OFFICIAL_NOTES = (
    "The official PatchGuard code's test attack: PGD on its patch objective (mean logit of the "
    "normal patches minus that of the defective ones, patches labelled by any defective pixel), "
    "step 2.5*eps/steps, no random start, one run; image and pixel AUROC are both read off its "
    "images."
)
_FGSM_LOC_NOTES = (
    "FGSM as ART's PGD with one step of size eps and no random start (ART's FGM renormalises "
    "multi-hot masks, which breaks on normal images)."
)


def l2_eps(image_size: int) -> float:
    """The suite's L2 budget for ``image_size`` px inputs (3.0 at 224 px, scaled with the side)."""
    return round(L2_EPS_AT_224 * image_size / 224, 2)


@dataclass(frozen=True)
class AttackSpec:
    """One attack run: algorithm, library, threat model, budget, schedule and objective."""

    attack: str
    library: str
    norm: str
    eps: float
    steps: int
    objective: str
    step_size: float | None = None
    restarts: int = 1
    random_init: bool = True
    notes: str = ""
    loss: str = "margin"  # "smoothmax": the second loss (pgaudit.attacks.objectives.LOSSES)
    #: Crafted on the surrogate detector and scored by the audited one (a transfer attack).
    transfer: bool = False

    @property
    def id(self) -> str:
        """Stable id, e.g. ``pgd-linf-8_255-10-detection`` (``x5`` appended for 5 restarts;
        ``-smoothmax`` for the second loss, ``-transfer`` for a transfer run)."""
        norm = "linf" if self.norm == "inf" else f"l{self.norm}"
        sched = f"{self.steps}x{self.restarts}" if self.restarts > 1 else f"{self.steps}"
        loss = "" if self.loss == "margin" else f"-{self.loss}"
        via = "-transfer" if self.transfer else ""
        return f"{self.attack}-{norm}-{eps_slug(self.eps)}-{sched}-{self.objective}{loss}{via}"

    @property
    def eps_label(self) -> str:
        return eps_label(self.eps)

    @property
    def effective_step_size(self) -> float | None:
        """The step size actually used (None where the algorithm chooses its own)."""
        if self.step_size is not None:
            return self.step_size
        cls = REGISTRY.get((self.attack, self.library))
        return cls.default_step_size(self) if cls is not None else None

    def settings(self) -> AttackSettings:
        """The spec as stored in results.json (``suite.attacks`` and each ``attacks[]`` entry)."""
        return AttackSettings(**self._recorded())

    def _recorded(self) -> dict[str, Any]:
        return {
            "id": self.id, "attack": self.attack, "library": self.library, "norm": self.norm,
            "eps": self.eps, "eps_label": self.eps_label, "steps": self.steps,
            "step_size": self.effective_step_size, "restarts": self.restarts,
            "random_init": self.random_init, "objective": self.objective, "notes": self.notes,
            "loss": self.loss, "transfer": self.transfer,
        }  # fmt: skip

    def result(self, **measured: Any) -> AttackResult:
        """Its ``attacks[]`` entry: the settings plus ``metrics``, ``operating_point``,
        ``seconds`` and ``budget``."""
        return AttackResult(**self._recorded(), **measured)

    def to_dict(self) -> dict[str, Any]:
        """``settings()`` as JSON."""
        return self.settings().to_json()


@dataclass
class Suite:
    """A named, ordered list of attacks plus the headline budget the robust metrics use."""

    name: str
    description: str
    attacks: list[AttackSpec] = field(default_factory=list)
    headline_eps: float = HEADLINE_EPS
    overrides: dict[str, Any] = field(default_factory=dict)

    def info(
        self,
        attacks: list[AttackSpec] | None = None,
        skipped: list[dict[str, Any]] | None = None,
    ) -> SuiteInfo:
        """As stored in results.json: name, description, overrides, the attack specs that ran
        (default: all) and those ``skipped``."""
        return SuiteInfo(
            self.name, self.description,
            tuple(a.settings() for a in (self.attacks if attacks is None else attacks)),
            dict(self.overrides), tuple(skipped) if skipped else None,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """``info()`` as JSON."""
        return self.info().to_json()


def _both(spec: AttackSpec) -> list[AttackSpec]:
    return [replace(spec, objective=o) for o in ("detection", "localization")]


def _standard(eps_list: tuple[float, ...]) -> list[AttackSpec]:
    specs: list[AttackSpec] = []
    for eps in eps_list:
        specs.append(AttackSpec("fgsm", "art", "inf", eps, 1, "detection", random_init=False))
        specs.append(
            AttackSpec(
                "fgsm",
                "art",
                "inf",
                eps,
                1,
                "localization",
                random_init=False,
                notes=_FGSM_LOC_NOTES,
            )
        )
        for steps in (10, 50):
            specs += _both(
                AttackSpec("pgd", "art", "inf", eps, steps, "detection", notes=_PGD_NOTES)
            )
    return specs


def _full_extra(eps: float, image_size: int) -> list[AttackSpec]:
    return [
        *_both(
            AttackSpec(
                "pgd",
                "art",
                "inf",
                eps,
                100,
                "detection",
                restarts=5,
                notes=_PGD_NOTES + _RESTART_NOTES,
            )
        ),
        *_both(
            AttackSpec("pgd", "art", "2", l2_eps(image_size), 50, "detection", notes=_PGD_NOTES)
        ),
        AttackSpec("apgd", "art", "inf", eps, 100, "detection", notes=_APGD_NOTES),
        *_both(AttackSpec("square", "art", "inf", eps, 1000, "detection", notes=_SQUARE_NOTES)),
    ]


def _auto(eps: float) -> list[AttackSpec]:
    apgd = AttackSpec("apgd", "native", "inf", eps, 100, "detection", notes=_NATIVE_APGD_NOTES)
    return [
        *_both(apgd),
        *_both(replace(apgd, loss="smoothmax", notes=_NATIVE_APGD_NOTES + _SMOOTHMAX_NOTES)),
        *_both(AttackSpec("square", "art", "inf", eps, 1000, "detection", notes=_SQUARE_NOTES)),
    ]


DESCRIPTIONS = {
    "quick": "clean + native-torch PGD-10 L-inf at 8/255 (random start), each objective",
    "standard": (
        "ART FGSM, PGD-10 and PGD-50 L-inf (random start) at 2/255, 4/255, 8/255, each objective"
    ),
    "full": (
        "standard + at 8/255: ART PGD-100 x 5 restarts, AutoPGD-100 (detection, decision flip), "
        "Square-1000 queries (black-box); ART PGD-50 L2 at eps 3.0 x side/224; each objective; "
        "about 38 s per test image (tiny preset, 2 cores)"
    ),
    "auto": (
        "the number to quote, at 8/255 only: native AutoPGD-100 (score-moving) with the margin "
        "and with a second, smooth-max loss, and Square-1000 queries (black-box), each "
        "objective; per-example worst case; about 25 s per test image (tiny preset, 2 cores)"
    ),
    "official": (
        "the official PatchGuard code's test: native PGD-10 at 8/255 on its patch objective, "
        "step 2.5*eps/10, no random start"
    ),
    "paper": "the paper's protocol: the official test attack with 1000 steps (PGD-1000 at 8/255)",
}


def gradient_free_plan(
    specs: list[AttackSpec], *, surrogate: bool
) -> tuple[list[AttackSpec], list[AttackSpec]]:
    """The attacks for a detector without input gradients (an ONNX/OpenVINO export, a
    thresholded forward): each white-box spec is replaced by NES (black-box) at the same budget,
    schedule, objective and loss, and, when a ``surrogate`` is given, also by itself crafted on
    the surrogate (transfer); black-box specs stay. Returns ``(to run, replaced)``."""
    from pgaudit.attacks.algorithms import make_attack

    out: list[AttackSpec] = []
    replaced: list[AttackSpec] = []
    for spec in specs:
        if not make_attack(spec).needs_gradients:
            variants = [spec]
        else:
            replaced.append(spec)
            step = spec.effective_step_size if spec.attack in ("pgd", "fgsm") else None
            nes = replace(spec, attack="nes", library="native", restarts=1, step_size=step,
                          notes=_NES_NOTES)  # fmt: skip
            variants = [nes]
            if surrogate:
                variants.append(replace(spec, transfer=True, notes=spec.notes + _TRANSFER_NOTES))
        out += [v for v in variants if all(v.id != o.id for o in out)]
    return out, replaced


def describe_suites() -> str:
    """One line per suite, for ``--help``."""
    return "; ".join(f"{name}: {DESCRIPTIONS[name]}" for name in SUITES) + "."


def check_suite_options(
    name: str,
    *,
    eps: list[float] | None = None,
    steps: int | None = None,
    objective: str | None = None,
    step_size: float | None = None,
    restarts: int | None = None,
) -> None:
    """Refuse bad :func:`build_suite` arguments (before any detector is loaded)."""
    if name not in SUITES:
        raise ParameterError(
            f"suite {name!r} is unknown: choose one of {', '.join(SUITES)}.", "suite"
        )
    if objective not in (None, *OBJECTIVE_CHOICES):
        raise ParameterError(
            f"objective {objective!r} is unknown: choose one of {', '.join(OBJECTIVE_CHOICES)}.",
            "objective",
        )
    if steps is not None:
        check_at_least("steps", steps)
    if restarts is not None:
        check_at_least("restarts", restarts)
    for value in eps or ():  # they replace the L∞ budgets
        check_linf_eps("eps", value)
    if step_size is not None:
        check_positive("step_size", step_size, "1/255")


def build_suite(
    name: str,
    *,
    image_size: int = 224,
    eps: list[float] | None = None,
    steps: int | None = None,
    objective: str | None = None,
    step_size: float | None = None,
    restarts: int | None = None,
) -> Suite:
    """The attacks of suite ``name`` with the CLI overrides applied.

    ``eps`` replaces the L∞ budgets (the largest becomes the headline ε; L2 budgets are kept);
    ``steps`` replaces the step/query count of every iterative attack (FGSM stays one step);
    ``objective`` ("detection" | "localization" | "both") filters; ``step_size`` replaces the PGD
    step; ``restarts`` replaces the restart count of PGD, AutoPGD and Square.
    """
    check_suite_options(
        name, eps=eps, steps=steps, objective=objective, step_size=step_size, restarts=restarts
    )
    eps_list = tuple(sorted(eps)) if eps else None
    headline = max(eps_list) if eps_list else HEADLINE_EPS

    if name == "quick":
        notes = _PGD_NOTES + _NATIVE_NOTES
        specs = _both(
            AttackSpec("pgd", "native", "inf", HEADLINE_EPS, 10, "detection", notes=notes)
        )
        if eps_list:
            specs = [replace(s, eps=e) for e in eps_list for s in specs]
    elif name == "auto":
        specs = _auto(headline)
    elif name in ("official", "paper"):  # PGD-10 (the official test) / PGD-1000 (the paper)
        specs = [
            AttackSpec("pgd", "native", "inf", e, 10 if name == "official" else 1000,
                       "localization", random_init=False, notes=_OFFICIAL_NOTES)
            for e in (eps_list or (HEADLINE_EPS,))
        ]  # fmt: skip
    else:
        specs = _standard(eps_list or STANDARD_EPS)
        if name == "full":
            specs += _full_extra(headline, image_size)

    out: list[AttackSpec] = []
    for spec in specs:
        if objective not in (None, "both") and spec.objective != objective:
            continue
        if steps is not None and spec.attack != "fgsm":
            spec = replace(spec, steps=steps)
        if step_size is not None and spec.attack == "pgd":
            spec = replace(spec, step_size=step_size)
        if restarts is not None and spec.attack != "fgsm":
            spec = replace(spec, restarts=restarts)
            if spec.attack == "pgd" and restarts > 1 and _RESTART_NOTES not in spec.notes:
                spec = replace(spec, notes=spec.notes + _RESTART_NOTES)
        if all(spec.id != o.id for o in out):
            out.append(spec)
    overrides = {
        "eps": list(eps_list) if eps_list else None,
        "steps": steps,
        "objective": objective,
        "step_size": step_size,
        "restarts": restarts,
    }
    return Suite(
        name=name,
        description=DESCRIPTIONS[name],
        attacks=out,
        headline_eps=headline,
        overrides={k: v for k, v in overrides.items() if v is not None},
    )
