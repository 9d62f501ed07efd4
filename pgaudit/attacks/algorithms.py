"""Attack algorithms as small objects: one class per (algorithm, library), made from a spec.

:func:`make_attack` looks the spec's ``(attack, library)`` up in :data:`REGISTRY` and builds the
attack, which validates its settings on construction, so a bad combination (AutoPGD on the
localization objective, a native Square attack, ε = 0) fails before any image is attacked.
``perturb`` makes one run on one batch; :class:`Restarts` wraps an attack whose library does not
restart by itself. Suites only pick specs; everything an algorithm needs to know lives here.

The module imports neither torch nor ART (suites and ``--help`` read it); ``perturb`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pgaudit.attacks.eps import default_step_size
from pgaudit.errors import ParameterError

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

    from pgaudit.attacks.execute import Attacker, BatchTarget
    from pgaudit.attacks.suites import AttackSpec

NORMS: tuple[str, ...] = ("inf", "2")
OBJECTIVES: tuple[str, ...] = ("detection", "localization")

#: ``(attack, library) -> class``; filled by :func:`register`.
REGISTRY: dict[tuple[str, str], type[Attack]] = {}


def register(cls: type[Attack]) -> type[Attack]:
    """Class decorator: make ``cls`` the implementation of ``(cls.name, cls.library)``."""
    REGISTRY[(cls.name, cls.library)] = cls
    return cls


def attack_class(attack: str, library: str) -> type[Attack]:
    """The class implementing ``attack`` in ``library``, or a ParameterError naming the fix."""
    if (attack, library) in REGISTRY:
        return REGISTRY[(attack, library)]
    names = sorted({name for name, _ in REGISTRY})
    if attack not in names:
        raise ParameterError(
            f"attack {attack!r} is unknown: choose one of {', '.join(names)}.", "attack"
        )
    libraries = sorted(lib for name, lib in REGISTRY if name == attack)
    raise ParameterError(
        f"attack {attack!r} has no {library!r} implementation: use library "
        f"{' or '.join(repr(lib) for lib in libraries)}.",
        "library",
    )


def make_attack(spec: AttackSpec) -> Attack | Restarts:
    """The validated attack for ``spec``; restarts wrapped where the library has none."""
    attack = attack_class(spec.attack, spec.library)(spec)
    if spec.restarts > 1 and not attack.own_restarts:
        return Restarts(attack)
    return attack


class Attack:
    """One algorithm bound to one :class:`~pgaudit.attacks.suites.AttackSpec` (validated here)."""

    name: ClassVar[str]
    library: ClassVar[str]
    objectives: ClassVar[tuple[str, ...]] = OBJECTIVES
    #: The library runs ``spec.restarts`` itself (else :func:`make_attack` wraps in Restarts).
    own_restarts: ClassVar[bool] = False
    #: Deterministic (no random start): more than one run would repeat the first.
    deterministic: ClassVar[bool] = False
    #: The losses it can maximise (pgaudit.attacks.objectives.LOSSES): ART's run the margin only.
    losses: ClassVar[tuple[str, ...]] = ("margin", "smoothmax")
    #: White-box: it differentiates the detector (False: scores only, a black-box attack).
    needs_gradients: ClassVar[bool] = True

    def __init__(self, spec: AttackSpec) -> None:
        what = f"{self.name} ({self.library})"
        if spec.norm not in NORMS:
            raise ParameterError(
                f"norm {spec.norm!r} of {what} is unknown: use 'inf' or '2'.", "norm"
            )
        if not spec.eps > 0:
            raise ParameterError(f"eps {spec.eps:g} of {what} must be positive.", "eps")
        if spec.steps < 1:
            raise ParameterError(f"steps {spec.steps} of {what} must be at least 1.", "steps")
        if spec.restarts < 1:
            raise ParameterError(
                f"restarts {spec.restarts} of {what} must be at least 1.", "restarts"
            )
        if self.deterministic and spec.restarts > 1:
            raise ParameterError(
                f"restarts {spec.restarts}: {what} is deterministic; use restarts 1.", "restarts"
            )
        if spec.step_size is not None and not spec.step_size > 0:
            raise ParameterError(
                f"step_size {spec.step_size:g} of {what} must be positive (or None).", "step_size"
            )
        if spec.loss not in self.losses:
            raise ParameterError(
                f"loss {spec.loss!r}: {what} maximises {' or '.join(self.losses)} only.", "loss"
            )
        if spec.objective not in self.objectives:
            raise ParameterError(
                f"objective {spec.objective!r}: {what} runs on "
                f"{' or '.join(self.objectives)} only.",
                "objective",
            )
        self.spec = spec

    @classmethod
    def default_step_size(cls, spec: AttackSpec) -> float | None:
        """The step size used when the spec sets none (None: the algorithm adapts its own)."""
        return None

    @property
    def step_size(self) -> float | None:
        spec = self.spec
        return spec.step_size if spec.step_size is not None else self.default_step_size(spec)

    def perturb(
        self, attacker: Attacker, images: Tensor, target: BatchTarget, rng: np.random.RandomState
    ) -> Tensor:
        """One run on one batch: the adversarial images (``rng``: the random start)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.id})"


