"""`pgaudit demo` end to end at a reduced size (the real pipeline: data, training, attacks, report)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace

from pgaudit.demo import DEMO_GATE
from pgaudit.models.checkpoint import read_torch_file
from pgaudit.models.presets import get_preset


def _printed_verdicts(stdout: str) -> dict[str, str]:
    """The gate column of the demo's summary table, per model row."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells and cells[0] in ("clean", "hardened"):
            rows[cells[0]] = cells[-1]
    return rows


def test_demo_runs_end_to_end(run_cli, tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out, "--epochs", "1", "--n-train", "16", "--n-test", "8")
    assert result.exit_code == 0, result.stderr
    assert "report:" in result.stdout
    report = out / "report.html"
    html = report.read_text(encoding="utf-8")
    assert report.stat().st_size < 3 * 1024 * 1024
    assert "http://" not in html and "https://" not in html
    # One report comparing the two models side by side.
    assert 'id="comparison"' in html and "Robustness comparison" in html
    printed = _printed_verdicts(result.stdout)
    assert set(printed) == {"clean", "hardened"}, result.stdout
    tiny = get_preset("tiny").train
    for name in ("clean", "hardened"):
        results = json.loads((out / f"audit-{name}" / "results.json").read_text())
        assert results["suite"]["name"] == "quick"
        assert {a["objective"] for a in results["attacks"]} == {"detection", "localization"}
        assert (out / f"{name}.pt").is_file()
        # Both audited models appear in the one comparison report.
        assert results["model"]["name"] in html
        # The clean model was trained without attacks, the hardened one adversarially; otherwise
        # both follow the tiny preset's recipe at the demo's epochs.
        recipe = read_torch_file(out / f"{name}.pt")["training"]["recipe"]
        assert recipe == asdict(replace(tiny, epochs=1, adversarial=name == "hardened"))
        # The printed verdict is the gate's own evaluation of the written results.json.
        gate = run_cli(
            "gate",
            out / f"audit-{name}",
            "--metric",
            DEMO_GATE.metric,
            "--min-robust-auroc",
            str(DEMO_GATE.min_robust_auroc),
        )
        assert gate.exit_code in (0, 1), gate.stderr
        assert printed[name] == ("pass" if gate.exit_code == 0 else "fail"), result.stdout
