"""`pgaudit demo` end to end at a reduced size (the real pipeline: data, training, attacks, report)."""

from __future__ import annotations

import json


def test_demo_runs_end_to_end(run_cli, tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out, "--epochs", "1", "--n-train", "16", "--n-test", "8")
    assert result.exit_code == 0, result.stderr
    assert "report:" in result.stdout
    report = out / "report.html"
    html = report.read_text(encoding="utf-8")
    assert report.stat().st_size < 3 * 1024 * 1024
    assert "http://" not in html and "https://" not in html
    for name in ("clean", "hardened"):
        results = json.loads((out / f"audit-{name}" / "results.json").read_text())
        assert results["suite"]["name"] == "quick"
        assert {a["objective"] for a in results["attacks"]} == {"detection", "localization"}
        assert (out / f"{name}.pt").is_file()
        # Both audited models appear in the one comparison report.
        assert results["model"]["name"] in html