class Restarts:
    """``spec.restarts`` independent runs of ``attack``; per image the run with the highest
    objective is kept."""

    own_restarts = True

    def __init__(self, attack: Attack) -> None:
        self.attack = attack
        self.needs_gradients = attack.needs_gradients
        self.spec = attack.spec

    @property
    def step_size(self) -> float | None:
        return self.attack.step_size

    def perturb(
        self, attacker: Attacker, images: Tensor, target: BatchTarget, rng: np.random.RandomState
    ) -> Tensor:
        import torch

        best_x: Tensor | None = None
        best_val: Tensor | None = None
        for _ in range(self.spec.restarts):
            adv = self.attack.perturb(attacker, images, target, rng).detach()
            val = attacker.objective(self.spec, attacker.output(adv), target)
            if best_x is None or best_val is None:
                best_x, best_val = adv, val
                continue
            better = val > best_val
            best_x = torch.where(better.view(-1, *([1] * (adv.ndim - 1))), adv, best_x)
            best_val = torch.where(better, val, best_val)
        assert best_x is not None
        return best_x

    def __repr__(self) -> str:
        return f"Restarts({self.attack!r})"


# -- native torch ----------------------------------------------------------------------------


@register
class NativePGD(Attack):
    """PGD in plain torch (:func:`pgaudit.attacks.native.pgd`), ART's semantics and seeding."""

    name, library = "pgd", "native"

    @classmethod
    def default_step_size(cls, spec: AttackSpec) -> float | None:
        return default_step_size(spec.eps, spec.steps)

    def schedule(self) -> tuple[int, bool]:
        """``(steps, random start)`` of one run."""
        return self.spec.steps, self.spec.random_init

    def perturb(
        self, attacker: Attacker, images: Tensor, target: BatchTarget, rng: np.random.RandomState
    ) -> Tensor:
        import torch

        from pgaudit.attacks import native

        steps, random_init = self.schedule()
        spec = self.spec
        with torch.enable_grad():
            return native.pgd(
                attacker.objective_fn(spec, target), images, eps=spec.eps, norm=spec.norm, steps=steps,
                step_size=self.step_size, random_init=random_init, rng=rng,
            )  # fmt: skip


@register
class NativeFGSM(NativePGD):
    """FGSM: one signed-gradient step of size ε from the clean image."""

    name = "fgsm"
    deterministic = True

    @classmethod
    def default_step_size(cls, spec: AttackSpec) -> float | None:
        return spec.eps

    def schedule(self) -> tuple[int, bool]:
        return 1, False


@register
class NativeAPGD(Attack):
    """Auto-PGD in plain torch (:func:`pgaudit.attacks.apgd.apgd`): momentum, step-size halving at
    the published checkpoints, the best iterate kept; on either objective, moving the score."""

    name, library = "apgd", "native"

    def __init__(self, spec: AttackSpec) -> None:
        super().__init__(spec)
        if spec.step_size is not None:
            raise ParameterError(
                f"step_size {spec.step_size:g}: apgd (native) adapts its own step size; "
                "leave step_size unset.",
                "step_size",
            )

    def perturb(
        self, attacker: Attacker, images: Tensor, target: BatchTarget, rng: np.random.RandomState
    ) -> Tensor:
        import torch

        from pgaudit.attacks.apgd import apgd

        spec = self.spec
        with torch.enable_grad():
            return apgd(
                attacker.objective_fn(spec, target), images, eps=spec.eps, norm=spec.norm,
                steps=spec.steps, random_init=spec.random_init, rng=rng,
            )  # fmt: skip


