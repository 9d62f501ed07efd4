"""The HTML audit report: content, self-containment, escaping, path hygiene, size, CLI."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest
from report_fixtures import build_results, make_audit_dir

from pgaudit.errors import PgauditError
from pgaudit.report import build_html, render_report
from pgaudit.report.images import resolve_inside, thumbnail
from pgaudit.report.svg import Point, Series, line_chart
from pgaudit.report.view import redact_paths
from pgaudit.results import metric_entry, write_results

SECTIONS = ("verdict", "headline", "curves", "attacks", "operating-point", "gallery", "sanity",
            "model", "environment")  # fmt: skip
XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def audits(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("audits")
    baseline = make_audit_dir(root, name="baseline", model_name="Baseline", strength=0.0)
    hardened = make_audit_dir(root, name="hardened", model_name="Hardened", strength=1.0)
    return baseline, hardened


@pytest.fixture(scope="module")
def single_html(audits) -> str:
    return build_html(audits[1])


def _edit(audit_dir: Path, tmp_path: Path, name: str, change) -> Path:
    """A copy of ``audit_dir`` with results.json edited."""
    results = json.loads((audit_dir / "results.json").read_text())
    change(results)
    out = tmp_path / name
    out.mkdir()
    shutil.copytree(audit_dir / "gallery", out / "gallery")
    write_results(results, out / "results.json")
    return out


def test_single_report_has_every_section(single_html):
    for section in SECTIONS:
        assert f'id="{section}"' in single_html
    assert "NO GATE" in single_html and "no gate thresholds set" in single_html
    assert "0.970" in single_html and "0.850" in single_html  # clean and robust image AUROC
    assert "[0.920, 1.000]" in single_html  # bootstrap CI
    assert single_html.count("<svg") == 6  # 2 objectives x 3 metrics
    assert "Clean (no attack)" in single_html and "Worst case" in single_html
    assert single_html.count("data:image/") == 8 * 6
    assert "sha256:ab12ab12ab12" in single_html and "fapa-adv" in single_html
    assert "pgaudit attack hardened.pt bottle --suite quick --out=audit" in single_html
    assert "comparison" not in single_html.split("<main", 1)[1].split('id="verdict"')[0]


def test_sanity_checks_sorted_by_severity_with_badges(single_html):
    sanity = single_html.split('id="sanity"', 1)[1].split("</section>", 1)[0]
    assert [m for m in re.findall(r'badge (pass|warn|fail)"', sanity)] == ["fail", "warn", "pass"]
    assert "noise lowers AUROC more than PGD" in sanity and "the attack is broken." in sanity


def test_undefined_metric_renders_na_with_reason(audits, tmp_path):
    def undefine(r):
        r["clean"]["metrics"]["image_auroc"] = metric_entry(None, "only normal test images")

    html = build_html(_edit(audits[1], tmp_path, "na", undefine))
    assert 'title="undefined: only normal test images"' in html
    assert re.search(r'<li id="note-\d+">n/a: only normal test images</li>', html)
    assert "None" not in html and ">nan<" not in html.lower() and ">0.000<" not in html
    # the curve skips the undefined clean point instead of plotting it as 0
    assert "Points left out (n/a): Image AUROC (only normal test images)" in html


def test_comparison_report(audits):
    html = build_html(list(audits), gate_criteria=None)
    assert 'id="comparison"' in html and 'id="headline"' not in html
    assert "Robustness comparison · Baseline vs Hardened" in html
    assert "Baseline · PGD-10" in html and "Hardened · PGD-10" in html  # both models' curves
    assert html.count("data:image/") == 2 * 8 * 6


def test_report_size_stays_small(audits, tmp_path):
    out = render_report(list(audits), tmp_path / "report.html")
    assert out.stat().st_size < 3_000_000
    assert render_report(audits[0], tmp_path / "one.html").stat().st_size < 1_500_000


def test_autoescape_renders_markup_as_text(audits, tmp_path):
    def inject(r):
        r["model"]["name"] = XSS
        r["data"]["name"] = r["data"]["category"] = XSS
        r["attacks"][0]["id"] = r["attacks"][0]["attack"] = XSS
        r["gallery"][0]["name"] = XSS
        r["sanity"][0]["evidence"] = XSS
        r["clean"]["metrics"]["aupro"] = metric_entry(None, XSS)
        r["meta"]["command"] = f"pgaudit attack '{XSS}'"

    html = build_html(_edit(audits[1], tmp_path, "xss", inject))
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_no_absolute_paths_unless_asked(audits, tmp_path):
    html = build_html(audits[1])
    assert "/home/alice" not in html and "/tmp/audit" not in html and "secret-project" not in html
    assert str(audits[1].resolve()) not in html
    assert "hardened.pt" in html  # the base name is shown
    full = build_html(audits[1], include_paths=True)
    assert "/home/alice/secret-project/models/hardened.pt" in full
    assert str(audits[1].resolve()) in full


def test_redact_paths_keeps_relative_forms():
    text = (
        "run /opt/x/m.pt on ~/data/bottle --out=/tmp/a, eps 8/255, runs/exp1/m.pt ./y C:\\u\\z.pt"
    )
    assert redact_paths(text) == "run m.pt on bottle --out=a, eps 8/255, runs/exp1/m.pt ./y z.pt"
    assert redact_paths({"a": ["/x/y"], "b": 3}) == {"a": ["y"], "b": 3}


def test_html_loads_nothing_external(single_html, audits):
    html = build_html(list(audits))
    for page in (single_html, html):
        assert "http://" not in page and "https://" not in page
        assert "<link" not in page.lower() and "<script" not in page.lower()
        assert "url(" not in page and "@import" not in page
        for attr, value in re.findall(r'\b(src|href|xlink:href|action)\s*=\s*"([^"]*)"', page):
            assert value.startswith(("data:image/", "#")), (attr, value[:40])
        assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_gallery_refuses_paths_outside_the_audit_dir(audits, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes((audits[1] / "gallery" / "0_clean.png").read_bytes())
    (tmp_path / "link.png").symlink_to(secret)

    def escape(r):
        r["gallery"][0]["clean"] = "../secret.png"
        r["gallery"][0]["adversarial"] = str(secret)
        r["gallery"][0]["perturbation"] = "gallery/../../secret.png"

    audit = _edit(audits[1], tmp_path, "esc", escape)
    (audit / "outside.png").symlink_to(secret)
    html = build_html(audit)
    assert html.count("refused: the path leaves the audit folder") >= 3
    assert html.count("data:image/") == 8 * 6 - 3
    assert resolve_inside(audit, "outside.png") is None
    assert resolve_inside(audit, "gallery/0_clean.png") is not None
    assert thumbnail(audit, "results.json").problem == "not a readable image"
    assert thumbnail(audit, "gallery/nope.png").problem == "missing file"


def _verdict(html: str) -> str:
    return html.split('id="verdict"', 1)[1].split("</section>", 1)[0]


def test_gate_verdict_from_criteria(audits):
    both = _verdict(build_html(list(audits), gate_criteria={"min_robust_auroc": 0.7}))
    assert both.count("verdict-fail") == 1 and both.count("verdict-pass") == 1
    assert "fails 1 of 1 gate threshold" in both and "meets its gate threshold" in both
    assert "robust Image AUROC" in both and "≥ 0.700" in both


def test_gate_recorded_in_results(audits, tmp_path):
    table = {"min_robust_auroc": 0.9}  # a [gate] table: evaluated afresh
    html = _verdict(build_html(_edit(audits[0], tmp_path, "o", lambda r: r.update(gate=table))))
    assert "FAIL" in html and "fails 1 of 1 gate threshold" in html and "≥ 0.900" in html
    table = {"min_robust_auroc": 0.8}
    html = _verdict(build_html(_edit(audits[1], tmp_path, "t", lambda r: r.update(gate=table))))
    assert "PASS" in html and "Thresholds from results.json" in html
    # one shape only: a recorded outcome is not a gate table
    outcome = {"passed": False, "criteria": [{"metric": "image_auroc", "threshold": 0.9}]}
    html = _verdict(build_html(_edit(audits[0], tmp_path, "x", lambda r: r.update(gate=outcome))))
    assert "the gate cannot be evaluated" in html
    assert "results.json gate criteria: unknown key(s) criteria, passed" in html


def test_gate_on_undefined_metric_is_a_failed_verdict(audits, tmp_path):
    def undefine(r):
        r["robust"]["metrics"]["aupro"] = metric_entry(None, "no anomalous pixels")

    audit = _edit(audits[1], tmp_path, "u", undefine)
    html = _verdict(build_html(audit, gate_criteria={"min_robust_auroc": 0.5, "metric": "aupro"}))
    assert "verdict-fail" in html and "the gate cannot be evaluated" in html
    assert "robust aupro is undefined (no anomalous pixels)" in html


def test_example_results_fixture_renders(tmp_path):
    example = Path(__file__).parent / "fixtures" / "results_example.json"  # tracked in git
    (tmp_path / "results.json").write_bytes(example.read_bytes())
    html = build_html(tmp_path)
    for section in SECTIONS:
        assert f'id="{section}"' in html
    assert "None" not in html and "://" not in html


def test_templates_ship_as_package_data(tmp_path):
    """The templates are inside a built wheel (an editable install finds them whatever
    package-data says, so build one from a copy of the sources and look inside)."""
    repo = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(repo / "pgaudit", src / "pgaudit", ignore=ignore)
    shutil.copytree(repo / "reports" / "templates", src / "reports" / "templates", ignore=ignore)
    # Without build isolation (offline, fast) when setuptools is importable; else pip fetches it.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", str(src)]
    done = subprocess.run([*cmd, "-w", str(tmp_path / "dist")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("pgaudit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {Path(n).name for n in names if n.startswith("pgaudit/_templates/")}
    on_disk = {p.name for p in (repo / "reports" / "templates").iterdir() if p.is_file()}
    assert {"report.html.j2", "report.css"} <= shipped
    assert on_disk <= shipped
    # and the installed package finds them where the report loads them from
    root = files("pgaudit._templates")
    assert root.joinpath("report.html.j2").is_file() and root.joinpath("report.css").is_file()


def test_missing_results_is_a_user_error(tmp_path):
    with pytest.raises(PgauditError, match="results.json"):
        build_html(tmp_path)


def test_svg_chart_escapes_and_breaks_at_undefined_points():
    s = Series(XSS, [Point(0, 0.9), Point(1, None), Point(2, 0.5), Point(3, 0.4, (0.3, 0.5))])
    out = line_chart([s], title="t<", x_label="ε", y_label="AUROC", x_ticks=[(0, "0"), (3, "3")])
    assert "<script" not in out and "&lt;script&gt;" in out and "t&lt;" in out
    assert out.count("<polyline") == 1 and out.count("<circle") == 4  # 3 points + legend
    assert 'class="ci"' in out


def test_cli_report(run_cli, audits, tmp_path):
    out = tmp_path / "r.html"
    res = run_cli("report", audits[0], "--out", out, "--compare", audits[1])
    assert res.exit_code == 0, res.stderr
    assert "wrote" in res.stdout and out.is_file()
    assert "Baseline vs Hardened" in out.read_text()

    res = run_cli("report", audits[1], "--out", tmp_path / "p.html", "--include-paths")
    assert res.exit_code == 0 and "/home/alice" in (tmp_path / "p.html").read_text()


def test_cli_report_writes_into_the_audit_folder_by_default(run_cli, audits, tmp_path):
    import shutil

    audit = shutil.copytree(audits[0], tmp_path / "audit")
    res = run_cli("report", audit)
    assert res.exit_code == 0, res.stderr
    written = audit / "report.html"
    assert written.is_file() and "Baseline" in written.read_text(encoding="utf-8")
    assert f"wrote {written}" in " ".join(res.stdout.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit"]  # nothing beside it


def test_cli_report_uses_project_gate(run_cli, audits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pgaudit.toml").write_text("[gate]\nmin_robust_auroc = 0.7\n")
    res = run_cli("report", audits[0], "--out", "g.html")
    assert res.exit_code == 0, res.stderr
    assert "fails 1 of 1 gate threshold" in (tmp_path / "g.html").read_text()


def test_cli_report_without_results(run_cli, tmp_path):
    res = run_cli("report", tmp_path)
    assert res.exit_code == 2
    assert "results.json" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "report.html").exists()


def test_build_results_fixture_is_complete():
    r = build_results()
    from pgaudit.results import REQUIRED_KEYS

    assert all(k in r for k in REQUIRED_KEYS)


def test_adaptive_note_is_shown(audits, tmp_path):
    note = {"differentiated": "image score = top-3 mean", "eot": False, "eot_draws": None,
            "gradient_checked": True}  # fmt: skip
    html = build_html(_edit(audits[1], tmp_path, "ad", lambda r: r.update(adaptive=note)))
    sanity = html.split('id="sanity"', 1)[1].split("</section>", 1)[0]
    assert "What the attacks differentiate" in sanity and "image score = top-3 mean" in sanity
    assert "Gradient checked</dt><dd>yes" in sanity and "Eot draws</dt><dd>—" in sanity
