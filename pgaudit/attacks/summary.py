"""The terminal summary of an audit: one rich table row per attack, plus clean and robust."""

from __future__ import annotations

from rich import box
from rich.table import Table

from pgaudit.results import AuditResults, MetricValue, Section

#: (results key, column title); the caption explains the short titles.
_METRICS = (("image_auroc", "img"), ("pixel_auroc", "pix"), ("aupro", "AUPRO"))
_OPERATING = (("miss_rate", "miss"), ("false_alarm_rate", "FA"))
CAPTION = (
    "img / pix: image / pixel AUROC; miss / FA: missed defects / false alarms at the clean "
    "95%-TPR threshold; robust: per-image worst case over the headline-ε L∞ attacks"
)


def _fmt(entry: MetricValue | None) -> str:
    return "—" if entry is None or entry.value is None else f"{entry.value:.3f}"


def results_table(results: AuditResults) -> Table:
    """Clean, every attack and the robust (worst-case) row, with AUROCs and operating point."""
    table = Table(
        title=f"pgaudit attack — suite {results.suite.name}",
        caption=CAPTION,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("attack", overflow="fold", min_width=12)
    table.add_column("lib", no_wrap=True)
    for _, title in (*_METRICS, *_OPERATING, (None, "s")):
        table.add_column(title, justify="right", no_wrap=True)

    def row(name: str, lib: str, section: Section, seconds: str = "", style: str = "") -> None:
        table.add_row(
            name,
            lib,
            *(_fmt(section.metric(key)) for key, _ in _METRICS),
            *(_fmt(section.operating_point.get(key)) for key, _ in _OPERATING),
            seconds,
            style=style,
        )

    row("clean", "", results.clean)
    for entry in results.attacks:
        row(entry.id, entry.library, entry, f"{entry.seconds or 0.0:.1f}")
    row(f"robust @ {results.robust.eps_label}", "", results.robust, style="bold")
    return table


def audit_notes(results: AuditResults) -> list[str]:
    """Lines (rich markup, user text escaped) for skipped attacks and sanity checks that did not pass."""
    from rich.markup import escape

    notes = [
        f"skipped {escape(str(item['id']))}: {escape(str(item['reason']))}"
        for item in results.suite.skipped or ()
    ]
    notes += [
        f"[bold red]{check.status}[/] {check.name}: {escape(check.evidence)}"
        for check in results.sanity
        if check.status not in ("pass", "skip")
    ]
    return notes
