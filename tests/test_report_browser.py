"""The report in a real browser (headless Chromium): no console errors, key sections visible."""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_fixtures import make_audit_dir

from pgaudit.report import render_report

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)
#: Set by .ci/run: there a missing Chromium fails the browser tests instead of skipping them.
REQUIRE = "PGAUDIT_REQUIRE_BROWSER"
MISSING = "Chromium is not installed (apt-get install chromium)"

SECTIONS = ("verdict", "comparison", "curves", "attacks", "operating-point", "gallery", "sanity",
            "model", "environment")  # fmt: skip

# Appended to a copy of the report (whose CSP forbids scripts) to measure what the browser shows.
PROBE = """<script>
addEventListener("load", () => {
  const shown = (el) => {
    if (!el) return false;
    const r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && cs.display !== "none" && cs.visibility !== "hidden";
  };
  const ids = %s;
  const out = {
    sections: Object.fromEntries(ids.map((id) => [id, shown(document.getElementById(id))])),
    images: document.images.length,
    broken: [...document.images].filter((i) => !(i.complete && i.naturalWidth > 0)).length,
    charts: [...document.querySelectorAll("svg.chart")].filter(shown).length,
    badge: document.querySelector(".verdict-badge").textContent,
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(tmp_path: Path, page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{page.stem}"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,3000",
        "--enable-logging=stderr", "--v=0", *extra, page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", autouse=True)
def _chromium_present() -> None:
    """Skip without Chromium, with the reason; fail instead where CI requires the browser."""
    if CHROMIUM is None:
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{REQUIRE}=1 but {MISSING}", pytrace=False)
        pytest.skip(MISSING)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    baseline = make_audit_dir(root, name="baseline", model_name="Baseline", strength=0.0)
    hardened = make_audit_dir(root, name="hardened", model_name="Hardened", strength=1.0)
    return render_report([baseline, hardened], root / "report.html")


def test_report_has_no_console_errors(report, tmp_path):
    proc = _chromium(tmp_path, report, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'id="verdict"' in proc.stdout
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    blocked = [ln for ln in proc.stderr.splitlines() if "Refused to" in ln or "net::ERR" in ln]
    assert not console and not blocked, "\n".join(console + blocked)


def _probe(tmp_path: Path, page: str, ids: list[str] | tuple[str, ...]) -> dict:
    """What Chromium shows of ``page`` (a copy without its CSP, with :data:`PROBE` appended)."""
    probed = tmp_path / "probed.html"
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    probed.write_text(page.replace("</body>", PROBE % json.dumps(list(ids)) + "</body>"))
    proc = _chromium(tmp_path, probed, "--dump-dom")
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stderr[-2000:]
    return json.loads(html_lib.unescape(found.group(1)))


def test_key_sections_are_visible(report, tmp_path):
    result = _probe(tmp_path, report.read_text(encoding="utf-8"), SECTIONS)
    assert all(result["sections"].values()), result["sections"]
    assert result["images"] == 2 * 8 * 6 and result["broken"] == 0
    assert result["charts"] == 6
    assert result["badge"] == "NO GATE"


def test_a_missing_chromium_fails_where_ci_requires_it(tmp_path):
    """.ci/run sets PGAUDIT_REQUIRE_BROWSER=1: there no Chromium on PATH is an error, not a skip;
    without the variable the browser tests are skipped with the reason. (Runs without Chromium.)"""
    import sys

    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert f"export {REQUIRE}=1" in ci
    env = {k: v for k, v in os.environ.items() if k != REQUIRE}
    env["PATH"] = str(Path(sys.executable).parent)  # no browser there
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
           f"{__file__}::test_report_has_no_console_errors"]  # fmt: skip
    skipped = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout[-2000:]
    assert MISSING in skipped.stdout
    failed = subprocess.run(cmd, env={**env, REQUIRE: "1"}, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert failed.returncode == 1, failed.stdout[-2000:]
    assert "1 error" in failed.stdout and f"{REQUIRE}=1 but {MISSING}" in failed.stdout


@pytest.fixture(scope="module")
def dataset_report(tmp_path_factory) -> Path:
    """The report of a 3-category root's audit (summary.json + one audit folder per category)."""
    from pgaudit.dataset_summary import entry_from_results, summarize, write_summary
    from pgaudit.results import read_results

    audit = tmp_path_factory.mktemp("dataset") / "audit"
    entries = []
    for i, name in enumerate(("bottle", "cable", "grid<b>")):
        folder = make_audit_dir(audit, name=name, model_name=f"PatchGuard {name}",
                                strength=i / 2)  # fmt: skip
        entries.append(entry_from_results(name, name, read_results(folder)))
    write_summary(summarize("data/mvtec", "quick", entries, "8/255"), audit)
    return render_report(audit, audit / "report.html")


def test_a_dataset_report_opens_with_its_category_table(dataset_report, tmp_path):
    assert dataset_report.stat().st_size < 5e6
    text = dataset_report.read_text(encoding="utf-8")
    assert "grid&lt;b&gt;" in text and "grid<b>" not in text  # escaped
    for key in ("a0", "a1", "a2"):  # each row links to its category's section
        assert f'href="#cat-{key}"' in text and f'id="cat-{key}"' in text
    result = _probe(tmp_path, text, ["dataset", "verdict", "attacks", "gallery", "sanity"])
    assert all(result["sections"].values()), result["sections"]
    assert result["broken"] == 0 and result["images"] > 0
    shot = tmp_path / "shot.png"
    proc = _chromium(tmp_path, dataset_report, f"--screenshot={shot}")
    assert shot.is_file(), proc.stderr[-2000:]
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 5  # not blank: text, a table and charts on the first screen
