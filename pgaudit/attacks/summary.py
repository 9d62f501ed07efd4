"""The terminal summary of an audit: one rich table row per attack, plus clean and robust."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

#: (results key, column title); the caption explains the short titles.
_METRICS = (("image_auroc", "img"), ("pixel_auroc", "pix"), ("aupro", "AUPRO"))
_OPERATING = (("miss_rate", "miss"), ("false_alarm_rate", "FA"))
CAPTION = (
    "img / pix: image / pixel AUROC; miss / FA: missed defects / false alarms at the clean "
    "95%-TPR threshold; robust: per-image worst case over the headline-ε L∞ attacks"
)


def _fmt(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "—"
    return f"{entry['value']:.3f}"


def results_table(results: dict[str, Any]) -> Table:
    """Clean, every attack and the robust (worst-case) row, with AUROCs and operating point."""
    table = Table(
        title=f"pgaudit attack — suite {results['suite']['name']}",
        caption=CAPTION,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("attack", overflow="fold", min_width=12)
    table.add_column("lib", no_wrap=True)
    for _, title in (*_METRICS, *_OPERATING, (None, "s")):
        table.add_column(title, justify="right", no_wrap=True)

    def row(
        name: str, lib: str, section: dict[str, Any], seconds: str = "", style: str = ""
    ) -> None:
        metrics = section.get("metrics", {})
        op = section.get("operating_point", {})
        table.add_row(
            name,
            lib,
            *(_fmt(metrics.get(key)) for key, _ in _METRICS),
            *(_fmt(op.get(key)) for key, _ in _OPERATING),
            seconds,
            style=style,
        )

    row("clean", "", results["clean"])
    for entry in results["attacks"]:
        row(entry["id"], entry["library"], entry, f"{entry['seconds']:.1f}")
    robust = results["robust"]
    row(f"robust @ {robust['eps_label']}", "", robust, style="bold")
    return table
