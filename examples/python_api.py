"""pgaudit through its Python API: baseline vs. your own detector, audited and hardened.

Run from the repository root (CPU, a few minutes):

    python examples/python_api.py [WORKDIR] [--fast]

(``--fast``: a few small images, one epoch and no bootstrap: a smoke run of every step, in seconds.)

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


def audit(loaded, category, out: Path, **options) -> str:
    """Attack with the quick suite (native PGD-10 at 8/255) and summarise clean vs. robust."""
    results = pgaudit.audit(loaded, category, "quick", out_dir=out, **options)
    clean = results.clean.metric("image_auroc").value
    robust = results.robust.metric("image_auroc").value
    return f"{loaded.name:<32} image AUROC clean {clean:.3f}  robust {robust:.3f}"


def main(workdir: Path, fast: bool = False) -> None:
    torch.manual_seed(0)
    data = workdir / "data"
    sizes = dict(size=64, n_train=8, n_test=8) if fast else dict(n_train=40, n_test=30)
    if not (data / "widget").exists():
        make_synthetic_dataset(data, categories=["widget"], **sizes)
    widget = open_category(data / "widget")
    options = dict(bootstrap=0) if fast else {}

    # 1. the PatchCore baseline: a strong clean detector with no adversarial robustness
    patchcore_path, _ = fit_baseline(
        "patchcore", widget.root, workdir / "patchcore.pt", image_size=64 if fast else 128
    )
    patchcore = pgaudit.load_detector(patchcore_path)
    lines = [audit(patchcore, widget, workdir / "audit-patchcore", **options)]

    # 2. your own detector, by name (the same string the CLI takes as MODEL)
    sys.path.insert(0, str(HERE / "custom_detector"))
    mine = pgaudit.load_detector("mydetector.detectors:build")
    lines.append(audit(mine, widget, workdir / "audit-mine", **options))

    # 3. harden it (FAPA pseudo-anomalies + PGD adversarial training), then audit again;
    #    5 epochs keep the example short: a useful detector needs many more
    epochs, steps = (1, 1) if fast else (5, 3)
    recipe = replace(get_preset("tiny").train, epochs=epochs, batch_size=8, steps=steps)
    pgaudit.harden(mine, widget, recipe, seed=0)
    mine.name = "mydetector (hardened)"
    lines.append(audit(mine, widget, workdir / "audit-mine-hardened", **options))
    torch.save(mine.detector.module.state_dict(), workdir / "mydetector_hardened.pt")
    # reload later with: MYDETECTOR_WEIGHTS=<workdir>/mydetector_hardened.pt

    print("\n".join(lines))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--fast"]
    main(Path(args[0]) if args else Path("pgaudit-api-example"), fast="--fast" in sys.argv[1:])
