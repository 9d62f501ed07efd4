"""Builders of complete results.json dicts and audit folders (with gallery PNGs) for report tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pgaudit.results import SCHEMA, metric_entry, write_results

EPS = {"2/255": 2 / 255, "4/255": 4 / 255, "8/255": 8 / 255}


def _metrics(image: float, pixel: float, aupro: float | None, ci: bool = False) -> dict[str, Any]:
    def e(v: float | None, reason: str = "only one class among the test images") -> dict:
        if v is None:
            return metric_entry(None, reason)
        return metric_entry(v, ci=(max(v - 0.05, 0.0), min(v + 0.04, 1.0)) if ci else None)

    return {
        "image_auroc": e(image),
        "pixel_auroc": e(pixel),
        "aupro": e(aupro, "no anomalous pixels survive the resize"),
        "image_f1_max": e(min(image + 0.02, 1.0)),
        "pixel_f1_max": e(pixel * 0.6),
    }


def _op(miss: float, fa: float) -> dict[str, Any]:
    return {"miss_rate": metric_entry(miss), "false_alarm_rate": metric_entry(fa)}


def build_results(
    *,
    model_name: str = "PatchGuard (tiny)",
    strength: float = 0.0,
    category: str = "bottle",
    n_gallery: int = 8,
    gate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete ``pgaudit.results/1`` dict. ``strength`` in [0, 1] makes the model more robust
    (0: a clean-trained baseline that collapses under attack; 1: hardened)."""
    attacks = []
    for objective in ("detection", "localization"):
        for label, eps in EPS.items():
            frac = eps / EPS["8/255"]
            drop = (1 - strength) * frac * 0.75 + strength * frac * 0.12
            img = max(0.97 - drop, 0.05)
            pix = max(0.95 - drop * (1.1 if objective == "localization" else 0.6), 0.05)
            aupro = None if (objective == "localization" and label == "2/255") else pix * 0.9
            attacks.append(
                {
                    "id": f"pgd-linf-{label.replace('/', '_')}-10-{objective}",
                    "attack": "pgd", "library": "art", "norm": "inf", "eps": eps,
                    "eps_label": label, "steps": 10, "step_size": 2.5 * eps / 10, "restarts": 1,
                    "objective": objective, "metrics": _metrics(img, pix, aupro),
                    "operating_point": _op(min(0.05 + drop, 1.0), min(0.05 + drop / 2, 1.0)),
                    "seconds": 3.2 * frac + 0.4, "notes": "",
                }
            )  # fmt: skip
        attacks.append(
            {
                "id": f"fgsm-linf-8_255-{objective}", "attack": "fgsm", "library": "art",
                "norm": "inf", "eps": EPS["8/255"], "eps_label": "8/255", "steps": 1,
                "step_size": EPS["8/255"], "restarts": 1, "objective": objective,
                "metrics": _metrics(0.97 - (1 - strength) * 0.4, 0.95 - (1 - strength) * 0.3, 0.8),
                "operating_point": _op(0.3 * (1 - strength) + 0.05, 0.1),
                "seconds": 0.61, "notes": "single step",
            }
        )  # fmt: skip
    worst = min(attacks, key=lambda a: a["metrics"]["image_auroc"]["value"])
    gallery = [
        {
            "name": f"test/{'good' if i % 2 else 'scratch'}/{i:03d}.png", "label": 0 if i % 2 else 1,
            "clean": f"gallery/{i}_clean.png", "adversarial": f"gallery/{i}_adv.png",
            "perturbation": f"gallery/{i}_pert.png", "ground_truth": f"gallery/{i}_gt.png",
            "clean_map": f"gallery/{i}_map.png", "adversarial_map": f"gallery/{i}_advmap.png",
            "attack_id": worst["id"],
        }
        for i in range(n_gallery)
    ]  # fmt: skip
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "created": "2026-11-29T04:00:00Z",
        "model": {
            "spec": "/home/alice/secret-project/models/hardened.pt", "kind": "patchguard",
            "name": model_name, "preset": "tiny",
            "fingerprint": "sha256:" + "ab12" * 16,
            "config": {"backbone": "vit_tiny", "image_size": 128, "blocks": [12], "dsc_heads": 4},
            "training": {"recipe": "fapa-adv", "epochs": 30, "eps": "8/255", "lr": 0.0008,
                         "data": "/home/alice/secret-project/data/bottle"},
        },
        "data": {
            "name": f"synth/{category}", "layout": "mvtec", "category": category,
            "path": f"/home/alice/secret-project/data/{category}", "image_size": 128,
            "n_test": 40, "n_normal": 20, "n_anomalous": 20, "has_masks": True,
            "defect_types": {"good": 20, "scratch": 10, "crack": 10},
            "fingerprint": "sha256:" + "cd34" * 16,
        },
        "suite": {"name": "quick", "description": "PGD-10 at three budgets and FGSM, both objectives.",
                  "attacks": []},
        "headline_eps": EPS["8/255"], "headline_eps_label": "8/255",
        "clean": {
            "metrics": _metrics(0.97, 0.95, 0.88, ci=True), "threshold": 1.2345,
            "operating_point": _op(0.05, 0.1),
        },
        "attacks": attacks,
        "robust": {
            "eps": EPS["8/255"], "eps_label": "8/255",
            "attack_ids": [a["id"] for a in attacks if a["eps_label"] == "8/255"],
            "metrics": copy.deepcopy(worst["metrics"]),
            "operating_point": copy.deepcopy(worst["operating_point"]),
        },
        "sanity": [
            {"name": "unbounded-budget", "status": "pass",
             "evidence": "image AUROC 0.02 at eps=1.0", "meaning": "attacks reach the model."},
            {"name": "gradient-masking", "status": "warn",
             "evidence": "FGSM stronger than PGD on 1 run", "meaning": "gradients may be masked."},
            {"name": "random-noise", "status": "fail",
             "evidence": "noise lowers AUROC more than PGD", "meaning": "the attack is broken."},
        ],
        "gallery": gallery,
        "meta": {
            "pgaudit_version": "0.1.0", "python": "3.11.7", "torch": "2.14.1", "art": "1.20.1",
            "timm": "1.0.15", "seed": 0, "device": "cpu", "started": "2026-11-29T03:58:00Z",
            "seconds": 83.4,
            "command": "pgaudit attack /home/alice/secret-project/models/hardened.pt "
                       "/home/alice/secret-project/data/bottle --suite quick --out=/tmp/audit",
        },
    }  # fmt: skip
    if gate is not None:
        results["gate"] = gate
    return results


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_gallery(audit_dir: Path, results: dict[str, Any], size: int = 128, seed: int = 0) -> None:
    """Write realistic-ish gallery PNGs (textured images, noisy perturbations, masks, maps)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for row in results["gallery"]:
        base = np.stack([0.5 + 0.3 * np.sin(6 * xx + c) * np.cos(5 * yy) for c in range(3)], -1)
        base = base + rng.normal(0, 0.04, base.shape)
        pert = rng.uniform(-1, 1, base.shape)
        mask = ((xx - 0.6) ** 2 + (yy - 0.4) ** 2 < 0.02).astype(np.uint8) * 255
        heat = np.exp(-((xx - 0.6) ** 2 + (yy - 0.4) ** 2) / 0.02)
        noisy_heat = np.clip(heat + rng.uniform(0, 0.8, heat.shape), 0, 1)

        def u8(a: np.ndarray) -> np.ndarray:
            return (np.clip(a, 0, 1) * 255).astype(np.uint8)

        def colormap(h: np.ndarray) -> np.ndarray:
            return u8(np.stack([h, 1 - np.abs(2 * h - 1), 1 - h], -1))

        _png(audit_dir / row["clean"], u8(base))
        _png(audit_dir / row["adversarial"], u8(base + 8 / 255 * pert))
        _png(audit_dir / row["perturbation"], u8(0.5 + 0.5 * pert))
        _png(audit_dir / row["ground_truth"], mask)
        _png(audit_dir / row["clean_map"], colormap(heat))
        _png(audit_dir / row["adversarial_map"], colormap(noisy_heat))


def make_audit_dir(
    root: Path, results: dict[str, Any] | None = None, name: str = "audit", **kwargs: Any
) -> Path:
    """An audit folder: results.json plus the gallery PNGs it references."""
    results = build_results(**kwargs) if results is None else results
    audit_dir = root / name
    audit_dir.mkdir(parents=True, exist_ok=True)
    write_gallery(audit_dir, results)
    write_results(results, audit_dir / "results.json")
    return audit_dir
