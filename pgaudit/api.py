"""The Python API: load a detector, audit it, harden it, report, gate. The CLI is a layer over it.

>>> import pgaudit, torch
>>> from pgaudit.data.synth import make_synthetic_dataset
>>> _ = make_synthetic_dataset(tmp / "data", size=32, n_train=4, n_test=6,
...                               categories=("widget",))
>>> class Redness(torch.nn.Module):  # any module: images [B,3,S,S] -> logits [B,h,w]
...     image_size = 32
...     def forward(self, x):
...         return torch.nn.functional.avg_pool2d(x[:, :1] - x[:, 1:2], 4)[:, 0] * 50
>>> results = pgaudit.audit(Redness(), tmp / "data" / "widget", out_dir=tmp / "audit")
>>> clean, robust = (part.metric("image_auroc").value for part in (results.clean, results.robust))
>>> robust < clean  # PGD at 8/255 lowers the image AUROC it targets
True
>>> pgaudit.check_gate(tmp / "audit", min_robust_auroc=0.0).passed
True
>>> pgaudit.check_gate(results, min_robust_auroc=1.0).passed  # no detector is that robust
False
>>> pgaudit.render_report(tmp / "audit", tmp / "report.html").name
'report.html'

``pgaudit.load_detector("model.pt")`` (or ``"mypkg.detectors:build"``) resolves a MODEL as the
CLI does; ``pgaudit.harden(loaded, "data/widget", out="hardened.pt")`` trains it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pgaudit.attacks.runner import check_audit_options
from pgaudit.attacks.suites import Suite, build_suite, check_suite_options
from pgaudit.data.layouts import open_category
from pgaudit.data.records import Category
from pgaudit.dataset_summary import is_summary, read_summary
from pgaudit.devices import resolve_device
from pgaudit.errors import ParameterError, PgauditError
from pgaudit.gate import GateCriteria, GateOutcome, evaluate_gate, evaluate_summary_gate
from pgaudit.models.presets import TrainConfig
from pgaudit.models.resolve import LoadedDetector, implied_factory
from pgaudit.models.resolve import load_detector as load_detector
from pgaudit.precision import resolve_precision
from pgaudit.regression import Audit
from pgaudit.report.render import render_report as render_report
from pgaudit.results import DEFAULT_BOOTSTRAP, AuditResults, read_results, results_path
from pgaudit.training.loop import HardenResult
from pgaudit.training.setup import HardenPlan
from pgaudit.training.setup import plan_hardening as _plan

__all__ = [
    "audit", "check_gate", "export_parity_of", "harden", "load_detector", "plan_audit",
    "plan_hardening", "recipe_changes", "render_report",
]  # fmt: skip


def _category(data: Category | str | Path, category: str | None = None) -> Category:
    return data if isinstance(data, Category) else open_category(Path(data), category)


def audit(
    model: LoadedDetector | Any,
    data: Category | str | Path | Any,
    suite: str | Suite = "quick",
    *,
    out_dir: str | Path,
    category: str | None = None,
    suite_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
    max_images: int | None = None,
    batch_size: int = 16,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    surrogate: LoadedDetector | Any | None = None,
    progress: bool = False,
    **run_options: Any,
) -> AuditResults | None:
    """Attack ``model`` with ``suite`` on the test images of ``data``; returns the results.json
    written (as :class:`~pgaudit.results.AuditResults`; None on workers other than rank 0).

    ``model``: what :func:`load_detector` returns (its card fills the ``model`` section) or any
    detector. ``data``: a category folder (``category``: one of a root), a
    :class:`~pgaudit.data.records.Category`, or a dataset of ``{"image", "label", "mask"}`` items.
    ``suite``: a name, changed by ``suite_options`` (``eps``, ``steps``, ``objective``,
    ``step_size``, ``restarts``; see :func:`pgaudit.attacks.suites.build_suite`), or a built
    suite. The files are written to ``out_dir``. ``surrogate``: a smooth stand-in detector for
    the transfer check of the standard/full suites. ``run_options``: ``save_maps``,
    ``precision``, ``data_info``, ``command``, ``console`` of
    :func:`pgaudit.attacks.runner.run_audit`.
    """
    from pgaudit.attacks.runner import run_audit

    check_audit_options(
        max_images=max_images, batch_size=batch_size, bootstrap=bootstrap, seed=seed,
        out_dir=out_dir,
    )  # fmt: skip
    loaded = model if isinstance(model, LoadedDetector) else None
    detector = loaded.detector if loaded else model
    if isinstance(suite, str):
        suite = build_suite(suite, image_size=int(detector.image_size), **(suite_options or {}))
    target = data if not isinstance(data, str | Path) else _category(data, category)
    return run_audit(
        detector,
        target,
        suite,
        out_dir=out_dir,
        seed=seed,
        device=device,
        max_images=max_images,
        batch_size=batch_size,
        bootstrap=bootstrap,
        surrogate=surrogate.detector if isinstance(surrogate, LoadedDetector) else surrogate,
        progress=progress,
        model_info=loaded.model_info() if loaded else None,
        **run_options,
    )


@dataclass
class AuditPlan:
    """An audit with its detector loaded and its suite built: ``describe()`` it, then ``run()``."""

    model: str
    loaded: LoadedDetector
    category: Category
    suite: Suite
    out_dir: Path
    surrogate: LoadedDetector | None = None
    options: dict[str, Any] = field(default_factory=dict)  # further keywords of :func:`audit`
    nproc: int = 1  # worker processes run() starts (1: this one)
    job: dict[str, Any] = field(default_factory=dict)  # plan_audit's arguments, for the workers

    def describe(self) -> list[str]:
        """What will run, on what (one line)."""
        from pgaudit.runtime.distributed import world_size

        workers = max(self.nproc, world_size())
        on = f"{self.job.get('device', self.options.get('device', 'cpu'))}" + (
            f" x {workers} workers" if workers > 1 else ""
        )
        return [
            f"auditing {self.model} on {self.category.name} ({len(self.category.test)} test "
            f"images) with suite {self.suite.name}: {len(self.suite.attacks)} attacks on {on}"
        ]

    def run(self, **run_options: Any) -> AuditResults | None:
        """Run it (``run_options``: ``progress``, ``console``, ``command``, … of :func:`audit`).
        With ``nproc`` > 1 the workers run it (``progress`` and ``command`` reach them) and this
        returns the results they wrote."""
        if self.nproc > 1:
            from pgaudit.workers import run_in_workers

            run = {"device": self.job["device"], "progress": run_options.get("progress", False),
                   "command": run_options.get("command")}  # fmt: skip
            plan = {k: v for k, v in self.job.items() if k != "device"}
            run_in_workers("audit", {"plan": plan, "run": run}, self.nproc)
            return read_results(self.out_dir)
        return audit(
            self.loaded, self.category, self.suite, out_dir=self.out_dir,
            surrogate=self.surrogate, **self.options, **run_options,
        )  # fmt: skip


def plan_audit(
    model: str,
    data: str | Path,
    suite: str = "quick",
    *,
    out_dir: str | Path,
    category: str | None = None,
    suite_options: Mapping[str, Any] | None = None,
    device: str = "cpu",
    trust_pickle: bool = False,
    image_size: int | None = None,
    backbone: str | None = None,
    surrogate: str | None = None,
    nproc: int = 1,
    factory: str | None = None,
    **options: Any,
) -> AuditPlan:
    """Load ``model`` (and ``surrogate``) as :func:`load_detector` does, open ``data`` and build
    ``suite``: the audit ``pgaudit attack`` runs. ``options``: ``seed``, ``max_images``,
    ``batch_size``, ``bootstrap``, ``save_maps``, ``precision`` of :func:`audit`. ``nproc`` > 1:
    ``run()`` starts that many worker processes (torch.distributed; each audits a share of the
    batches, the files are the single process's), after the checks every worker would make."""
    from pgaudit.runtime import distributed

    check_audit_options(
        max_images=options.get("max_images"),
        batch_size=options.get("batch_size", 16),
        bootstrap=options.get("bootstrap", DEFAULT_BOOTSTRAP),
        seed=options.get("seed", 0),
        out_dir=out_dir,
    )
    resolve_precision(options.get("precision", "fp32"), resolve_device(device))
    check_suite_options(suite, **(suite_options or {}))
    distributed.check_launch(nproc, str(device))
    job = dict(
        model=str(model), data=str(data), suite=suite, out_dir=str(out_dir), category=category,
        suite_options=dict(suite_options or {}), device=str(device), trust_pickle=trust_pickle,
        image_size=image_size, backbone=backbone, surrogate=surrogate, factory=factory, **options,
    )  # fmt: skip
    if nproc > 1:
        check_audit_workers(
            nproc, suite, data, category=category, suite_options=suite_options,
            max_images=options.get("max_images"), batch_size=options.get("batch_size", 16),
        )  # fmt: skip
        device = "cpu"  # the model is only checked here; each worker loads it on its device
    load = dict(device=str(device), trust_pickle=trust_pickle, image_size=image_size)
    loaded = load_detector(model, backbone=backbone, factory=factory, **load)
    stand_in = load_detector(surrogate, **load) if surrogate else None
    cat = _category(data, category)
    built = build_suite(suite, image_size=int(loaded.detector.image_size), **(suite_options or {}))
    options = {**options, "device": device, "data_info": {"path": str(data)}}
    return AuditPlan(str(model), loaded, cat, built, Path(out_dir), stand_in, options, nproc, job)


def export_parity_of(
    source: str | Path,
    exported: str | Path,
    data: Category | str | Path,
    *,
    category: str | None = None,
    device: str = "cpu",
    trust_pickle: bool = False,
    factory: str | None = None,
    image_size: int | None = None,
    **options: Any,
) -> Any:
    """Load ``source`` (the model a file was exported from) and ``exported`` as
    :func:`load_detector` does and measure their parity on ``data``'s test images
    (:func:`pgaudit.parity.export_parity`; ``options``: ``eps``, ``steps``, ``batch_size``,
    ``max_images``, ``seed``). An anomalib source is compared with its post-processor on, as
    anomalib's exporter writes it. Returns a :class:`~pgaudit.parity.ParityReport`."""
    from pgaudit.parity import export_parity

    device = str(resolve_device(device))
    load = dict(device=device, trust_pickle=trust_pickle, image_size=image_size)
    first = load_detector(source, factory=factory, **load)
    second = load_detector(exported, **load)
    reference = first.detector
    if hasattr(reference, "as_shipped"):  # anomalib exports include its post-processor
        reference = reference.as_shipped()
    return export_parity(reference, second.detector, _category(data, category),
                         device=device, **options)  # fmt: skip


def check_audit_workers(
    nproc: int,
    suite: str,
    data: str | Path,
    *,
    category: str | None = None,
    suite_options: Mapping[str, Any] | None = None,
    max_images: int | None = None,
    batch_size: int = 16,
) -> None:
    """Refuse, before the workers start, what each of ``nproc`` audit workers would refuse."""
    build_suite(suite, image_size=224, **(suite_options or {}))
    n_test = len(_category(data, category).test)
    n_batches = -(-min(n_test, max_images or n_test) // batch_size)
    if nproc > n_batches:
        raise ParameterError(
            f"nproc {nproc}: the {n_test} test images make {n_batches} batch(es) of "
            f"batch_size {batch_size} but every worker needs one; use a smaller batch_size or "
            "fewer workers.",
            "nproc", "batch_size", "batch_size",
        )  # fmt: skip


def recipe_changes(
    *,
    eps: str | float | None = None,
    clean: bool = False,
    no_reg: bool = False,
    carry: bool | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The ``changes`` of :func:`plan_hardening` that the options of ``pgaudit train`` / ``harden``
    ask for: ``eps`` (``"4/255"`` or a number), ``clean`` (no adversarial terms), ``no_reg`` (no
    attention regulariser), ``carry`` (carried perturbations), TrainConfig ``fields``; None: the
    recipe's own value."""
    from pgaudit.attacks.eps import parse_eps

    changes = {k: v for k, v in fields.items() if v is not None}
    if eps is not None:
        changes["eps"] = parse_eps(eps)
    if carry is not None:
        changes["carry_perturbations"] = carry
    changes["adversarial"] = not clean  # a clean-trained checkpoint is hardened too
    if no_reg:
        changes["regularise"] = False
    return changes


#: The options of ``pgaudit train`` / ``harden`` that :func:`recipe_changes` turns into changes.
RECIPE_OPTIONS = (
    "epochs", "batch_size", "lr", "eps", "steps", "clean", "no_reg", "carry", "ema_decay",
    "val_fraction", "select", "trades_beta", "clean_epochs", "augment", "precision",
)  # fmt: skip


def split_recipe_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the recipe changes of the :data:`RECIPE_OPTIONS` among ``options``, the other options)."""
    recipe = {k: v for k, v in options.items() if k in RECIPE_OPTIONS}
    rest = {k: v for k, v in options.items() if k not in RECIPE_OPTIONS}
    return recipe_changes(**recipe), rest


def plan_hardening(
    model: LoadedDetector | str,
    data: Category | str | Path,
    recipe: TrainConfig | None = None,
    *,
    category: str | None = None,
    changes: Mapping[str, Any] | None = None,
    nproc: int = 1,
    **options: Any,
) -> HardenPlan:
    """The hardening run :func:`harden` would start, to inspect (``describe()``) or ``run()``.

    ``changes``: TrainConfig fields to change in ``recipe`` (default: the model's preset).
    ``options``: ``preset``, ``seed``, ``backbone_weights``, ``pretrained``, ``out``, ``resume``,
    ``workers`` (see :func:`pgaudit.training.setup.plan_hardening`). ``nproc`` > 1: ``run()``
    trains in that many worker processes (torch.distributed, each a share of every batch; the
    updates are the single process's); ``model`` is then a MODEL string and ``out`` is needed.
    """
    from pgaudit.runtime import distributed

    plan = _plan(
        model, data, category=category, recipe=recipe, changes=dict(changes or {}), **options
    )
    distributed.check_launch(nproc, "cpu", batch_size=plan.recipe.batch_size)
    if nproc == 1:
        return plan
    if not isinstance(model, str):
        raise ParameterError(
            "nproc > 1 needs model as a MODEL string (a checkpoint, package.module:function or "
            "patchguard) that each worker can load.", "model",
        )  # fmt: skip
    if plan.out is None:
        raise ParameterError("nproc > 1 needs out: the workers' weights reach you there.", "out")
    job = {
        "model": model, "data": str(plan.category.root), "recipe": asdict(plan.recipe),
        **{k: str(v) if isinstance(v, Path) else v for k, v in options.items()},
    }  # fmt: skip
    return HardenInWorkers(**{f.name: getattr(plan, f.name) for f in fields(plan)},
                           nproc=nproc, job=job)  # fmt: skip


@dataclass
class HardenInWorkers(HardenPlan):
    """A :class:`HardenPlan` that ``run()`` trains in ``nproc`` worker processes."""

    nproc: int = 2
    job: dict[str, Any] = field(default_factory=dict)  # plan_hardening's arguments, for them

    def run(self, *, device: str = "cpu", progress: bool = False, **loop_options: Any):
        """Train in the workers; returns the :class:`HardenResult` of rank 0, the model read
        back from ``out``."""
        from pgaudit.runtime import distributed
        from pgaudit.workers import run_in_workers

        if loop_options:
            raise ParameterError(
                f"{sorted(loop_options)[0]} cannot reach worker processes; use nproc 1.", "nproc"
            )
        distributed.check_launch(self.nproc, device, batch_size=self.recipe.batch_size)
        run = {"device": device, "progress": progress}
        record = run_in_workers("harden", {"plan": self.job, "run": run}, self.nproc)
        assert record is not None  # rank 0 writes it after a successful run
        record["train_config"] = TrainConfig(**record["train_config"])
        for key in ("checkpoint", "log"):
            record[key] = Path(record[key]) if record[key] is not None else None
        factory = implied_factory(self.job["model"], self.job.get("factory"))
        return HardenResult(model=load_detector(str(self.out), factory=factory).detector, **record)


def harden(
    model: LoadedDetector | str,
    data: Category | str | Path,
    recipe: TrainConfig | None = None,
    *,
    out: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = False,
    nproc: int = 1,
) -> HardenResult:
    """Harden ``model`` with the FAPA adversarial-training recipe on the normal images of ``data``.

    ``model``: what :func:`load_detector` returns, or a MODEL string as the CLI takes it
    (``"patchguard"`` for a fresh one, a checkpoint, ``"mypkg.detectors:build"``). ``recipe``: a
    :class:`~pgaudit.models.presets.TrainConfig` (default: the model's preset, as
    ``pgaudit harden`` uses). ``out``: a checkpoint written after every epoch (``None``: in
    memory). ``nproc`` > 1: train in that many worker processes (see :func:`plan_hardening`).
    Returns a :class:`pgaudit.training.loop.HardenResult`.
    """
    plan = plan_hardening(model, data, recipe, out=out, seed=seed, resume=resume, nproc=nproc)
    return plan.run(device=device, progress=progress)


def _audit(results: AuditResults | Mapping[str, Any] | str | Path, what: str) -> Audit:
    """An audit to gate: results as given, or read from a folder / results.json."""
    if isinstance(results, AuditResults):
        return Audit(results, what)
    if isinstance(results, Mapping):
        return Audit(AuditResults.from_json(results, what), what)
    path = results_path(results)
    return Audit(read_results(path), str(path), path.parent)


def check_gate(
    results: AuditResults | Mapping[str, Any] | str | Path,
    criteria: GateCriteria | Mapping[str, Any] | None = None,
    *,
    baseline: AuditResults | Mapping[str, Any] | str | Path | None = None,
    **thresholds: Any,
) -> GateOutcome:
    """Check an audit against a robust-AUROC bar: ``check_gate("runs/audit", min_robust_auroc=0.5)``.

    ``results``: what :func:`audit` returned (or its ``to_json()`` dict), or an audit folder /
    results.json.
    ``criteria``: a :class:`~pgaudit.gate.GateCriteria` or a ``[gate]`` table; or give its fields
    as keywords (``metric``, ``min_robust_auroc``, ``min_clean_auroc``, ``use_lower_bound``,
    ``max_drop``, ``significant_only``). ``baseline``: an earlier audit of the same data and suite
    (like ``results``) that ``max_drop`` compares with:
    ``check_gate("audit", baseline="main-audit", max_drop=0.02)``.
    """
    if criteria is not None and thresholds:
        raise PgauditError("check_gate: pass criteria or keyword thresholds, not both.")
    if criteria is None:
        fields = set(GateCriteria.__dataclass_fields__)
        unknown = sorted(set(thresholds) - fields)
        if unknown:
            raise PgauditError(
                f"check_gate: unknown criterion {unknown[0]!r}; use one of {sorted(fields)}."
            )
        criteria = GateCriteria(**{k: v for k, v in thresholds.items() if v is not None})
    if isinstance(results, str | Path) and is_summary(results):
        if not isinstance(criteria, GateCriteria):
            criteria = GateCriteria.from_mapping(criteria)
        theirs = read_summary(baseline) if isinstance(baseline, str | Path) else None
        if baseline is not None and theirs is None:
            raise ParameterError("baseline of a summary: pass its folder.", "baseline")
        return evaluate_summary_gate(read_summary(results), criteria, source=str(results),
                                     baseline=theirs)  # fmt: skip
    audit = _audit(results, "results")
    against = _audit(baseline, "baseline") if baseline is not None else None
    return evaluate_gate(
        audit.results, criteria, source=audit.source, baseline=against, folder=audit.folder
    )