@register
class NativeNES(Attack):
    """NES in plain torch (:func:`pgaudit.attacks.native.nes`): PGD's signed steps on a gradient
    estimated from the objective's values alone, so it runs on detectors without gradients."""

    name, library = "nes", "native"
    needs_gradients = False
    #: Probes per step (antithetic pairs: half as many directions), and their width / ε.
    samples: ClassVar[int] = 20
    sigma_over_eps: ClassVar[float] = 0.25

    @staticmethod
    def tile(side: int) -> int:
        """The probes' tile side: 1/16 of the image side (14 px at 224, about a ViT patch)."""
        return max(1, side // 16)

    @classmethod
    def default_step_size(cls, spec: AttackSpec) -> float | None:
        return default_step_size(spec.eps, spec.steps)

    def perturb(
        self, attacker: Attacker, images: Tensor, target: BatchTarget, rng: np.random.RandomState
    ) -> Tensor:
        import torch

        from pgaudit.attacks import native

        spec = self.spec
        with torch.no_grad():
            return native.nes(
                attacker.objective_fn(spec, target), images, eps=spec.eps, norm=spec.norm,
                steps=spec.steps, step_size=self.step_size, samples=self.samples,
                sigma=self.sigma_over_eps * spec.eps, random_init=spec.random_init, rng=rng,
                tile=self.tile(int(images.shape[-1])),
            )  # fmt: skip


# -- ART ---------------------------------------------------------------------------------------


class ArtAttack(Attack):
    """An ART evasion attack run through :class:`~pgaudit.attacks.art_bridge.ArtBridge`."""

    library = "art"
    losses = ("margin",)

    def art_attack(self, classifier: Any, batch_size: int) -> Any:
        """The ART attack object for one run over ``classifier`` (the bridge's estimator)."""
        raise NotImplementedError

    @property
    def art_norm(self) -> Any:
        import numpy as np

        return np.inf if self.spec.norm == "inf" else int(self.spec.norm)

    def perturb(
        self, attacker: Attacker, images: Tensor, target: BatchTarget, rng: np.random.RandomState
    ) -> Tensor:
        import torch

        with torch.enable_grad():
            return attacker.bridge.generate(
                self, images, target.labels, target.grid_masks, target.threshold
            )


@register
class ArtPGD(ArtAttack):
    """ART's ``ProjectedGradientDescent`` (one random start per run; restarts by Restarts)."""

    name = "pgd"

    @classmethod
    def default_step_size(cls, spec: AttackSpec) -> float | None:
        return default_step_size(spec.eps, spec.steps)

    def art_attack(self, classifier: Any, batch_size: int) -> Any:
        from art.attacks.evasion import ProjectedGradientDescent

        spec = self.spec
        return ProjectedGradientDescent(
            classifier, norm=self.art_norm, eps=spec.eps, eps_step=self.step_size,
            max_iter=spec.steps, num_random_init=1 if spec.random_init else 0,
            batch_size=batch_size, verbose=False,
        )  # fmt: skip


@register
class ArtFGSM(ArtAttack):
    """ART's ``FastGradientMethod`` on detection; on localization ART's PGD with one step of
    size ε and no random start (ART's FGM renormalises multi-hot masks)."""

    name = "fgsm"
    deterministic = True

    @classmethod
    def default_step_size(cls, spec: AttackSpec) -> float | None:
        return spec.eps

    def art_attack(self, classifier: Any, batch_size: int) -> Any:
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

        spec, step = self.spec, self.step_size
        if spec.objective == "detection":
            return FastGradientMethod(
                classifier, norm=self.art_norm, eps=spec.eps, eps_step=step, num_random_init=0,
                batch_size=batch_size,
            )  # fmt: skip
        return ProjectedGradientDescent(
            classifier, norm=self.art_norm, eps=spec.eps, eps_step=step, max_iter=1,
            num_random_init=0, batch_size=batch_size, verbose=False,
        )  # fmt: skip


@register
class ArtAutoPGD(ArtAttack):
    """ART's ``AutoProjectedGradientDescent`` at the operating threshold (a decision-flip attack;
    its success test is meaningless on the localization objective)."""

    name = "apgd"
    objectives = ("detection",)
    own_restarts = True

    @classmethod
    def default_step_size(cls, spec: AttackSpec) -> float | None:
        return 2 * spec.eps  # AutoPGD's initial step, adapted per image

    def art_attack(self, classifier: Any, batch_size: int) -> Any:
        from art.attacks.evasion import AutoProjectedGradientDescent

        spec = self.spec
        return AutoProjectedGradientDescent(
            classifier, norm=self.art_norm, eps=spec.eps, eps_step=self.step_size,
            max_iter=spec.steps, targeted=False, nb_random_init=spec.restarts,
            batch_size=batch_size, loss_type=None, verbose=False,
        )  # fmt: skip


@register
class ArtSquare(ArtAttack):
    """ART's black-box ``SquareAttack`` with a margin loss on the objective (from scores only)
    and a success test that never fires, so the whole query budget moves the score."""

    name = "square"
    needs_gradients = False
    own_restarts = True

    def art_attack(self, classifier: Any, batch_size: int) -> Any:
        import numpy as np
        import torch
        from art.attacks.evasion import SquareAttack

        from pgaudit.attacks.art_bridge import never_successful, per_image_loss

        loss_fn = classifier.loss

        def square_loss(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            # Square minimises: the negated objective, from scores alone (black-box).
            pred = torch.from_numpy(classifier.predict(x, batch_size=batch_size))
            with torch.no_grad():
                per_image = per_image_loss(loss_fn, pred, torch.from_numpy(np.asarray(y)))
            return -per_image.numpy()

        spec = self.spec
        return SquareAttack(
            classifier, norm=self.art_norm, adv_criterion=never_successful, loss=square_loss,
            max_iter=spec.steps, eps=spec.eps, p_init=0.8, nb_restarts=spec.restarts,
            batch_size=batch_size, verbose=False,
        )  # fmt: skip
