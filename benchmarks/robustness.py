"""Clean vs hardened PatchGuard on the synthetic categories: training time, clean and robust AUROC.

For each preset (default tiny and lite) and synthetic category (widget: object with foreground
masks; fabric: texture) a model is trained with the preset's training defaults twice, once clean
(no adversarial terms) and once hardened, then evaluated clean and under PGD-10 (L∞; detection and
localization objectives, per-example worst case) at ε ∈ {2, 4, 8}/255. Prints one table and
``METRIC`` lines; targets (DESIGN/issue 3, at ε = 8/255): clean image AUROC >= 0.9, robust pixel
AUROC gain >= +0.25, robust image AUROC gain >= +0.15, hardening <= 8 minutes on 2 cores.

Run: ``.venv/bin/python benchmarks/robustness.py [--quick] [--set key=value ...]``. The CPU may be
shared: the table shows wall minutes, CPU minutes / threads (the time on idle cores) and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

THREADS = 2
EPS = ("2/255", "4/255", "8/255")


def _override(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        from pgaudit.attacks.eps import parse_eps

        return parse_eps(value) if "/" in value else float(value)
    return value


def recipe_for(preset: str, sets: list[str], epochs: int | None, quick: bool):
    from pgaudit.models.presets import TrainConfig, get_preset

    config = get_preset(preset)
    recipe = config.train
    known = {f.name: f for f in fields(TrainConfig)}
    for item in sets:
        key, _, value = item.partition("=")
        if key not in known:
            raise SystemExit(f"--set {item}: unknown TrainConfig field; known: {', '.join(known)}")
        recipe = replace(recipe, **{key: _override(value, getattr(recipe, key))})
    if epochs is not None:
        recipe = replace(recipe, epochs=epochs)
    elif quick:
        recipe = replace(
            recipe,
            epochs=max(2, recipe.epochs // 4),
            eps_warmup_epochs=min(recipe.eps_warmup_epochs, 1),
        )
    return config, recipe


def run_one(preset: str, category, recipe, adversarial: bool, eps_list, eval_steps: int, seed: int,
            workers: int) -> dict[str, Any]:  # fmt: skip
    from pgaudit.models.patchguard import PatchGuard
    from pgaudit.models.presets import get_preset
    from pgaudit.training.evaluate import robustness
    from pgaudit.training.loop import harden

    recipe = replace(recipe, adversarial=adversarial)
    torch.manual_seed(seed)
    model = PatchGuard(get_preset(preset))
    load0 = os.getloadavg()[0]
    t, c = time.perf_counter(), time.process_time()
    result = harden(model, category, recipe, seed=seed,
                    device="cpu", num_workers=workers)  # fmt: skip
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    load = (load0 + os.getloadavg()[0]) / 2
    metrics = robustness(result.model, category.test, eps_list=eps_list, steps=eval_steps,
                         seed=seed)  # fmt: skip
    return {
        "preset": preset,
        "category": category.name,
        "mode": "hardened" if adversarial else "clean",
        "epochs": recipe.epochs,
        "train_min": wall / 60,
        "train_cpu_min": cpu / 60 / THREADS,
        "load": load,
        "final_loss": result.final_loss,
        "metrics": metrics,
        "recipe": {f.name: getattr(recipe, f.name) for f in fields(recipe)},
    }


def _fmt(value: float | None) -> str:
    return " n/a" if value is None else f"{value:.2f}"


def print_table(rows: list[dict[str, Any]], eps_keys: list[tuple[str, str]]) -> None:
    head = (
        f"{'preset':6} {'category':8} {'mode':8} {'ep':>3} {'min':>5} {'cpu':>5} {'load':>4} "
        f"{'clean i/p':>9}" + "".join(f" {label + ' i/p':>12}" for label, _ in eps_keys)
    )
    print(head)
    for r in rows:
        m = r["metrics"]
        cells = "".join(
            f" {_fmt(m[key]['image_auroc']):>5}/{_fmt(m[key]['pixel_auroc']):<6}"
            for _, key in eps_keys
        )
        print(f"{r['preset']:6} {r['category']:8} {r['mode']:8} {r['epochs']:>3} "
              f"{r['train_min']:5.1f} {r['train_cpu_min']:5.1f} {r['load']:4.1f} "
              f"{_fmt(m['clean']['image_auroc']):>4}/{_fmt(m['clean']['pixel_auroc']):<4}{cells}")  # fmt: skip
    print(
        "i/p = image/pixel AUROC; min = training wall minutes; cpu = CPU minutes / "
        f"{THREADS} threads (idle-core time); load = 1-min load average during training"
    )


def print_metrics(rows: list[dict[str, Any]], key8: str) -> None:
    by = {(r["preset"], r["category"], r["mode"]): r for r in rows}
    for (preset, category, mode), r in by.items():
        if mode != "hardened" or (preset, category, "clean") not in by:
            continue
        c = by[(preset, category, "clean")]["metrics"]
        h = r["metrics"]
        name = f"{preset}_{category}"
        print(f"METRIC robust_{name}_clean_image_auroc {h['clean']['image_auroc']:.3f} "
              "(target >= 0.9)")  # fmt: skip
        for metric, target in (("pixel_auroc", 0.25), ("image_auroc", 0.15)):
            gain = h[key8][metric] - c[key8][metric]
            print(f"METRIC robust_{name}_{metric}_gain_8_255 {gain:+.3f} (target >= +{target})")
        print(f"METRIC robust_{name}_harden_cpu_minutes {r['train_cpu_min']:.2f} min "
              f"(wall {r['train_min']:.2f}, load {r['load']:.1f}; target <= 8)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Fewer epochs, widget only, 8/255.")
    parser.add_argument("--presets", default="tiny,lite")
    parser.add_argument("--categories", default=None, help="widget,fabric (quick: widget)")
    parser.add_argument("--modes", default="clean,hardened")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="Override a TrainConfig field, e.g. --set attack_topk_weight=0.5")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--eps", default=None, help="Comma-separated budgets (default 2,4,8/255).")
    parser.add_argument("--data", type=Path, default=None, help="Reuse a `pgaudit data synth` dir.")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="Append result rows here.")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)

    from pgaudit.attacks.eps import parse_eps
    from pgaudit.data.layouts import open_category
    from pgaudit.data.synth import make_synthetic_dataset

    eps_text = args.eps.split(",") if args.eps else (["8/255"] if args.quick else list(EPS))
    eps_list = [parse_eps(e) for e in eps_text]
    eps_keys = [(label, f"{e:.6f}") for label, e in zip(eps_text, eps_list, strict=True)]
    categories = (args.categories or ("widget" if args.quick else "widget,fabric")).split(",")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp)
            make_synthetic_dataset(data, size=128, categories=tuple(categories))
        rows: list[dict[str, Any]] = []
        for preset in args.presets.split(","):
            _, recipe = recipe_for(preset, args.sets, args.epochs, args.quick)
            for name in categories:
                category = open_category(data / name)
                for mode in args.modes.split(","):
                    row = run_one(preset, category, recipe, mode == "hardened", eps_list,
                                  args.eval_steps, args.seed, args.workers)  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.json:
                        with args.json.open("a") as handle:
                            handle.write(json.dumps(row) + "\n")
        print()
        print_table(rows, eps_keys)
        key8 = f"{parse_eps('8/255'):.6f}"
        if any(key == key8 for _, key in eps_keys):
            print_metrics(rows, key8)


if __name__ == "__main__":
    main()
