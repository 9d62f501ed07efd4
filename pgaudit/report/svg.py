"""Hand-written inline SVG line charts for the report (no plotting library, no external refs).

Every text that reaches the SVG is XML-escaped here, because the chart is inserted into the page
as markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

#: Okabe–Ito colours (colour-blind safe), yellow dropped for contrast on white.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
DASHES = ("", "6 4", "2 3", "8 3 2 3")


@dataclass
class Point:
    """One point of a curve; ``y`` is None where the metric is undefined (the line breaks)."""

    x: float
    y: float | None
    ci: tuple[float, float] | None = None
    tooltip: str = ""


@dataclass
class Series:
    """One labelled curve."""

    label: str
    points: list[Point] = field(default_factory=list)
    color: str = PALETTE[0]
    dash: str = ""


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_ticks: Sequence[tuple[float, str]],
    y_range: tuple[float, float] = (0.0, 1.0),
    reference: tuple[float, str] | None = (0.5, "chance"),
    width: int = 380,
    plot_height: int = 190,
) -> str:
    """Render a line chart as an ``<svg>`` string (scales with its container via viewBox).

    ``x_ticks`` are (value, label) pairs; the x range spans them. ``reference`` draws a dashed
    horizontal guide (e.g. AUROC 0.5 = chance).
    """
    left, right, top = 46, 26, 30
    x_axis_gap = 38
    legend_row = 17
    legend_top = top + plot_height + x_axis_gap + 6
    height = legend_top + legend_row * max(len(series), 1) + 4
    pw = width - left - right

    xs = [t[0] for t in x_ticks] or [0.0, 1.0]
    for s in series:
        xs.extend(p.x for p in s.points)
    x0, x1 = min(xs), max(xs)
    if x1 <= x0:
        x1 = x0 + 1.0
    y0, y1 = y_range

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        y = min(max(y, y0), y1)
        return top + (1.0 - (y - y0) / (y1 - y0)) * plot_height

    out: list[str] = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="xMidYMid meet">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{left}" y="18">{escape(title)}</text>',
        f'<rect class="plot-bg" x="{left}" y="{top}" width="{pw}" height="{plot_height}"/>',
    ]
    # y grid + ticks
    n_y = 4
    for i in range(n_y + 1):
        v = y0 + (y1 - y0) * i / n_y
        y = sy(v)
        out.append(
            f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{_fmt(y)}" y2="{_fmt(y)}"/>'
        )
        out.append(
            f'<text class="tick" x="{left - 6}" y="{_fmt(y + 3.5)}" text-anchor="end">{v:.2f}</text>'
        )
    # x ticks (labels thinned when they would overlap)
    last_label_x = -1e9
    for v, label in sorted(x_ticks):
        x = sx(v)
        out.append(
            f'<line class="xtick" x1="{_fmt(x)}" x2="{_fmt(x)}" y1="{top + plot_height}" '
            f'y2="{top + plot_height + 4}"/>'
        )
        if x - last_label_x >= 7 * max(len(label), 3):
            out.append(
                f'<text class="tick" x="{_fmt(x)}" y="{top + plot_height + 16}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
            last_label_x = x
    if reference is not None and y0 < reference[0] < y1:
        y = sy(reference[0])
        out.append(
            f'<line class="ref" x1="{left}" x2="{left + pw}" y1="{_fmt(y)}" y2="{_fmt(y)}"/>'
            f'<text class="ref-label" x="{left + pw - 4}" y="{_fmt(y - 4)}" '
            f'text-anchor="end">{escape(reference[1])}</text>'
        )
    out.append(
        f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_height}"/>'
        f'<line class="axis" x1="{left}" x2="{left + pw}" y1="{top + plot_height}" '
        f'y2="{top + plot_height}"/>'
    )
    out.append(
        f'<text class="axis-label" x="{_fmt(left + pw / 2)}" y="{top + plot_height + 32}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    cy = top + plot_height / 2
    out.append(
        f'<text class="axis-label" x="12" y="{_fmt(cy)}" text-anchor="middle" '
        f'transform="rotate(-90 12 {_fmt(cy)})">{escape(y_label)}</text>'
    )

    for s in series:
        color, dash = escape(s.color), escape(s.dash)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        pts = sorted(s.points, key=lambda p: p.x)
        segment: list[str] = []
        segments: list[list[str]] = []
        for p in pts:
            if p.y is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{_fmt(sx(p.x))},{_fmt(sy(p.y))}")
        if segment:
            segments.append(segment)
        for seg in segments:
            if len(seg) > 1:
                out.append(
                    f'<polyline class="line" points="{" ".join(seg)}" stroke="{color}"{dash_attr}/>'
                )
        for p in pts:
            if p.y is None:
                continue
            x, y = sx(p.x), sy(p.y)
            if p.ci is not None:
                out.append(
                    f'<line class="ci" x1="{_fmt(x)}" x2="{_fmt(x)}" y1="{_fmt(sy(p.ci[0]))}" '
                    f'y2="{_fmt(sy(p.ci[1]))}" stroke="{color}"/>'
                )
            tip = f"<title>{escape(p.tooltip)}</title>" if p.tooltip else ""
            out.append(
                f'<circle class="pt" cx="{_fmt(x)}" cy="{_fmt(y)}" r="3.2" fill="{color}">'
                f"{tip}</circle>"
            )

    for i, s in enumerate(series):
        y = legend_top + legend_row * i + 8
        dash_attr = f' stroke-dasharray="{escape(s.dash)}"' if s.dash else ""
        out.append(
            f'<line class="line" x1="{left}" x2="{left + 24}" y1="{y}" y2="{y}" '
            f'stroke="{escape(s.color)}"{dash_attr}/>'
            f'<circle cx="{left + 12}" cy="{y}" r="3" fill="{escape(s.color)}"/>'
            f'<text class="legend" x="{left + 32}" y="{y + 4}">{escape(s.label)}</text>'
        )
    if not series:
        out.append(f'<text class="legend" x="{left}" y="{legend_top + 12}">no attack runs</text>')
    out.append("</svg>")
    return "".join(out)
