"""The model a hardening run starts from: a MODEL spec (checkpoint path or ``patchguard``) → module.

Kept apart from the loop so a general resolver (``pgaudit.models.resolve``) can replace
:func:`trainable_model` without touching :func:`pgaudit.training.loop.harden`, which accepts any
``nn.Module`` with patch logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pgaudit.attacks.eps import eps_label
from pgaudit.checks import check_at_least, check_out_file, check_seed
from pgaudit.data.layouts import open_category
from pgaudit.data.records import Category
from pgaudit.errors import Interrupted, ParameterError, PgauditError
from pgaudit.models.checkpoint import read_torch_file
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import PatchGuardConfig, TrainConfig, check_train_values, get_preset
from pgaudit.models.resolve import LoadedDetector, implied_factory, load_detector
from pgaudit.training.backbone_weights import load_backbone_weights, load_hub_weights

FRESH_SPECS = ("patchguard",)


@dataclass
class StartingModel:
    """A model ready to train, the training recipe its preset/checkpoint recommends, and notes."""

    model: nn.Module
    config: PatchGuardConfig  # the preset whose recipe applies (the model's own for a PatchGuard)
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def train(self) -> TrainConfig:
        return self.config.train


def trainable_model(
    spec: str,
    *,
    preset: str | None = None,
    seed: int = 0,
    backbone_weights: str | Path | None = None,
    pretrained: bool = False,
    factory: str | None = None,
    from_scratch: bool = False,
) -> StartingModel:
    """Build the model named by ``spec``: ``patchguard`` (fresh, from ``preset``) or a checkpoint
    (``factory``: see :func:`pgaudit.models.resolve.load_detector`)."""
    notes: list[str] = []
    if from_scratch and (backbone_weights is not None or pretrained):
        raise ParameterError(
            "from_scratch excludes backbone_weights and pretrained: pass one.",
            "from_scratch", "backbone_weights", "pretrained",
        )  # fmt: skip
    if spec.lower() in FRESH_SPECS:
        config: PatchGuardConfig = get_preset(preset or "tiny")
        if config.name == "paper" and not (
            backbone_weights is not None or pretrained or from_scratch
        ):
            raise ParameterError(
                "preset paper fine-tunes a pre-trained DINOv2 in the published method: pass "
                "backbone_weights FILE (the DINOv2 weights), pretrained (a hub download), or "
                "from_scratch to train its architecture from random weights.",
                "backbone_weights", "pretrained", "from_scratch",
            )  # fmt: skip
        if config.name == "paper" and from_scratch:
            notes.append("backbone from random weights (from_scratch): not the paper's method")
        torch.manual_seed(seed)
        model = PatchGuard(config)
        source = f"fresh PatchGuard, preset {config.name}"
    else:
        start = start_from_loaded(load_detector(spec, factory=factory), spec, preset)
        model, config, source, notes = start.model, start.config, start.source, start.notes
    if backbone_weights is not None and pretrained:
        raise ParameterError(
            "pretrained and backbone_weights exclude each other: pass one.",
            "pretrained", "backbone_weights",
        )  # fmt: skip
    if backbone_weights is not None:
        notes += load_backbone_weights(model, backbone_weights)
        notes.append(f"backbone weights from {backbone_weights}")
    if pretrained:
        load_hub_weights(model, config.backbone)
        notes.append(f"backbone weights from the hub ({config.backbone})")
    return StartingModel(model=model.train(), config=config, source=source, notes=notes)


def start_from_loaded(
    loaded: LoadedDetector, spec: str, preset: str | None = None
) -> StartingModel:
    """The model and recipe to harden from a resolved MODEL (PatchGuard or a Python detector).

    A PatchGuard keeps its own preset; a Python detector gets ``preset``'s recipe (``tiny`` by
    default). Other kinds, and detectors without trainable weights, are refused.
    """
    if loaded.kind in ("onnx", "openvino"):
        raise PgauditError(
            f"MODEL {spec!r} is an exported {loaded.kind} file: it has no gradients to train; "
            "harden the model it was exported from, then export it again."
        )
    if loaded.kind.startswith("anomalib-"):
        raise PgauditError(
            f"MODEL {spec!r} is an anomalib {loaded.kind.split('-', 1)[1]} model: a memory bank "
            "fitted to the normal images, not trained by gradient descent, so adversarial "
            "training does not apply; audit it, or harden a PatchGuard on the same data."
        )
    if not (isinstance(loaded.detector, PatchGuard) or loaded.kind == "python"):
        raise PgauditError(
            f"MODEL {spec!r} is a {loaded.kind} model: `harden` trains PatchGuard models "
            "(pgaudit or official checkpoints, or `patchguard`) and Python detectors "
            "(package.module:function) whose weights it can save."
        )
    if not loaded.trainable:
        raise PgauditError(f"MODEL {spec!r} has no trainable parameters: nothing to harden.")
    model, notes = loaded.detector, []
    if isinstance(model, PatchGuard):
        config = model.config
        source = f"{loaded.kind} checkpoint {spec} (preset {config.name})"
    else:  # a user detector: the recipe of the preset (tiny by default), no regulariser
        config = get_preset(preset or "tiny")
        source = f"Python detector {loaded.name}; recipe of preset {config.name}"
    if preset is not None and preset != config.name:
        notes.append(f"preset {preset!r} ignored: the architecture comes from {spec}")
    return StartingModel(model=model.train(), config=config, source=source, notes=notes)


def resumed_model(out: str | Path, factory: str | None = None) -> nn.Module:
    """The model stored in an interrupted run's checkpoint ``out`` (weights loaded by ``harden``)."""
    from pgaudit.models.checkpoint import is_pgaudit_checkpoint, model_from_payload

    payload = read_torch_file(out)
    if not is_pgaudit_checkpoint(payload):
        raise ParameterError(
            f"resume: {out} is not a pgaudit checkpoint; drop resume or pick another out.",
            "resume", "resume", "out",
        )  # fmt: skip
    if payload.get("kind") == "python":
        from pgaudit.models.resolve import load_detector

        return load_detector(str(out), factory=factory).detector.train()
    return model_from_payload(payload, out)


