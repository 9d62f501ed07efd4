"""The hardening loop: FAPA + PGD adversarial training + attention regulariser (DESIGN.md §2).

:func:`harden` trains any ``nn.Module`` whose forward maps images in [0, 1] to patch logits
``[B, h, w]``; it asks for attention (``model(x, return_attention=True)``) only when the
regulariser is on and the model's forward accepts that keyword. Every batch contributes four
BCE terms (clean normal, PGD normal, clean pseudo-anomalies, PGD pseudo-anomalies) computed in
one concatenated training forward; the attacks run with frozen weights on the fused path. With
``carry_perturbations`` each image's attack starts from its perturbation of the previous epoch
(:mod:`pgaudit.training.perturbations`).

After every epoch the checkpoint is rewritten atomically with the optimizer/scheduler state, and a
JSON line is appended to ``<out>.log.jsonl``; ``resume=True`` continues from that state. All
randomness is derived from ``seed`` and the epoch/batch position, so a resumed run on the CPU
ends with the same weights as an uninterrupted one.

Inside a ``torch.distributed`` process group (``pgaudit harden --nproc N``, torchrun) the model is
wrapped in DistributedDataParallel and every process trains on its equal share of each global
batch (the training attack runs on the share, with the unwrapped model); the gradients are
averaged, so N processes with batch B make the updates of one process with batch B, up to float
rounding (dropout masks aside). Rank 0 alone shows progress and writes the checkpoint and log.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pgaudit.attacks.native import random_start
from pgaudit.data.dataset import AnomalyDataset
from pgaudit.data.records import Category
from pgaudit.devices import resolve_device
from pgaudit.errors import ParameterError, PgauditError
from pgaudit.fapa import FapaConfig
from pgaudit.models.checkpoint import is_pgaudit_checkpoint, read_torch_file, save_checkpoint
from pgaudit.models.detector import Detector
from pgaudit.models.presets import TrainConfig
from pgaudit.precision import as_fp32, crafting, resolve_precision
from pgaudit.runtime import distributed
from pgaudit.runtime.interrupts import raise_if_interrupted
from pgaudit.training.adversarial import training_attack
from pgaudit.training.batches import PerImageRandomState, batch_loader, derive_seed, image_seeds
from pgaudit.training.ema import WeightAverage
from pgaudit.training.loss import attention_regulariser, four_term_bce, patch_bce, patch_kl
from pgaudit.training.perturbations import PerturbationBank
from pgaudit.training.validation import (
    Selection,
    ValidationSet,
    make_validation_set,
    split_validation,
    validate,
)

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class HardenResult:
    """What a hardening run did."""

    model: nn.Module
    checkpoint: Path | None
    log: Path | None
    epochs: int  # epochs completed in total (including resumed ones)
    start_epoch: int  # 0 for a fresh run
    seconds: float  # wall time of this call's epochs
    foreground: str  # how pseudo-anomalies were placed
    device: str
    train_config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    workers: int = 1  # training processes (torch.distributed world size)
    validation: dict[str, Any] | None = None  # held-out figures of the kept weights (if any)

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None

    def describe(self) -> list[str]:
        """What the run did, one line each; the last names the checkpoint written (if any)."""
        lines = [f"pseudo-anomaly placement: {self.foreground}"]
        lines += [f"note: {note}" for note in self.notes]
        if self.validation is not None:
            val = self.validation
            robust = f", robust {val['robust']:.3f}" if val.get("robust") is not None else ""
            kept = "selected" if val["selected"] else "last"
            lines.append(
                f"held-out validation ({val['held_out_images']} normal images + pseudo-anomalies; "
                f"mean of image and patch AUROC): clean {val['clean']:.3f}{robust} "
                f"at epoch {val['epoch']} ({kept})"
            )
        resumed = f" (resumed at epoch {self.start_epoch})" if self.start_epoch else ""
        on = self.device + (f" x {self.workers} processes" if self.workers > 1 else "")
        loss = self.final_loss
        where = f"{self.checkpoint}: " if self.checkpoint is not None else "in memory: "
        lines.append(
            f"{where}{self.epochs} epochs{resumed} on {on} in {self.seconds / 60:.1f} min, "
            f"final loss {loss:.3f}" + (f"; log {self.log}" if self.log is not None else "")
        )
        return lines


def log_path(out: str | Path) -> Path:
    """The JSON-lines log next to a checkpoint: ``OUT.pt`` → ``OUT.log.jsonl``."""
    out = Path(out)
    return out.with_name(out.stem + ".log.jsonl")


def supports_attention(model: nn.Module) -> bool:
    """True when ``model(x, return_attention=True)`` is accepted."""
    try:
        return "return_attention" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def describe_foreground(category: Category) -> str:
    """Which placement FAPA uses for this category's training images."""
    n = len(category.train)
    with_fg = sum(s.foreground is not None for s in category.train)
    if with_fg == n:
        return "foreground masks"
    if with_fg == 0:
        return "whole image (no foreground masks)"
    return f"foreground masks for {with_fg} of {n} images (whole image for the rest)"


