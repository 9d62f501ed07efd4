"""Clean-trained vs hardened PatchGuard on real photographs (and the synthetic categories).

Categories are cut from scikit-image photographs (:mod:`pgaudit.data.photos`): ``--split tuning``
(immunohistochemistry, moon, cell) is where recipes are tuned, ``--split report`` (coins,
hubble_deep_field, coffee) where they are reported; ``--split synthetic`` runs widget and fabric.
Every cell (category x seed x recipe) is trained once and cached under ``--cache`` (checkpoint +
metrics, keyed by the data and the full recipe), so a rerun trains only what changed. Each model
is audited with the quick suite (native PGD-10, L∞ 8/255, detection and localization objectives,
per-image worst case); ``--standard 0`` also audits seed 0's hardened models with the standard suite
(PGD-50, the sanity checks). The table shows the mean and [min-max] over seeds, and the issue's
targets (hardened clean image AUROC >= clean-trained - 0.05 on average, no category below -0.10;
robust image and pixel AUROC >= clean-trained + 0.30 in every category).

Run: ``.venv/bin/python benchmarks/real_photos.py --split report --seeds 0,1``
(``--epochs N`` for a short tuning budget, ``--set key=value`` to override the recipe).
``--strengths 0.3,0.5`` evaluates the clean-trained models on test sets with those defect
strengths (how the frozen ``DEFECT_STRENGTH`` was chosen).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness import _override, recipe_for  # noqa: E402

THREADS = 2
DATA_VERSION = "photos-1"  # bump when pgaudit.data.photos changes its training crops
DEFECT_VERSION = "defects-2"  # bump when it changes its test images or defects
SPLITS = {
    "tuning": ("immunohistochemistry", "moon", "cell"),
    "report": ("coins", "hubble_deep_field", "coffee"),
    "synthetic": ("widget", "fabric"),
}


def data_dir(cache: Path, name: str, strength: float | None) -> Path:
    """The category folder (written on first use)."""
    from pgaudit.data import photos
    from pgaudit.data.synth import make_synthetic_dataset

    if name in SPLITS["synthetic"]:
        root = cache / "data" / "synthetic"
        if not (root / name).exists():
            make_synthetic_dataset(root, size=128, categories=(name,))
        return root / name
    strength = photos.DEFECT_STRENGTH if strength is None else strength
    root = cache / "data" / f"{DATA_VERSION}-{DEFECT_VERSION}-s{strength:g}" / name
    if not root.exists():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        photos.write_photo_category(tmp, name, strength=strength)
        tmp.rename(root)
    return root


#: Recipe fields added after cells were cached: at these values they are left out of the key,
#: so the cells trained before the field existed (when it behaved as this value) stay valid.
LATER_FIELDS = {"clean_epochs": 0, "augment": "none", "precision": "fp32"}


def cell_key(name: str, preset: str, recipe, seed: int, model_sets: tuple[str, ...] = ()) -> str:
    fields = {
        k: v for k, v in asdict(recipe).items() if k not in LATER_FIELDS or v != LATER_FIELDS[k]
    }
    parts: list[Any] = [DATA_VERSION, name, preset, fields, seed]
    if model_sets:  # left out when empty, so cells cached before --model-set stay valid
        parts.append(sorted(model_sets))
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_config(preset: str, model_sets: tuple[str, ...]):
    """The preset's model config with ``--model-set key=value`` overrides: a PatchGuardConfig
    field (``dsc_dropout=0.2``) or a key of its ``backbone_kwargs`` (``embed_dim=256``)."""
    from pgaudit.models.presets import get_preset

    config = get_preset(preset)
    top = {f for f in asdict(config) if f not in ("train", "backbone_kwargs")}
    kwargs = dict(config.backbone_kwargs)
    for item in model_sets:
        key, _, value = item.partition("=")
        like = getattr(config, key, None)
        if isinstance(like, tuple):  # feature_blocks=4, reg_blocks=2,3,4
            config = replace(config, **{key: tuple(type(like[0])(x) for x in value.split(","))})
        elif key in top:
            config = replace(config, **{key: _override(value, like)})
        elif key in kwargs:
            kwargs[key] = _override(value, kwargs[key])
        else:
            known = ", ".join(sorted(top | set(kwargs)))
            raise SystemExit(f"--model-set {item}: unknown model field; known: {known}")
    return replace(config, backbone_kwargs=kwargs)


def train_cell(cache: Path, name: str, preset: str, recipe, seed: int, *, device: str = "cpu",
               model_sets: tuple[str, ...] = ()) -> tuple[Path, dict]:  # fmt: skip
    """Train (or reuse) one cell; returns its checkpoint and training record."""
    from pgaudit.data.layouts import open_category
    from pgaudit.models.patchguard import PatchGuard
    from pgaudit.training.loop import harden

    key = cell_key(name, preset, recipe, seed, model_sets)
    mode = "adv" if recipe.adversarial else "clean"
    folder = cache / "cells" / f"{name}-{preset}-{mode}-s{seed}-{key}"
    record_path = folder / "train.json"
    if record_path.exists():
        return folder / "model.pt", json.loads(record_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    category = open_category(data_dir(cache, name, None))
    torch.manual_seed(seed)
    model = PatchGuard(model_config(preset, model_sets))
    t, c = time.perf_counter(), time.process_time()
    result = harden(model, category, recipe, seed=seed, device=device, out=folder / "model.pt")
    record = {
        "category": name,
        "preset": preset,
        "model_sets": list(model_sets),
        "device": device,
        "seed": seed,
        "mode": "hardened" if recipe.adversarial else "clean",
        "recipe": asdict(recipe),
        "train_min": (time.perf_counter() - t) / 60,
        "train_cpu_min": (time.process_time() - c) / 60 / torch.get_num_threads(),
        "load": os.getloadavg()[0],
        "validation": getattr(result, "validation", None),
    }
    record_path.write_text(json.dumps(record, indent=1))
    return folder / "model.pt", record


def audit_cell(cache: Path, checkpoint: Path, name: str, suite: str, strength: float | None,
               seed: int, device: str = "cpu") -> dict[str, Any]:  # fmt: skip
    """Quick (or standard) suite on the category's test split; cached beside the checkpoint."""
    from pgaudit.attacks.runner import run_audit
    from pgaudit.data.layouts import open_category
    from pgaudit.models.resolve import load_detector

    tag = f"{suite}-{DEFECT_VERSION}" + (f"-s{strength:g}" if strength is not None else "")
    out = checkpoint.parent / f"audit-{tag}"
    summary_path = out / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    category = open_category(data_dir(cache, name, strength))
    loaded = load_detector(checkpoint, device=device)
    results = run_audit(
        loaded.detector, category, suite, out_dir=out, seed=seed, device=device, progress=False
    )
    keys = ("image_auroc", "pixel_auroc")

    def values(section: Any) -> dict[str, float | None]:
        return {k: m.value if (m := section.metric(k)) else None for k in keys}

    summary = {
        "clean": values(results.clean),
        "robust": values(results.robust),
        "runs": {r.id: values(r) for r in results.attacks},
        "sanity": {c.name: c.status for c in results.sanity},
    }
    summary_path.write_text(json.dumps(summary, indent=1))
    return summary


