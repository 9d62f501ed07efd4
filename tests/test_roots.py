"""Whole dataset roots: `harden/train … --all-categories`, `attack MODELS ROOT --all-categories`,
summary.json, and the gate on a summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import torch
from small_models import micro

from pgaudit import roots
from pgaudit.dataset_summary import read_summary

SIZE = 32
CATEGORIES = ("fabric", "fabric-b", "widget")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A root with 3 small synthetic categories and an untrained micro PatchGuard (2 epochs)."""
    from pgaudit.data.synth import make_synthetic_dataset
    from pgaudit.models.checkpoint import save_checkpoint
    from pgaudit.models.patchguard import PatchGuard

    base = tmp_path_factory.mktemp("roots")
    make_synthetic_dataset(base / "data", size=SIZE, n_train=8, n_test=8)
    shutil.copytree(base / "data" / "fabric", base / "data" / "fabric-b")
    config = micro()
    torch.manual_seed(0)
    save_checkpoint(base / "micro.pt", PatchGuard(config))
    return base


HARDEN = ("harden", "micro.pt", "data", "--all-categories", "--out", "models", "--device", "cpu",
          "--workers", "0")  # fmt: skip


def _epochs(path: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()]


def test_an_interrupted_root_continues_where_it_stopped(root, run_cli, monkeypatch):
    """Stopped during the second category's second epoch; the rerun skips the first, resumes the
    second and trains the third."""
    from pgaudit.training.setup import HardenPlan

    monkeypatch.chdir(root)
    original = HardenPlan.run

    def run(self, **options):
        def stop(record):
            if self.category.name == "fabric-b" and record["epoch"] == 1:
                raise KeyboardInterrupt

        return original(self, on_epoch=stop, **options)

    monkeypatch.setattr(HardenPlan, "run", run)
    with pytest.raises(KeyboardInterrupt):
        roots.train_categories("micro.pt", "data", "models", device="cpu", workers=0,
                               progress=False)  # fmt: skip
    monkeypatch.setattr(HardenPlan, "run", original)
    assert sorted(p.name for p in (root / "models").glob("*.pt")) == ["fabric-b.pt", "fabric.pt"]
    before = (root / "models/fabric.pt").stat().st_mtime_ns
    res = run_cli(*HARDEN)
    assert res.exit_code == 0, res.stderr
    out = " ".join(res.stdout.split())
    assert "fabric: skipped -> models/fabric.pt (finished with this recipe)" in out
    assert "fabric-b: resumed -> models/fabric-b.pt" in out and "widget: trained" in out
    assert (root / "models/fabric.pt").stat().st_mtime_ns == before  # not touched
    assert _epochs(root / "models/fabric-b.log.jsonl") == [1, 2]  # epoch 2 only added
    again = run_cli(*HARDEN)  # everything finished: nothing to do
    assert again.exit_code == 0 and again.stdout.count("skipped") == 3


def test_a_finished_model_of_another_recipe_is_kept_and_reported(root, run_cli, monkeypatch):
    monkeypatch.chdir(root)
    shutil.copytree(root / "models", root / "other", dirs_exist_ok=True)
    before = (root / "other/widget.pt").read_bytes()
    res = run_cli(*HARDEN[:5], "other", *HARDEN[6:], "--lr", "1e-3", "--epochs", "1")
    assert res.exit_code == 2
    text = " ".join((res.stdout + res.stderr).split())
    assert "holds a model trained with another recipe or seed" in text
    assert "3 of 3 categories failed" in text
    assert (root / "other/widget.pt").read_bytes() == before