def cosine_factor(step: int, total: int, min_factor: float) -> float:
    """Cosine annealing from 1 to ``min_factor`` over ``total`` steps."""
    t = min(1.0, step / max(1, total))
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))


def eps_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The training ε at a global step: 0 for the ``clean_epochs``, then a linear warm-up over
    ``eps_warmup_epochs``, then ``eps``."""
    step -= config.clean_epochs * steps_per_epoch
    if step < 0:
        return 0.0
    warm = config.eps_warmup_epochs * steps_per_epoch
    if warm <= 0:
        return config.eps
    return config.eps * min(1.0, (step + 1) / warm)


def _grid_of(model: nn.Module, image_size: int, device: torch.device) -> tuple[int, int]:
    grid = model.grid if isinstance(model, Detector) else None
    if grid is not None:
        return tuple(grid)  # type: ignore[return-value]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, image_size, image_size, device=device))
    return tuple(out.shape[-2:])  # type: ignore[return-value]


def train_step(
    model: nn.Module,
    batch: dict[str, Tensor],
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    *,
    eps: float,
    rng: np.random.RandomState | None,
    reg_weights: tuple[float, ...] | None,
    attacked: nn.Module | None = None,  # what PGD differentiates (default model; DDP: .module)
    bank: PerturbationBank | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One update on a FAPA batch; returns the loss, its parts and timings (floats; ``*_s`` wall,
    ``*_cpu_s`` process CPU seconds).

    ``bank``: perturbations carried across epochs (``batch["indices"]`` names the images); an
    image's stored perturbation starts the attack on it and on its pseudo-anomaly, and its new
    adversarial perturbation is stored back. ``config.precision`` (resolved) runs the attack
    and the training forward/backward under autocast; the losses (the attention KL included)
    and the optimizer are fp32; ``scaler`` scales the loss for fp16.
    """
    images, anomalies, labels = batch["images"], batch["anomalies"], batch["labels"]
    zeros = torch.zeros_like(labels)
    t0, c0 = time.perf_counter(), time.process_time()
    if config.adversarial and eps > 0:
        inputs = torch.cat([images, anomalies])
        start = None
        if bank is not None:
            start = random_start(tuple(inputs.shape), eps, "inf", rng).to(inputs)
            start = torch.cat([bank.fill(half, batch["indices"], eps) for half in start.chunk(2)])
        both = training_attack(  # weights frozen: under DDP, the unwrapped module (no sync)
            attacked if attacked is not None else model,
            inputs,
            torch.cat([zeros, labels]),
            eps=eps,
            steps=config.steps,
            step_size_factor=config.step_size_factor,
            topk_weight=config.attack_topk_weight,
            rng=rng,
            start=start,
            precision=config.precision,
        )
        adv_images, adv_anomalies = both.chunk(2)
        if bank is not None:
            bank.record(batch["indices"], adv_images, images)
        inputs = torch.cat([images, adv_images, anomalies, adv_anomalies])
        targets = torch.cat([zeros, zeros, labels, labels])
        groups = 4
    else:
        inputs, targets, groups = torch.cat([images, anomalies]), torch.cat([zeros, labels]), 2
    t1, c1 = time.perf_counter(), time.process_time()

    model.train()
    with crafting(config.precision, inputs.device):
        if reg_weights:
            logits, attentions = model(inputs, return_attention=True)
        else:
            logits, attentions = model(inputs), []
    logits = as_fp32(logits)
    if reg_weights:
        reg = attention_regulariser([as_fp32(a) for a in attentions], reg_weights)
    else:
        reg = inputs.new_zeros(())
    if groups == 4 and config.trades_beta > 0:  # TRADES: adversarial terms pull towards clean
        clean, adv, fapa, fapa_adv = logits.chunk(4)
        terms = [
            patch_bce(clean, zeros),
            config.trades_beta * patch_kl(clean, adv),
            patch_bce(fapa, labels),
            config.trades_beta * patch_kl(fapa, fapa_adv),
        ]
        bce = torch.stack(terms).sum()
    else:
        bce, terms = four_term_bce(logits, targets, groups)
    loss = bce + reg
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(
            [p for g in optimizer.param_groups for p in g["params"]], config.grad_clip
        )
    if scaler is not None:
        scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        scaler.update()
    else:
        optimizer.step()
    names = ("clean", "adv", "fapa", "fapa_adv") if groups == 4 else ("clean", "fapa")
    parts = {f"bce_{n}": float(t.detach()) for n, t in zip(names, terms, strict=True)}
    return {
        "loss": float(loss.detach()),
        "reg": float(reg.detach()),
        **parts,
        "attack_s": t1 - t0,
        "update_s": time.perf_counter() - t1,
        "attack_cpu_s": c1 - c0,
        "update_cpu_s": time.process_time() - c1,
    }


