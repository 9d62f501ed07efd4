"""A quick in-memory robustness check of a trained model (tests, benchmarks, tuning).

Composes the toolkit's own parts: the audit's native PGD attack objects
(:mod:`pgaudit.attacks.algorithms`) on the detection and localization objectives, the shared scoring rule and :func:`pgaudit.metrics.evaluate`. Per ε the
image metric uses the per-image worst case over (clean, detection attack, localization attack) and
the pixel metric the per-pixel worst case likewise (the runner's ``robust`` convention). The full
audit with suites, ART attacks and results.json is ``pgaudit attack``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from pgaudit.attacks.algorithms import make_attack
from pgaudit.attacks.execute import Attacker, BatchTarget
from pgaudit.attacks.suites import AttackSpec
from pgaudit.data.dataset import AnomalyDataset
from pgaudit.data.grid import mask_to_grid
from pgaudit.data.records import Sample
from pgaudit.metrics import evaluate, worst_case_maps, worst_case_scores
from pgaudit.models.adapters import as_detector
from pgaudit.models.detector import Detector, attack_mode


def _load(samples: Sequence[Sample], size: int) -> tuple[Tensor, Tensor, Tensor]:
    data = AnomalyDataset(samples, size)
    items = [data[i] for i in range(len(data))]
    images = torch.stack([it["image"] for it in items])
    labels = torch.tensor([it["label"] for it in items])
    masks = torch.stack([it["mask"] for it in items])
    return images, labels, masks


@torch.no_grad()
def _score(model: Detector, images: Tensor, size: int) -> tuple[np.ndarray, np.ndarray]:
    output = model.predict(images)
    return (
        model.scores(output).float().cpu().numpy(),
        model.anomaly_map(output.logits, size).float().cpu().numpy(),
    )


def robustness(
    model: nn.Module,
    samples: Sequence[Sample],
    *,
    eps_list: Sequence[float] = (8 / 255,),
    steps: int = 10,
    objectives: Sequence[str] = ("detection", "localization"),
    batch_size: int = 32,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, float | None]]:
    """``{"clean": {"image_auroc", "pixel_auroc"}, "<eps>": {...}}`` under PGD-``steps`` (L∞).

    ``model`` runs in :func:`~pgaudit.models.detector.attack_mode` (restored afterwards)."""
    size = int(model.image_size)  # type: ignore[arg-type]
    images, labels, masks = _load(samples, size)
    detector = as_detector(model.to(device))
    grid: tuple[int, int] | None = None
    attacker = Attacker(detector, device=device)
    attacks = {
        (e, o): make_attack(AttackSpec("pgd", "native", "inf", e, steps, o))
        for e in eps_list
        for o in objectives
    }
    with attack_mode(detector):
        clean_s, clean_m = [], []
        adv: dict[tuple[float, str], tuple[list[np.ndarray], list[np.ndarray]]] = {
            (e, o): ([], []) for e in eps_list for o in objectives
        }
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            y = labels[start : start + batch_size].to(device)
            m = masks[start : start + batch_size].to(device)
            s, mp = _score(detector, x, size)
            clean_s.append(s)
            clean_m.append(mp)
            if grid is None:
                with torch.no_grad():
                    grid = tuple(detector(x[:1]).shape[-2:])  # type: ignore[assignment]
            grid_m = mask_to_grid(m, grid)  # type: ignore[arg-type]
            for (eps, objective), (s_list, m_list) in adv.items():
                rng = np.random.RandomState((seed * 100003 + start) % 2**32)
                target = BatchTarget(y, grid_m)
                x_adv = attacks[(eps, objective)].perturb(attacker, x, target, rng)
                s, mp = _score(detector, x_adv, size)
                s_list.append(s)
                m_list.append(mp)
    y_np, gt = labels.numpy(), masks.numpy()
    cs, cm = np.concatenate(clean_s), np.concatenate(clean_m)
    out: dict[str, dict[str, float | None]] = {"clean": _metrics(y_np, cs, gt, cm)}
    for eps in eps_list:
        scores = [np.concatenate(adv[(eps, o)][0]) for o in objectives]
        maps = [np.concatenate(adv[(eps, o)][1]) for o in objectives]
        out[f"{eps:.6f}"] = _metrics(
            y_np, worst_case_scores(y_np, cs, *scores), gt, worst_case_maps(gt, cm, *maps)
        )
    return out


def _metrics(
    labels: np.ndarray, scores: np.ndarray, masks: np.ndarray, maps: np.ndarray
) -> dict[str, float | None]:
    result = evaluate(labels, scores, masks, maps)
    return {k: result[k].value for k in ("image_auroc", "pixel_auroc")}
