"""pgaudit.report: results.json → one self-contained HTML audit report."""

from pgaudit.report.render import build_html, project_gate_criteria, render_report

__all__ = ["build_html", "project_gate_criteria", "render_report"]