def _resume_state(out: Path) -> dict[str, Any]:
    if not out.exists():
        raise ParameterError(
            f"resume: {out} does not exist, so there is no run to continue; "
            "drop resume to start a new one.",
            "resume", "resume",
        )  # fmt: skip
    payload = read_torch_file(out)
    if not is_pgaudit_checkpoint(payload) or "resume" not in payload:
        raise ParameterError(
            f"resume: {out} holds no saved training state (the run finished or it was not "
            "written by harden); drop resume to start a new run, or pick another out.",
            "resume", "resume", "out",
        )  # fmt: skip
    return payload


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  ε {task.fields[eps]:.4f}{task.fields[val]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


@dataclass
class _Run:
    """One hardening run: what :func:`_setup` builds and every epoch uses."""

    model: nn.Module
    trained: nn.Module  # the model, or its DistributedDataParallel wrapper
    config: TrainConfig
    category: Category
    seed: int
    dev: torch.device
    rank: int
    workers: int
    share: int  # images of each global batch on this process
    loader: Any
    sampler: Any
    steps_per_epoch: int
    reg_weights: tuple[float, ...] | None
    val_ids: list[int]
    vset: ValidationSet | None
    ema: WeightAverage | None
    judged: nn.Module  # what validation scores (a copy holding the EMA weights, or the model)
    selection: Selection | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    bank: PerturbationBank | None
    clean_phase: int  # epochs trained clean before the adversarial ones
    scaler: torch.amp.GradScaler | None = None  # fp16 only (not saved: it recalibrates on resume)
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0


def harden(
    model: nn.Module,
    category: Category,
    train_config: TrainConfig,
    *,
    out: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    num_workers: int = 0,
    progress: bool = False,
    on_epoch: EpochCallback | None = None,
) -> HardenResult:
    """Harden ``model`` on the normal training images of ``category``; returns a :class:`HardenResult`.

    ``out``: checkpoint path (rewritten after every epoch; ``None``: keep in memory, no log).
    ``resume``: continue from the state saved in ``out`` (its training settings win over
    ``train_config``). ``on_epoch`` is called with each epoch's log record after it is saved.
    """
    out_path = Path(out) if out is not None else None
    if resume and out_path is None:
        raise ParameterError("resume needs out: the checkpoint to continue from.", "resume", "out")
    if not category.train:
        raise PgauditError(
            f"{category.root}: no training images; put normal images in train/good/."
        )
    notes: list[str] = []
    payload = _resume_state(out_path) if resume else None  # type: ignore[arg-type]
    config = train_config
    if payload is not None:
        config, seed = _load_saved(model, config, seed, payload, out_path, notes)
    run = _setup(model, category, config, seed, device, num_workers, notes)
    config = run.config  # "auto" precision decided for the device
    if payload is not None:
        _restore(run, payload["resume"])
    main = run.rank == 0
    log = log_path(out_path) if out_path is not None else None
    if log is not None and main:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(json.dumps(rec) + "\n" for rec in run.history))

    foreground = describe_foreground(category)
    started = time.perf_counter()
    with _progress(progress and main) as bar:
        task = bar.add_task(
            "harden",
            total=(config.epochs - run.start_epoch) * run.steps_per_epoch,
            loss=float("nan"),
            eps=0.0,
            val="",
        )
        for epoch in range(run.start_epoch, config.epochs):
            record = _train_epoch(run, epoch, lambda **kw: bar.update(task, **kw))
            if run.vset is not None:
                scores = _validate_epoch(run, epoch, record)
                bar.update(task, val="  val " + " / ".join(f"{v:.3f}" for v in scores.values()))
            run.history.append(record)
            if out_path is not None and main:
                _save_epoch(run, epoch, out_path, foreground)
                with log.open("a") as handle:  # type: ignore[union-attr]
                    handle.write(json.dumps(record) + "\n")
            if on_epoch is not None:
                on_epoch(record)
    distributed.barrier()  # no process returns before rank 0 has saved the checkpoint
    kept = _kept_weights(run.ema, run.selection, True)
    if kept is not None:
        model.load_state_dict(kept)
    model.eval()
    return HardenResult(
        model=model,
        checkpoint=out_path,
        log=log,
        epochs=config.epochs,
        start_epoch=run.start_epoch,
        seconds=time.perf_counter() - started,
        foreground=foreground,
        device=str(run.dev),
        train_config=config,
        history=run.history,
        notes=notes,
        workers=run.workers,
        validation=_validation_summary(run.history, run.selection, len(run.val_ids)),
    )


