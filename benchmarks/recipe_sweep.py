"""Many recipe variants of ``real_photos.py`` at once, ranked by one rule fixed in advance.

Each variant (a name and its ``--set`` / ``--model-set`` overrides, from ``--variants``, a JSON
file) is trained clean and hardened on every category of ``--split`` for every seed, by
``real_photos.py`` processes run ``--jobs`` at a time (on a GPU they share it). The ranking rule,
the issue's targets counted per variant on that split (mean over seeds):

* per category: hardened clean image AUROC >= clean-trained - 0.10, robust image AUROC gain
  >= +0.30, robust pixel AUROC gain >= +0.30; over categories: mean clean gap >= -0.05;
* more targets met ranks higher; ties go to the larger mean of (clean gap + both gains);
* only variants marked ``"cpu": true`` (within the CPU preset's ~10 min budget) can win.

Run it on the tuning split only: the winner is then confirmed on the report split with
``real_photos.py``. ``--deadline S`` stops starting new jobs after S seconds (variants are run in
file order, each variant's categories together), so a time-boxed run still ranks whole variants.

Run: ``.venv/bin/python benchmarks/recipe_sweep.py --variants benchmarks/variants.json
--device cuda --jobs 12 --out runs/sweep``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from real_photos import SPLITS, data_dir  # noqa: E402


def command(variant: dict[str, Any], name: str, args: argparse.Namespace, out: Path) -> list[str]:
    cmd = [sys.executable, str(HERE / "real_photos.py"), "--split", name, "--seeds", args.seeds,
           "--device", args.device, "--threads", str(args.threads), "--cache", str(args.cache),
           "--json", str(out)]  # fmt: skip
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    for flag, key in (("--set", "set"), ("--clean-set", "clean_set"), ("--model-set", "model_set")):
        for item in variant.get(key, []):
            cmd += [flag, item]
    return cmd


def score(rows: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, Any] | None:
    """Per-category gaps and gains (mean over seeds) and the ranking key; None if incomplete."""

    def mean(name: str, mode: str, part: str, metric: str) -> float | None:
        values = [r["quick"][part][metric] for r in rows
                  if r["category"] == name and r["mode"] == mode]  # fmt: skip
        return float(np.mean(values)) if values else None

    per: dict[str, dict[str, float]] = {}
    for name in names:
        m = {
            (mode, part, metric): mean(name, mode, part, metric)
            for mode in ("clean", "hardened")
            for part in ("clean", "robust")
            for metric in ("image_auroc", "pixel_auroc")
        }
        if any(v is None for v in m.values()):
            return None
        per[name] = {
            "clean": m["hardened", "clean", "image_auroc"],
            "gap": m["hardened", "clean", "image_auroc"] - m["clean", "clean", "image_auroc"],
            "img": m["hardened", "robust", "image_auroc"] - m["clean", "robust", "image_auroc"],
            "px": m["hardened", "robust", "pixel_auroc"] - m["clean", "robust", "pixel_auroc"],
            "rimg": m["hardened", "robust", "image_auroc"],
            "rpx": m["hardened", "robust", "pixel_auroc"],
        }
    met = sum((c["gap"] >= -0.10) + (c["img"] >= 0.30) + (c["px"] >= 0.30) for c in per.values())
    mean_gap = float(np.mean([c["gap"] for c in per.values()]))
    met += mean_gap >= -0.05
    tie = float(np.mean([c["gap"] + c["img"] + c["px"] for c in per.values()]))
    return {"per": per, "met": int(met), "of": 3 * len(per) + 1, "mean_gap": mean_gap, "tie": tie}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=Path, required=True)
    parser.add_argument("--split", default="tuning")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="Torch threads per job.")
    parser.add_argument("--deadline", type=float, default=None)
    parser.add_argument("--cache", type=Path, default=Path("runs/bench-cache"))
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    args = parser.parse_args()

    names = SPLITS.get(args.split, tuple(args.split.split(",")))
    variants = json.loads(args.variants.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:  # written once, before the jobs share it
        data_dir(args.cache, name, None)
    queue = [(v, n) for v in variants for n in names]
    start, running, log = time.monotonic(), [], open(args.out / "jobs.log", "a")
    while queue or running:
        late = args.deadline is not None and time.monotonic() - start > args.deadline
        while queue and len(running) < args.jobs and not late:
            variant, name = queue.pop(0)
            out = args.out / f"{variant['name']}-{name}.json"
            if out.exists():
                continue
            log.write(f"{time.monotonic() - start:7.1f} start {variant['name']} {name}\n")
            log.flush()
            proc = subprocess.Popen(command(variant, name, args, out), stdout=log, stderr=log)
            running.append((proc, variant["name"], name))
        if late:
            queue.clear()
        for item in list(running):
            if item[0].poll() is not None:
                running.remove(item)
                log.write(f"{time.monotonic() - start:7.1f} done {item[1]} {item[2]} "
                          f"rc {item[0].returncode}\n")  # fmt: skip
                log.flush()
        time.sleep(1)

    ranked = []
    for variant in variants:
        rows = []
        for name in names:
            path = args.out / f"{variant['name']}-{name}.json"
            if path.exists():
                rows += json.loads(path.read_text())
        result = score(rows, names)
        if result is not None:
            minutes = [r["train_min"] for r in rows if r["mode"] == "hardened"]
            ranked.append((variant, result, float(np.mean(minutes))))
    ranked.sort(key=lambda x: (x[0].get("cpu", False), x[1]["met"], x[1]["tie"]), reverse=True)
    summary = []
    print(f"{'variant':24} cpu met  mean gap  " + "  ".join(f"{n[:12]:>26}" for n in names)
          + "  min")  # fmt: skip
    for variant, r, minutes in ranked:
        cells = "  ".join(f"{c['clean']:.2f} {c['gap']:+.2f} {c['img']:+.2f} {c['px']:+.2f}"
                          for c in r["per"].values())  # fmt: skip
        print(f"{variant['name']:24} {'y' if variant.get('cpu') else 'n':>3} "
              f"{r['met']:>2}/{r['of']} {r['mean_gap']:+8.3f}  {cells}  {minutes:.1f}")  # fmt: skip
        summary.append({"variant": variant, **r, "train_min": minutes})
    print("(each category: hardened clean image AUROC, clean gap, robust image gain, robust pixel "
          "gain; mean over seeds)")  # fmt: skip
    (args.out / "ranking.json").write_text(json.dumps(summary, indent=1))
    if ranked and ranked[0][0].get("cpu"):
        print(f"WINNER {ranked[0][0]['name']}")


if __name__ == "__main__":
    main()
