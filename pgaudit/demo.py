"""`pgaudit demo`: the whole job on built-in synthetic data, in a few minutes on a CPU.

synthetic data -> a clean-trained and a hardened PatchGuard -> the quick attack suite on both ->
one report comparing them -> the gate's verdict on each.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from pgaudit.gate import GateCriteria, GateOutcome, evaluate_gate
from pgaudit.results import AuditResults, Section

#: The demo's CI bar: robust pixel AUROC under the quick suite (PGD-10 at 8/255).
DEMO_GATE = GateCriteria(metric="pixel_auroc", min_robust_auroc=0.8)
DEMO_PRESET = "tiny"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo run (the defaults fit a few minutes on 2 CPU cores)."""

    preset: str = DEMO_PRESET
    epochs: int | None = None  # None: the demo default of the preset (see DEMO_EPOCHS)
    n_train: int = 60
    n_test: int = 40
    seed: int = 0
    category: str = "widget"


#: Epochs per preset in the demo: a shortened schedule, so both models train in minutes.
DEMO_EPOCHS = {"tiny": 30, "lite": 8}


@dataclass
class DemoOutcome:
    """Where the demo put things and what the gate said about each model."""

    report: Path
    audits: dict[str, Path]
    checkpoints: dict[str, Path]
    verdicts: dict[str, GateOutcome]
    results: dict[str, AuditResults] = field(default_factory=dict)

    def table(self) -> Table:
        """Clean and robust AUROCs of both models, with the gate's verdict on each."""
        table = Table(title="clean vs robust (worst case of PGD-10 at 8/255)")
        for column in ("model", "image AUROC", "robust image", "pixel AUROC", "robust pixel"):
            table.add_column(column)
        table.add_column("gate")

        def value(section: Section, metric: str) -> str:
            entry = section.metric(metric)
            return "n/a" if entry is None or entry.value is None else f"{entry.value:.3f}"

        for name in ("clean", "hardened"):
            res, passed = self.results[name], self.verdicts[name].passed
            table.add_row(
                name,
                *(
                    value(part, m)
                    for m in ("image_auroc", "pixel_auroc")
                    for part in (res.clean, res.robust)
                ),
                "[green]pass[/]" if passed else "[red]fail[/]",
            )
        return table

    def gate_line(self) -> str:
        """The demo's gate criterion, as the `pgaudit gate` command that checks it."""
        return (
            f"gate: robust {DEMO_GATE.metric} >= {DEMO_GATE.min_robust_auroc} "
            f"(as `pgaudit gate {self.audits['hardened']} --metric {DEMO_GATE.metric} "
            f"--min-robust-auroc {DEMO_GATE.min_robust_auroc}`)"
        )


def run_demo(
    out: Path, settings: DemoSettings = DemoSettings(), console: Console | None = None
) -> DemoOutcome:
    """Run the demo into ``out``; returns the report path and the gate verdicts."""
    from pgaudit.attacks.runner import run_audit
    from pgaudit.data import open_category
    from pgaudit.data.synth import make_synthetic_dataset
    from pgaudit.models.patchguard import PatchGuard
    from pgaudit.models.presets import get_preset
    from pgaudit.models.resolve import load_detector
    from pgaudit.report.render import render_report
    from pgaudit.training.loop import harden

    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    config = get_preset(settings.preset)
    epochs = settings.epochs or DEMO_EPOCHS.get(settings.preset, config.train.epochs)

    console.print(f"[bold]1/4[/] synthetic data -> {out / 'data'}", highlight=False)
    make_synthetic_dataset(
        out / "data",
        size=config.image_size,
        seed=settings.seed,
        n_train=settings.n_train,
        n_test=settings.n_test,
        categories=(settings.category,),
    )
    category = open_category(out / "data" / settings.category)

    checkpoints: dict[str, Path] = {}
    for step, (name, adversarial) in enumerate((("clean", False), ("hardened", True)), start=2):
        what = "FAPA + PGD adversarial training" if adversarial else "FAPA only (no attacks)"
        console.print(
            f"[bold]{step}/4[/] training the {name} model ({settings.preset}, {epochs} epochs, {what})",
            highlight=False,
        )
        torch.manual_seed(settings.seed)
        recipe = replace(config.train, epochs=epochs, adversarial=adversarial)
        checkpoints[name] = out / f"{name}.pt"
        harden(
            PatchGuard(config),
            category,
            recipe,
            out=checkpoints[name],
            seed=settings.seed,
            device="cpu",
            num_workers=0,
            progress=True,
        )

    console.print(
        "[bold]4/4[/] attacking both (quick suite) and writing the report", highlight=False
    )
    audits: dict[str, Path] = {}
    results: dict[str, AuditResults] = {}
    for name, path in checkpoints.items():
        loaded = load_detector(str(path))
        audits[name] = out / f"audit-{name}"
        result = run_audit(
            loaded.detector,
            category,
            "quick",
            out_dir=audits[name],
            seed=settings.seed,
            model_info={**loaded.model_info(), "name": f"PatchGuard {settings.preset}, {name}"},
            progress=True,
            command=f"pgaudit demo --out {out.name}",
            console=console,
        )
        assert result is not None  # a single process: rank 0
        results[name] = result
    report = render_report(
        [audits["hardened"], audits["clean"]], out / "report.html", gate_criteria=DEMO_GATE
    )
    verdicts = {name: evaluate_gate(res, DEMO_GATE) for name, res in results.items()}
    return DemoOutcome(report, audits, checkpoints, verdicts, results)
