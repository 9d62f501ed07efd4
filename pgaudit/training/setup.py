"""The model a hardening run starts from: a MODEL spec (checkpoint path or ``patchguard``) → module.

Kept apart from the loop so a general resolver (``pgaudit.models.resolve``) can replace
:func:`trainable_model` without touching :func:`pgaudit.training.loop.harden`, which accepts any
``nn.Module`` with patch logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pgaudit.errors import PgauditError
from pgaudit.models.checkpoint import read_torch_file
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import PatchGuardConfig, TrainConfig, get_preset
from pgaudit.models.resolve import LoadedDetector, load_detector
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
) -> StartingModel:
    """Build the model named by ``spec``: ``patchguard`` (fresh, from ``preset``) or a checkpoint."""
    notes: list[str] = []
    if spec.lower() in FRESH_SPECS:
        config: PatchGuardConfig = get_preset(preset or "tiny")
        torch.manual_seed(seed)
        model = PatchGuard(config)
        source = f"fresh PatchGuard, preset {config.name}"
    else:
        start = start_from_loaded(load_detector(spec), spec, preset)
        model, config, source, notes = start.model, start.config, start.source, start.notes
    if backbone_weights is not None and pretrained:
        raise PgauditError("--pretrained and --backbone-weights exclude each other: pass one.")
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
        notes.append(f"--preset {preset} ignored: the architecture comes from {spec}")
    return StartingModel(model=model.train(), config=config, source=source, notes=notes)


def resumed_model(out: str | Path) -> nn.Module:
    """The model stored in an interrupted run's checkpoint ``out`` (weights loaded by ``harden``)."""
    from pgaudit.models.checkpoint import is_pgaudit_checkpoint, model_from_payload

    payload = read_torch_file(out)
    if not is_pgaudit_checkpoint(payload):
        raise PgauditError(
            f"--resume: {out} is not a pgaudit checkpoint; drop --resume or pick another --out."
        )
    if payload.get("kind") == "python":
        from pgaudit.models.resolve import load_detector

        return load_detector(str(out)).detector.train()
    return model_from_payload(payload, out)
