"""pgaudit through its Python API: baseline vs. your own detector, audited and hardened.

Run from the repository root (CPU, a few minutes):

    python examples/python_api.py [WORKDIR]

1. writes the synthetic dataset, 2. fits the PatchCore baseline and audits it, 3. loads the example
user detector by name, hardens it with the PatchGuard recipe and audits it before and after.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

import pgaudit
from pgaudit.data.layouts import open_category
from pgaudit.data.synth import make_synthetic_dataset
from pgaudit.models.baselines import fit_baseline
from pgaudit.models.presets import get_preset

HERE = Path(__file__).resolve().parent


def audit(loaded, category, out: Path) -> str:
    """Attack with the quick suite (native PGD-10 at 8/255) and summarise clean vs. robust."""
    results = pgaudit.audit(loaded, category, "quick", out_dir=out)
    clean = results.clean.metric("image_auroc").value
    robust = results.robust.metric("image_auroc").value
    return f"{loaded.name:<32} image AUROC clean {clean:.3f}  robust {robust:.3f}"


def main(workdir: Path) -> None:
    torch.manual_seed(0)
    data = workdir / "data"
    if not (data / "widget").exists():
        make_synthetic_dataset(data, n_train=40, n_test=30, categories=["widget"])
    widget = open_category(data / "widget")

    # 1. the PatchCore baseline: a strong clean detector with no adversarial robustness
    patchcore_path, _ = fit_baseline("patchcore", widget.root, workdir / "patchcore.pt")
    lines = [audit(pgaudit.load_detector(patchcore_path), widget, workdir / "audit-patchcore")]

    # 2. your own detector, by name (the same string the CLI takes as MODEL)
    sys.path.insert(0, str(HERE / "custom_detector"))
    mine = pgaudit.load_detector("mydetector.detectors:build")
    lines.append(audit(mine, widget, workdir / "audit-mine"))

    # 3. harden it (FAPA pseudo-anomalies + PGD adversarial training), then audit again;
    #    5 epochs keep the example short: a useful detector needs many more
    recipe = replace(get_preset("tiny").train, epochs=5, batch_size=8, steps=3)
    pgaudit.harden(mine, widget, recipe, seed=0)
    mine.name = "mydetector (hardened)"
    lines.append(audit(mine, widget, workdir / "audit-mine-hardened"))
    torch.save(mine.detector.module.state_dict(), workdir / "mydetector_hardened.pt")
    # reload later with: MYDETECTOR_WEIGHTS=<workdir>/mydetector_hardened.pt

    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("pgaudit-api-example"))
