"""Whole dataset roots: one model per category, one audit per category, one summary.

* :func:`train_categories` hardens a model for every category of a root into
  ``OUT/<category>.pt``. It can be stopped and run again: a category whose checkpoint is finished
  with the same recipe and seed is skipped, an interrupted one is resumed, and one finished with
  another recipe is refused (the file is kept; remove it or choose another folder).
* :func:`audit_categories` audits ``MODELS/<category>.pt`` on each category into
  ``OUT/<category>/`` and writes ``OUT/summary.json`` (:mod:`pgaudit.dataset_summary`).

In both, a category that fails is reported with its error and the others still run; the caller
gets one :class:`CategoryRun` per category.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pgaudit.checks import check_out_folder
from pgaudit.data.layouts import select_categories
from pgaudit.dataset_summary import (
    CategoryEntry,
    entry_from_results,
    summarize,
    write_summary,
)
from pgaudit.errors import ParameterError, PgauditError
from pgaudit.models.presets import TrainConfig

Say = Callable[[str], None]


@dataclass(frozen=True)
class CategoryRun:
    """What happened to one category: ``status`` trained / resumed / skipped / audited / failed."""

    name: str
    status: str
    path: Path | None = None
    message: str = ""

    def describe(self) -> str:
        where = f" -> {self.path}" if self.path is not None else ""
        return f"{self.name}: {self.status}{where}" + (f" ({self.message})" if self.message else "")


def _category_folder(out: str | Path, option: str = "out") -> Path:
    """A writable folder for one entry per category (:func:`pgaudit.checks.check_out_folder`),
    and not a name that reads as one file."""
    out = check_out_folder(out, option)
    if out.suffix in (".pt", ".pth", ".json"):
        raise ParameterError(
            f"{option} {out}: with all categories this is a folder (one entry per category); "
            "pass a folder name.",
            option,
        )
    return out


def _no_category(category: str | None) -> None:
    if category is not None:
        raise ParameterError(
            f"category {category!r} with all_categories: drop one of them (all_categories runs "
            "every one).",
            "category", "all_categories", "all_categories",
        )  # fmt: skip


def _checkpoint_state(path: Path, recipe: TrainConfig, seed: int) -> str:
    """'same' (finished with this recipe and seed), 'unfinished', or 'other'."""
    from pgaudit.training.setup import existing_run

    state, payload = existing_run(path)
    if state != "finished" or payload is None:
        return "unfinished" if state == "unfinished" else "other"
    training = payload.get("training") or {}
    stored, planned = dict(training.get("recipe") or {}), asdict(recipe)
    if recipe.precision == "auto":  # decided when training started
        stored.pop("precision", None), planned.pop("precision", None)
    return "same" if stored == planned and training.get("seed") == seed else "other"


def train_categories(
    model: str,
    root: str | Path,
    out: str | Path,
    *,
    changes: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    say: Say | None = None,
    category: str | None = None,
    resume: bool = True,
    track: Any = None,
    **options: Any,
) -> list[CategoryRun]:
    """Harden ``model`` (a MODEL string: ``patchguard`` for a fresh one) on every category of
    ``root`` into ``out/<category>.pt``. ``options``: those of :func:`pgaudit.api.plan_hardening`
    (``preset``, ``workers``, ``backbone_weights``, ``pretrained``, ``nproc``). Interrupted
    categories are always resumed (``resume`` is implied). ``track``: a
    :class:`pgaudit.tracking.TrackingConfig`; when enabled each trained category is logged."""
    from pgaudit.api import plan_hardening

    _no_category(category)
    folder = _category_folder(out)
    runs = []
    for ref in select_categories(Path(root)):
        path = folder / f"{ref.name}.pt"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            plain = {k: v for k, v in options.items() if k != "nproc"}  # only its recipe here
            recipe = plan_hardening(model, ref.path, changes=changes, seed=seed, **plain).recipe
            state = _checkpoint_state(path, recipe, seed) if path.is_file() else "new"
            if state == "same":
                runs.append(CategoryRun(ref.name, "skipped", path, "finished with this recipe"))
                if say:
                    say(runs[-1].describe())
                continue
            if state == "other":
                raise PgauditError(
                    f"{path} holds a model trained with another recipe or seed; remove it or "
                    "choose another out folder."
                )
            plan = plan_hardening(model, ref.path, changes=changes, out=path, seed=seed,
                                  resume=state == "unfinished", **options)  # fmt: skip
            if say:
                say(f"{ref.name}: " + "; ".join(plan.describe()[1:3]))
            result = plan.run(device=device, progress=progress)
            status = "resumed" if state == "unfinished" else "trained"
            runs.append(CategoryRun(ref.name, status, path))
            if track is not None and track.enabled:
                from pgaudit.tracking import log_training

                log_training(result, track)
        except PgauditError as exc:
            runs.append(CategoryRun(ref.name, "failed", None, str(exc)))
        if say:
            say(runs[-1].describe())
    return runs


def audit_categories(
    models: str | Path,
    root: str | Path,
    suite: str = "quick",
    *,
    out_dir: str | Path,
    say: Say | None = None,
    run_options: Mapping[str, Any] | None = None,
    category: str | None = None,
    **options: Any,
) -> tuple[list[CategoryRun], Path]:
    """Audit ``models/<category>.pt`` on each category of ``root`` into ``out_dir/<category>/``;
    returns the runs and the summary.json written. ``options``: those of
    :func:`pgaudit.api.plan_audit`; ``run_options``: of its ``run()`` (``progress``, …)."""
    from pgaudit.api import plan_audit

    _no_category(category)
    models, folder = Path(models), _category_folder(out_dir, "out_dir")
    if not models.is_dir():
        raise ParameterError(
            f"model {models}: with all categories this is the folder of <category>.pt files "
            "(what `pgaudit train ROOT --all-categories` writes).",
            "model",
        )
    runs, entries, eps_label = [], [], None
    for ref in select_categories(Path(root)):
        checkpoint = models / f"{ref.name}.pt"
        try:
            if not checkpoint.is_file():
                raise PgauditError(f"no model for it: {checkpoint} does not exist.")
            plan = plan_audit(str(checkpoint), ref.path, suite, out_dir=folder / ref.name,
                              **options)  # fmt: skip
            results = plan.run(**(run_options or {}))
            assert results is not None  # rank 0 (several workers: nproc)
            entries.append(entry_from_results(ref.name, ref.name, results))
            eps_label = eps_label or results.headline_eps_label
            runs.append(CategoryRun(ref.name, "audited", folder / ref.name))
        except PgauditError as exc:
            entries.append(CategoryEntry(ref.name, "failed", None, str(exc)))
            runs.append(CategoryRun(ref.name, "failed", None, str(exc)))
        if say:
            say(runs[-1].describe())
    summary = summarize(str(root), suite, entries, eps_label)
    return runs, write_summary(summary, folder)


def raise_if_failed(runs: list[CategoryRun]) -> None:
    """One sentence naming the failed categories (each was reported as it failed)."""
    failed = [r.name for r in runs if r.status == "failed"]
    if failed:
        raise PgauditError(
            f"{len(failed)} of {len(runs)} categories failed: {', '.join(failed)} (the others are "
            "kept; fix the cause and run the command again to continue)."
        )