@dataclass
class HardenPlan:
    """A hardening run ready to start: the model, the data, the recipe (see :func:`plan_hardening`)."""

    start: StartingModel
    model: nn.Module  # start.model, or the interrupted run's model when resuming
    category: Category
    recipe: TrainConfig
    seed: int = 0
    out: Path | None = None
    resume: bool = False
    workers: int = 1  # DataLoader workers making FAPA batches (0: inline)

    def describe(self) -> list[str]:
        """What will run, one line each: model, data, recipe, notes."""
        r = self.recipe
        mode = (
            f"adversarial, PGD-{r.steps} at ε={eps_label(r.eps)}"
            if r.adversarial
            else "clean (no adversarial terms)"
        )
        extras = [f"attention regulariser {'on' if r.regularise else 'off'}"]
        if r.adversarial and r.clean_epochs:
            extras.append(f"the first {r.clean_epochs} epochs clean")
        if r.adversarial and r.carry_perturbations:
            extras.append("perturbations carried across epochs")
        cat = self.category
        return [
            f"model: {self.start.source}",
            f"data: {cat.name} ({len(cat.train)} training images) at {cat.root}",
            f"recipe: {mode}, {r.epochs} epochs, batch {r.batch_size}, lr {r.lr:g}, "
            + ", ".join(extras),
            *(f"note: {note}" for note in self.start.notes),
        ]

    def run(self, *, device: str = "cpu", progress: bool = False, **loop_options: Any):
        """Train; returns :class:`pgaudit.training.loop.HardenResult`."""
        from pgaudit.training.loop import harden

        return harden(
            self.model, self.category, self.recipe, out=self.out, seed=self.seed, device=device,
            resume=self.resume, num_workers=self.workers, progress=progress, **loop_options,
        )  # fmt: skip


def checkpoint_mtime(path: Path | None) -> int | None:
    """``path``'s modification time in ns, or None when it is not a file."""
    return path.stat().st_mtime_ns if path is not None and path.is_file() else None


def interrupted(out: Path, before: int | None, resumed: bool) -> Interrupted:
    """What a run stopped by Ctrl-C kept: ``out`` to resume from (it changed since ``before``, or
    the run was a resumed one), or nothing."""
    now = checkpoint_mtime(out)
    if now not in (None, before) or (resumed and now is not None):  # an epoch is saved there
        return Interrupted(
            f"interrupted: {out} holds the last finished epoch; add resume to continue.", "resume"
        )
    return Interrupted(
        f"interrupted before the first epoch finished; nothing new was saved to {out}."
    )


