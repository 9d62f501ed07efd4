"""The baseline detectors shipped with pgaudit (PatchCore, autoencoder): fit on a category, save, load.

Saved like pgaudit checkpoints (``format`` pgaudit.checkpoint/1, tensors + a config of Python
primitives, written atomically) with their own ``kind``, so ``torch.load(weights_only=True)``
reads them and :func:`pgaudit.models.resolve.load_detector` recognises them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pgaudit import __version__
from pgaudit.checks import check_at_least, check_out_file, check_seed
from pgaudit.errors import ParameterError, PgauditError
from pgaudit.models.autoencoder import Autoencoder, AutoencoderConfig, fit_autoencoder
from pgaudit.models.checkpoint import FORMAT, write_payload
from pgaudit.models.patchcore import SAMPLERS, PatchCore, PatchCoreConfig, fit_patchcore

BASELINES = ("patchcore", "autoencoder")


def save_baseline(
    path: str | Path, kind: str, module: nn.Module, training: dict[str, Any] | None = None
) -> Path:
    """Write a baseline (``module.config`` + its tensors) to ``path`` atomically."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "pgaudit_version": __version__,
        "kind": kind,
        "config": module.config.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
        "training": training or {},
    }
    return write_payload(payload, path)


def baseline_from_payload(payload: dict[str, Any], path: str | Path = "<memory>") -> nn.Module:
    """Rebuild a saved baseline (eval mode); the backbone weights come from the file."""
    kind = payload.get("kind")
    config = dict(payload.get("config", {}))
    model: nn.Module
    if kind == "patchcore":
        model = PatchCore(PatchCoreConfig.from_dict(config), pretrained=False)
        bank = payload["state_dict"].get("memory_bank")
        if bank is not None:
            model.memory_bank = torch.empty_like(bank)
    elif kind == "autoencoder":
        model = Autoencoder(AutoencoderConfig.from_dict(config))
    else:
        raise PgauditError(f"{path}: unknown baseline kind {kind!r}; expected one of {BASELINES}.")
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise PgauditError(
            f"{path} does not match the {kind} model its config describes (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}): it was edited or written by another pgaudit version."
        )
    return model.eval()


def fit_baseline(
    kind: str,
    data: str | Path,
    out: str | Path,
    *,
    category: str | None = None,
    image_size: int = 128,
    coreset: float = 0.1,
    sampler: str = "greedy",
    epochs: int | None = None,
    max_train: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Fit a baseline on the normal training images of one category and save it to ``out``.

    Returns (path, summary). ``coreset``/``sampler`` apply to PatchCore, ``epochs`` to the
    autoencoder; ``max_train`` caps the number of training images (first ones).
    """
    from pgaudit.data.dataset import AnomalyDataset
    from pgaudit.data.layouts import open_category

    if kind not in BASELINES:
        raise PgauditError(f"baseline {kind!r}: unknown; choose one of {', '.join(BASELINES)}.")
    if not 0 < coreset <= 1:
        raise ParameterError(
            f"coreset {coreset}: must be a fraction in (0, 1], e.g. 0.1.", "coreset"
        )
    if sampler not in SAMPLERS:
        raise ParameterError(
            f"sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}.", "sampler"
        )
    if image_size < 16 or image_size % 16:
        raise ParameterError(
            f"image_size {image_size}: use a multiple of 16, e.g. 128.", "image_size"
        )
    if epochs is not None:
        check_at_least("epochs", epochs)
    if max_train is not None:
        check_at_least("max_train", max_train, fix="leave it out to use every image")
    check_seed(seed)
    check_out_file(out, "out")
    cat = open_category(Path(data), category)
    samples = cat.train[:max_train] if max_train is not None else cat.train
    if not samples:
        raise PgauditError(f"{cat.root}: no training images; a baseline needs normal images.")
    dataset = AnomalyDataset(samples, image_size)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    start = time.perf_counter()
    training: dict[str, Any] = {
        "data": str(cat.root),
        "category": cat.name,
        "train_images": len(dataset),
        "seed": seed,
    }
    model: nn.Module
    if kind == "patchcore":
        config = PatchCoreConfig(image_size=image_size, coreset=coreset, sampler=sampler, seed=seed)
        batches = (images[i : i + 16] for i in range(0, len(images), 16))
        model = fit_patchcore(batches, config, device=device, progress=progress)
        training["memory_bank"] = int(model.memory_bank.shape[0])
    else:
        ae_config = AutoencoderConfig(image_size=image_size, seed=seed)
        if epochs is not None:
            ae_config = AutoencoderConfig(image_size=image_size, seed=seed, epochs=epochs)
        model, losses = fit_autoencoder(images, ae_config, device=device, progress=progress)
        training["final_loss"] = losses[-1] if losses else None
    training["seconds"] = round(time.perf_counter() - start, 2)
    path = save_baseline(out, kind, model, training)
    return path, training


def describe_fit(kind: str, path: Path, summary: dict[str, Any], image_size: int) -> str:
    """One line on what :func:`fit_baseline` saved (its ``path`` and ``summary``)."""
    extra = (
        f"memory bank {summary['memory_bank']} features"
        if kind == "patchcore"
        else f"final loss {summary['final_loss']:.4f}"
    )
    return (
        f"{path}: {kind} on {summary['category']} ({summary['train_images']} images, "
        f"{image_size} px), {extra}, {summary['seconds']:.1f} s"
    )