def _load_saved(
    model: nn.Module,
    config: TrainConfig,
    seed: int,
    payload: dict[str, Any],
    out_path: Path | None,
    notes: list[str],
) -> tuple[TrainConfig, int]:
    """Resume, part 1: the saved recipe and seed (they win), and the saved weights."""
    saved = payload["resume"]
    known = {f.name for f in fields(TrainConfig)}
    saved_config = TrainConfig(**{k: v for k, v in saved["train"].items() if k in known})
    changed = [f for f in known if getattr(saved_config, f) != getattr(config, f)]
    if changed:
        notes.append(f"resumed with the saved settings (ignored: {', '.join(sorted(changed))})")
    try:
        model.load_state_dict(saved.get("model_state", payload["state_dict"]))
    except RuntimeError:
        raise ParameterError(
            f"resume: {out_path} was written for another model; pass the same model or "
            "drop resume.",
            "resume", "model", "resume",
        ) from None  # fmt: skip
    return saved_config, int(saved.get("seed", seed))


def _setup(
    model: nn.Module,
    category: Category,
    config: TrainConfig,
    seed: int,
    device: str,
    num_workers: int,
    notes: list[str],
) -> _Run:
    """Device, data, validation split, EMA, selection, optimizer, schedule, perturbation bank."""
    dev = distributed.worker_device(device) if distributed.active() else resolve_device(device)
    config = replace(config, precision=resolve_precision(config.precision, dev))
    rank, workers = distributed.rank(), distributed.world_size()
    model.to(dev)
    if hasattr(model, "config"):  # record the recipe actually used in the checkpoint
        model.config = replace(model.config, train=config)
    image_size = int(model.image_size)
    grid = _grid_of(model, image_size, dev)
    reg_blocks = getattr(getattr(model, "config", None), "reg_weights", None)
    reg_weights = (
        tuple(reg_blocks)
        if config.regularise and reg_blocks and supports_attention(model)
        else None
    )
    if config.regularise and reg_weights is None:
        notes.append("attention regulariser off: the model does not return attention")

    train_ids, val_ids = split_validation(len(category.train), config.val_fraction, seed)
    dataset = AnomalyDataset([category.train[i] for i in train_ids], image_size, cache=True)
    global_batch = min(config.batch_size, len(dataset))
    if global_batch % workers:
        raise ParameterError(
            f"batch_size {global_batch} cannot be split evenly among {workers} training "
            f"processes; use a multiple of {workers}.",
            "batch_size",
        )
    fapa = FapaConfig(min_side=config.fapa_min_side, max_side=config.fapa_max_side)
    loader, sampler = batch_loader(
        dataset, grid, fapa, batch_size=config.batch_size, seed=seed,
        jitter_strength=config.jitter, augment=config.augment, num_workers=num_workers,
        rank=rank, world_size=workers,
    )  # fmt: skip
    steps_per_epoch = len(sampler)
    vset: ValidationSet | None = None
    if val_ids:
        held = AnomalyDataset([category.train[i] for i in val_ids], image_size)
        vset = make_validation_set([held[i] for i in range(len(held))], grid, fapa, seed=seed)
    ema = WeightAverage(model, config.ema_decay) if config.ema_decay > 0 else None
    judged = copy.deepcopy(model) if ema is not None and vset is not None else model
    total_steps = config.epochs * steps_per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_factor(s, total_steps, config.lr_min_factor)
    )
    trained: nn.Module = model
    if workers > 1:
        trained = DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    return _Run(
        model=model, trained=trained, config=config, category=category, seed=seed, dev=dev,
        rank=rank, workers=workers, share=global_batch // workers, loader=loader,
        sampler=sampler, steps_per_epoch=steps_per_epoch, reg_weights=reg_weights,
        val_ids=val_ids, vset=vset, ema=ema,
        judged=judged,
        selection=Selection(config.select_margin, config.adversarial) if config.select else None,
        optimizer=optimizer, scheduler=scheduler,
        bank=(
            PerturbationBank(len(dataset), (3, image_size, image_size))
            if config.adversarial and config.carry_perturbations
            else None
        ),
        clean_phase=config.clean_epochs if config.adversarial else 0,  # TrainConfig checked it
        scaler=torch.amp.GradScaler(dev.type) if config.precision == "fp16" else None,
    )  # fmt: skip


