"""``pgaudit parity SOURCE EXPORTED DATA``: does the exported file score like its source?

Registered on the app by :mod:`pgaudit.cli`; the measurement is :mod:`pgaudit.parity`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import pgaudit.cli_options as o

if TYPE_CHECKING:
    from pgaudit.parity import ParityReport

DEFAULT_MAX_GAP = 1e-3  # pgaudit.parity.DEFAULT_MAX_GAP (that module imports torch)

Source = Annotated[str, typer.Argument(help=(
    "The model the file was exported from (any MODEL pgaudit attacks white-box)."))]  # fmt: skip
Exported = Annotated[str, typer.Argument(help="The exported file: .onnx, .xml (OpenVINO), .pt2.")]
ParityOut = Annotated[Path | None, typer.Option("--out", "-o", help=(
    "Write the measurements as JSON here (default: parity.json in the working directory)."))]  # fmt: skip
MaxGap = Annotated[float, typer.Option("--max-gap", help=(
    "Exit 1 when the worst clean gap (score or map, relative to the source's range over the "
    "test set) exceeds this."))]  # fmt: skip


def parity(
    source: Source, exported: Exported, data: o.DataArg, out: ParityOut = None,
    max_gap: MaxGap = DEFAULT_MAX_GAP, category: o.CategoryOpt = None,
    max_images: o.MaxImages = None, device: o.AttackDevice = "auto",
    batch_size: o.AttackBatch = 16, seed: o.AttackSeed = 0, trust_pickle: o.TrustPickle = False,
    image_size: o.ImageSize = None, factory: o.Factory = None,
) -> None:  # fmt: skip
    """Export parity: clean agreement of score and map, and robustness under the source's PGD."""
    from pgaudit.api import export_parity_of
    from pgaudit.checks import check_at_least, check_positive

    check_positive("max_gap", max_gap, "1e-3")
    if max_images is not None:
        check_at_least("max_images", max_images)
    report = export_parity_of(
        source, exported, data, category=category, device=device, trust_pickle=trust_pickle,
        factory=factory, image_size=image_size, max_images=max_images, batch_size=batch_size,
        seed=seed,
    )  # fmt: skip
    console = Console()
    console.print(parity_table(report))
    path = out or Path("parity.json")
    path.write_text(json.dumps(report.to_json(source=source, exported=exported,
                                              data=str(data)), indent=2) + "\n")  # fmt: skip
    verdict = "within" if report.worst_gap <= max_gap else "[bold red]exceeds[/]"
    console.print(f"worst clean gap {report.worst_gap:.2e} of the source's range: {verdict} "
                  f"--max-gap {max_gap:g}; wrote {escape(str(path))}", highlight=False)  # fmt: skip
    if report.worst_gap > max_gap:
        raise typer.Exit(1)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def parity_table(report: ParityReport) -> Table:
    """The measurements as a rich table (one row per output, one for robustness)."""
    table = Table(
        title=f"export parity ({report.images} test images; robust: {report.attack} "
        "crafted on the source, scored by both)"
    )
    for column in ("output", "max |Δ| / range", "median |Δ| / range", "AUROC source",
                   "AUROC export", "Δ AUROC", "rank corr."):  # fmt: skip
        table.add_column(column)
    rows = [("image score", report.score), ("pixel map", report.pixel_map)]
    for name, agreement in rows:
        if agreement is None:
            continue
        table.add_row(name, f"{agreement.max_gap:.2e}", f"{agreement.median_gap:.2e}",
                      _fmt(agreement.source_auroc), _fmt(agreement.exported_auroc),
                      _fmt(agreement.auroc_gap), _fmt(agreement.rank_correlation, 4))  # fmt: skip
    table.add_row("robust image", "", "",
                  _fmt(report.robust_source_auroc), _fmt(report.robust_exported_auroc),
                  _fmt(report.robust_gap), "")  # fmt: skip
    return table