def test_a_whole_root_is_audited_into_one_summary_and_gated(root, run_cli, monkeypatch):
    monkeypatch.chdir(root)
    if not (root / "models/widget.pt").exists():
        assert run_cli(*HARDEN).exit_code == 0
    (root / "models/fabric-b.pt").rename(root / "models/fabric-b.pt.away")  # one has no model
    res = run_cli("attack", "models", "data", "--all-categories", "--out", "audit", "--steps",
                  "2", "--device", "cpu", "--bootstrap", "0", "--quiet")  # fmt: skip
    (root / "models/fabric-b.pt.away").rename(root / "models/fabric-b.pt")
    assert res.exit_code == 2 and "1 of 3 categories failed: fabric-b" in " ".join(
        res.stderr.split()
    )
    assert (root / "audit/fabric/results.json").is_file()  # the others ran and are kept
    summary = read_summary(root / "audit")
    assert [c.status for c in summary.categories] == ["ok", "failed", "ok"]
    assert summary.mean("robust", "image_auroc").value is None  # never a mean of a subset
    gate = run_cli("gate", "audit", "--min-robust-auroc", "0")
    assert gate.exit_code == 2 and "the audit of fabric-b failed" in " ".join(gate.stderr.split())

    res = run_cli("attack", "models", "data", "--all-categories", "--out", "audit", "--steps",
                  "2", "--device", "cpu", "--bootstrap", "0", "--quiet", "--report")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    page = (root / "audit/report.html").read_text()
    assert "3 categories of data" in page and page.count('href="#cat-a') == 3
    data = json.loads((root / "audit/summary.json").read_text())
    for scope in ("clean", "robust"):
        for metric in ("image_auroc", "pixel_auroc"):
            values = [
                json.loads((root / "audit" / c / "results.json").read_text())[scope]["metrics"][
                    metric
                ]["value"]
                for c in CATEGORIES
            ]
            assert data["mean"][scope][metric]["value"] == pytest.approx(np.mean(values))
            assert data["worst"][scope][metric]["value"] == pytest.approx(min(values))
    worst = data["worst"]["robust"]["image_auroc"]["value"]
    junit = root / "gate.xml"
    ok = run_cli("gate", "audit", "--min-robust-auroc", f"{worst:.6f}", "--junit", str(junit))
    assert ok.exit_code == 0 and "robust image_auroc (mean)" in ok.stdout
    assert "(the worst category)" in ok.stdout
    cases = [c.get("name") for c in ET.parse(junit).getroot().iter("testcase")]
    assert cases == [f"robust image_auroc{s} >= {float(f'{worst:.6f}'):g}"
                     for s in (" (mean)", *(f" [{c}]" for c in CATEGORIES))]  # fmt: skip
    robust = [json.loads((root / "audit" / c / "results.json").read_text())["robust"]["metrics"]
              ["image_auroc"]["value"] for c in CATEGORIES]  # fmt: skip
    above = run_cli("gate", "audit", "--min-robust-auroc", f"{worst + 1e-3:.6f}")
    assert above.exit_code == 1  # one FAIL line per category below the bar
    assert above.stdout.count("FAIL robust image_auroc [") == sum(v < worst + 1e-3 for v in robust)
    same = run_cli("gate", "audit", "--baseline", "audit", "--max-drop", "0")
    assert same.exit_code == 0 and same.stdout.count("drop [") == 3  # one per category


def test_all_categories_options_are_checked(root, run_cli, monkeypatch):
    monkeypatch.chdir(root)
    res = run_cli(*HARDEN[:5], "models.pt", *HARDEN[6:])
    assert res.exit_code == 2 and "--out models.pt: with all categories this is a folder" in (
        " ".join(res.stderr.split())
    )
    res = run_cli(*HARDEN, "--category", "widget")
    assert (
        res.exit_code == 2
        and "--category 'widget' with --all-categories: drop one of them"
        in " ".join(res.stderr.split())
    )
    res = run_cli("attack", "micro.pt", "data", "--all-categories", "--device", "cpu")
    assert res.exit_code == 2 and "the folder of <category>.pt files" in " ".join(
        res.stderr.split()
    )


def test_a_root_trains_in_worker_processes(root, tmp_path):
    """--all-categories --nproc 2: each category is planned for its recipe in this process (no
    out needed for that) and trained by two workers."""
    runs = roots.train_categories(str(root / "micro.pt"), root / "data", tmp_path / "models",
                                  device="cpu", nproc=2, workers=0, progress=False)  # fmt: skip
    assert [(r.name, r.status) for r in runs] == [(c, "trained") for c in CATEGORIES]