def _restore(run: _Run, saved: dict[str, Any]) -> None:
    """Resume, part 2: optimizer, schedule, history, carried perturbations, EMA, selection."""
    if run.bank is not None and "perturbations" in saved:
        run.bank.load_state_dict(saved["perturbations"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.history = list(saved.get("history", []))
    run.start_epoch = int(saved["epoch"])
    if run.ema is not None:
        run.ema.load_state_dict(saved["ema"])
    if run.selection is not None:
        run.selection.load_state_dict(saved["selection"])


def _train_epoch(run: _Run, epoch: int, show: Callable[..., None]) -> dict[str, Any]:
    """One epoch of training steps; its log record (``show``: the progress bar's update)."""
    config, workers, rank, seed = run.config, run.workers, run.rank, run.seed
    torch.manual_seed(derive_seed(seed, epoch, 3, *([rank] if workers > 1 else [])))
    run.sampler.set_epoch(epoch)
    t_epoch, c_epoch = time.perf_counter(), time.process_time()
    sums: dict[str, float] = {}
    n_images = 0
    eps = 0.0
    fetch_s = 0.0
    t_fetch = time.perf_counter()
    for index, batch in enumerate(run.loader):
        raise_if_interrupted()  # a Ctrl-C swallowed while the loader forked its workers
        fetch_s += time.perf_counter() - t_fetch
        batch = {k: v.to(run.dev, non_blocking=True) for k, v in batch.items()}
        step = epoch * run.steps_per_epoch + index
        eps = eps_at(config, step, run.steps_per_epoch) if config.adversarial else 0.0
        positions = range(rank * run.share, (rank + 1) * run.share)  # in the global batch
        rng = PerImageRandomState(  # PGD starts: images, then pseudo-anomalies
            image_seeds(seed, epoch, index, positions, 4)
            + image_seeds(seed, epoch, index, positions, 5)
        )
        parts = train_step(
            run.trained, batch, config, run.optimizer, eps=eps, rng=rng,
            reg_weights=run.reg_weights, attacked=run.model, bank=run.bank, scaler=run.scaler,
        )  # fmt: skip
        if workers > 1:  # log the loss of the global batch, not of this share
            losses = {k: v for k, v in parts.items() if not k.endswith("_s")}
            parts.update(distributed.all_reduce_mean(losses, run.dev))
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update(run.model)
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value
        n_images += batch["images"].shape[0] * workers
        show(
            advance=1, loss=parts["loss"], eps=eps, description=f"epoch {epoch + 1}/{config.epochs}"
        )
        t_fetch = time.perf_counter()
    seconds = time.perf_counter() - t_epoch
    return {
        "epoch": epoch + 1,
        **{k: v / run.steps_per_epoch for k, v in sums.items() if not k.endswith("_s")},
        "lr": run.optimizer.param_groups[0]["lr"],
        "eps": eps,
        "seconds": seconds,
        "cpu_s": time.process_time() - c_epoch,
        "images_per_s": n_images / max(seconds, 1e-9),
        "data_s": fetch_s,
        "attack_s": sums.get("attack_s", 0.0),
        "update_s": sums.get("update_s", 0.0),
    }


def _validate_epoch(run: _Run, epoch: int, record: dict[str, Any]) -> dict[str, float]:
    """Score the held-out set (with the EMA weights when on), log it, offer it to selection."""
    assert run.vset is not None
    config = run.config
    if run.ema is not None:
        run.ema.copy_to(run.judged)
    scores = validate(
        run.judged, run.vset, eps=config.eps, steps=config.val_steps,
        seed=derive_seed(run.seed, 6), device=run.dev, robust=config.adversarial,
        precision=config.precision,
    )  # fmt: skip
    record.update({f"val_{k}": v for k, v in scores.items()})
    if run.selection is not None and epoch >= run.clean_phase:
        run.selection.offer(epoch + 1, scores, run.judged.state_dict())
    return scores


def _save_epoch(run: _Run, epoch: int, out_path: Path, foreground: str) -> None:
    """Write the checkpoint: the kept weights, and (before the last epoch) the resume state."""
    config, ema, selection, bank = run.config, run.ema, run.selection, run.bank
    last = epoch + 1 == config.epochs
    kept = _kept_weights(ema, selection, last)
    resume_state = (
        None
        if last
        else {
            "epoch": epoch + 1,
            "seed": run.seed,
            "train": asdict(config),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "history": run.history,
            **({"perturbations": bank.state_dict()} if bank is not None else {}),
            **({"ema": ema.state_dict()} if ema is not None else {}),
            **({"selection": selection.state_dict()} if selection is not None else {}),
            **({"model_state": run.model.state_dict()} if kept is not None else {}),
        }
    )
    summary = _summary(
        config, run.history, run.seed, foreground, run.category, run.val_ids, selection
    )
    save_checkpoint(
        out_path, run.model, training=summary, resume_state=resume_state, state_dict=kept
    )


def _kept_weights(
    ema: WeightAverage | None, selection: Selection | None, last: bool
) -> dict[str, Tensor] | None:
    """The weights the checkpoint holds, when not the model's own: after the last epoch the
    selected epoch's (or the moving average), before it the moving average."""
    if last and selection is not None and selection.chosen() is not None:
        return selection.weights[selection.chosen()]  # type: ignore[index]
    return ema.state if ema is not None else None


def _validation_summary(
    history: list[dict[str, Any]], selection: Selection | None, n_held: int
) -> dict[str, Any] | None:
    """Held-out figures of the weights that were kept (the selected epoch, else the last one)."""
    validated = [r for r in history if "val_clean" in r]
    if not validated:
        return None
    epoch = selection.chosen() if selection is not None else None
    row = next((r for r in validated if r["epoch"] == epoch), validated[-1])
    return {
        "epoch": int(row["epoch"]),
        "selected": epoch is not None,
        "held_out_images": n_held,
        "clean": row["val_clean"],
        "robust": row.get("val_robust"),
    }


def _summary(
    config: TrainConfig,
    history: list[dict[str, Any]],
    seed: int,
    foreground: str,
    category: Category,
    val_ids: list[int],
    selection: Selection | None,
) -> dict[str, Any]:
    """The ``training`` block of the checkpoint: recipe, data, progress, validation."""
    return {
        "recipe": asdict(config),
        "seed": seed,
        "category": category.name,
        "data": str(category.root),
        "train_images": len(category.train) - len(val_ids),
        "foreground": foreground,
        "epochs_done": len(history),
        "final_loss": history[-1]["loss"] if history else None,
        "seconds": sum(r["seconds"] for r in history),
        "validation_images": [category.train[i].image.name for i in val_ids],
        "validation": _validation_summary(history, selection, len(val_ids)),
    }