def spread(values: list[float]) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    return f"{v.mean():.3f} [{v.min():.2f}-{v.max():.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="report", help="tuning, report or synthetic (or names)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--modes", default="clean,hardened")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--clean-set", dest="clean_sets", action="append", default=[],
                        help="Extra overrides for the clean-trained cells only.")  # fmt: skip
    parser.add_argument("--model-set", dest="model_sets", action="append", default=[],
                        help="Model overrides, e.g. embed_dim=256 (all cells).")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (figures say which).")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument(
        "--standard",
        default="",
        help="Seeds whose hardened models also get the standard suite (PGD-50, sanity), e.g. 0.",
    )
    parser.add_argument(
        "--strengths", default=None, help="Calibrate: clean cells at these strengths."
    )
    parser.add_argument("--cache", type=Path, default=Path("runs/bench-cache"))
    parser.add_argument("--json", type=Path, default=None, help="Write all rows here.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, model_sets = args.device, tuple(args.model_sets)

    names = SPLITS.get(args.split, tuple(args.split.split(",")))
    seeds = [int(s) for s in args.seeds.split(",")]
    _, recipe = recipe_for(args.preset, args.sets, args.epochs, False)
    rows: list[dict[str, Any]] = []
    for name in names:
        for mode in args.modes.split(","):
            cell_recipe = replace(recipe, adversarial=mode == "hardened")
            if mode == "clean" and args.clean_sets:
                _, extra = recipe_for(args.preset, args.sets + args.clean_sets, args.epochs, False)
                cell_recipe = replace(extra, adversarial=False)
            for seed in seeds:
                checkpoint, record = train_cell(args.cache, name, args.preset, cell_recipe, seed,
                                                device=device, model_sets=model_sets)  # fmt: skip
                if args.strengths:
                    for s in (float(x) for x in args.strengths.split(",")):
                        quick = audit_cell(args.cache, checkpoint, name, "quick", s, seed, device)
                        rows.append({**record, "strength": s, "quick": quick})
                        print(f"{name:22} {mode:8} seed {seed} strength {s:.2f}: clean image "
                              f"{quick['clean']['image_auroc']:.3f}", flush=True)  # fmt: skip
                    continue
                row = {
                    **record,
                    "quick": audit_cell(args.cache, checkpoint, name, "quick", None, seed, device),
                }
                if str(seed) in args.standard.split(",") and mode == "hardened":
                    row["standard"] = audit_cell(
                        args.cache, checkpoint, name, "standard", None, seed, device
                    )
                rows.append(row)
                q = row["quick"]
                print(f"{name:22} {mode:8} seed {seed}: clean {q['clean']['image_auroc']:.3f}/"
                      f"{q['clean']['pixel_auroc']:.3f} robust {q['robust']['image_auroc']:.3f}/"
                      f"{q['robust']['pixel_auroc']:.3f} ({record['train_min']:.1f} min)", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.strengths:
        return
    print_table(rows, names, args.modes.split(","))


def print_table(rows: list[dict[str, Any]], names, modes) -> None:
    def pick(name: str, mode: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["category"] == name and r["mode"] == mode]

    print()
    print(f"{'category':22} {'mode':8} {'clean image':>22} {'clean pixel':>22} "
          f"{'robust image':>22} {'robust pixel':>22} {'PGD-50 image':>22} {'min':>5}")  # fmt: skip
    for name in names:
        for mode in modes:
            cell = pick(name, mode)
            if not cell:
                continue
            q = [r["quick"] for r in cell]
            std = [r["standard"]["robust"]["image_auroc"] for r in cell if "standard" in r]
            print(f"{name:22} {mode:8} "
                  + " ".join(f"{spread([x[part][m] for x in q]):>22}" for part in ("clean", "robust")
                             for m in ("image_auroc", "pixel_auroc"))
                  + f" {spread(std) if std else '':>22} {np.mean([r['train_min'] for r in cell]):5.1f}")  # fmt: skip
    if not {"clean", "hardened"} <= set(modes):
        return
    gaps = []
    for name in names:
        c, h = pick(name, "clean"), pick(name, "hardened")
        if not c or not h:
            continue
        mean = lambda rs, part, m: float(np.mean([r["quick"][part][m] for r in rs]))  # noqa: E731
        gap = mean(h, "clean", "image_auroc") - mean(c, "clean", "image_auroc")
        gaps.append(gap)
        gi = mean(h, "robust", "image_auroc") - mean(c, "robust", "image_auroc")
        gp = mean(h, "robust", "pixel_auroc") - mean(c, "robust", "pixel_auroc")
        print(f"METRIC real_{name}_clean_image_gap {gap:+.3f} (target >= -0.10)")
        print(f"METRIC real_{name}_robust_image_gain {gi:+.3f} (target >= +0.30)")
        print(f"METRIC real_{name}_robust_pixel_gain {gp:+.3f} (target >= +0.30)")
    if gaps:
        print(f"METRIC real_mean_clean_image_gap {np.mean(gaps):+.3f} (target >= -0.05)")


if __name__ == "__main__":
    main()