def existing_run(out: Path) -> tuple[str, dict[str, Any] | None]:
    """What the file ``out`` holds: ``("foreign", None)`` (not a pgaudit checkpoint),
    ``("unfinished", payload)`` (an interrupted run's resume state) or ``("finished", payload)``."""
    from pgaudit.models.checkpoint import is_pgaudit_checkpoint

    try:
        payload = read_torch_file(out)
    except PgauditError:
        return "foreign", None
    if not is_pgaudit_checkpoint(payload):
        return "foreign", None
    return ("unfinished" if payload.get("resume") is not None else "finished"), payload


def check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse to start a run over an existing ``out``: never over a file that is not a pgaudit
    checkpoint (it is someone's data), and over a checkpoint only with ``overwrite`` (so a rerun
    cannot replace a finished model, or an interrupted one's resume state, after one epoch)."""
    state, _ = existing_run(out)
    if state == "foreign":
        raise ParameterError(
            f"out {out} exists and is not a pgaudit checkpoint: choose another out (that file "
            "is kept).",
            "out", "out",
        )  # fmt: skip
    if overwrite:
        return
    if state == "unfinished":
        raise ParameterError(
            f"out {out} holds an interrupted run: add resume to continue it, or overwrite to "
            "start again.",
            "out", "resume", "overwrite",
        )  # fmt: skip
    raise ParameterError(
        f"out {out} holds a finished model: pass overwrite to replace it, or choose another out.",
        "out", "overwrite", "out",
    )  # fmt: skip


def check_model_argument(model: object) -> None:
    """Refuse a ``model`` that is neither a loaded detector nor a MODEL string."""
    if not isinstance(model, LoadedDetector | str):
        raise ParameterError(
            f"model: got a {type(model).__name__}; pass what pgaudit.load_detector returns or a "
            "MODEL string (pgaudit.training.loop.harden trains a bare module).",
            "model",
        )


def check_hardening_options(
    changes: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    workers: int = 1,
    out: str | Path | None = None,
) -> None:
    """Refuse bad :func:`plan_hardening` options before any model is built or data opened."""
    check_train_values(changes or {})
    check_seed(seed)
    check_at_least("workers", workers, 0, meaning="make the batches inline")
    if out is not None:
        check_out_file(out, "out")


def plan_hardening(
    model: LoadedDetector | str,
    data: Category | str | Path,
    *,
    category: str | None = None,
    recipe: TrainConfig | None = None,
    changes: dict[str, Any] | None = None,
    preset: str | None = None,
    seed: int = 0,
    backbone_weights: str | Path | None = None,
    pretrained: bool = False,
    out: str | Path | None = None,
    resume: bool = False,
    workers: int = 1,
    factory: str | None = None,
    overwrite: bool = False,
    from_scratch: bool = False,
) -> HardenPlan:
    """The run that hardens ``model`` on ``data`` (a Category, or a folder and its ``category``):
    its recipe is ``recipe`` (default: the model's preset) with ``changes`` (TrainConfig fields)
    applied. The model is resolved first, so a wrong MODEL is reported before the data. An existing
    ``out`` is continued with ``resume`` or replaced with ``overwrite`` (see
    :func:`check_replaceable`)."""
    check_hardening_options(changes, seed=seed, workers=workers, out=out)
    if out is not None and Path(out).is_file() and not resume:
        check_replaceable(Path(out), overwrite)
    if isinstance(model, LoadedDetector):
        if backbone_weights is not None or pretrained:
            raise ParameterError(
                "backbone_weights and pretrained apply to a fresh PatchGuard only.",
                "backbone_weights", "pretrained",
            )  # fmt: skip
        start = start_from_loaded(model, model.spec or model.name, preset)
    elif isinstance(model, str):
        start = trainable_model(
            model, preset=preset, seed=seed, backbone_weights=backbone_weights,
            pretrained=pretrained, factory=factory, from_scratch=from_scratch,
        )  # fmt: skip
    else:
        check_model_argument(model)
    if not isinstance(data, Category):
        data = open_category(Path(data), category)
    model_spec = model if isinstance(model, str) else (model.spec or "")  # type: ignore[union-attr]
    out_path = Path(out) if out is not None else None
    chosen = replace(recipe or start.train, **(changes or {}))
    resumed = resume and out_path is not None and out_path.is_file()
    return HardenPlan(
        start=start,
        model=resumed_model(out_path, implied_factory(model_spec, factory)) if resumed  # type: ignore[arg-type]
        else start.model,
        category=data, recipe=chosen, seed=seed, out=out_path, resume=resume, workers=workers,
    )  # fmt: skip
