"""Export parity: does the file that ships score like the model it came from, clean and attacked?

:func:`export_parity` runs the source detector and its export on the same test images and
measures

* **clean agreement** of the image score and of the pixel map: max and median ``|Δ|`` relative to
  the source's range over the test set (score: max − min of its image scores; map: of its pixel
  maps), Spearman rank correlation of the image scores, and both models' image / pixel AUROC
  (when both give logits of one shape, the source's map rule makes both pixel maps: the export
  is to reproduce the source's output);
* **robustness agreement**: PGD (native, L∞, detection objective) crafted white-box on the
  source, the same adversarial images scored by both: the source's robust image AUROC against
  the export's under transfer of those images.

``pgaudit parity SOURCE EXPORTED DATA`` prints it, writes ``parity.json`` (schema
``pgaudit.parity/1``) and exits 1 when the worst clean gap exceeds ``--max-gap``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pgaudit import metrics
from pgaudit.agreement import (
    DEFAULT_MAX_GAP,
    Agreement,
    image_auroc_or_none,
    map_agreement,
    score_agreement,
    worst_gap,
)
from pgaudit.attacks.execute import Attacker, BatchTarget
from pgaudit.attacks.suites import AttackSpec
from pgaudit.attacks.testset import iterate_batches, prepare_test_set
from pgaudit.checks import check_at_least
from pgaudit.errors import ParameterError
from pgaudit.models.adapters import as_detector
from pgaudit.models.detector import Detector, attack_mode

SCHEMA = "pgaudit.parity/1"


@dataclass(frozen=True)
class ParityReport:
    """What :func:`export_parity` measured (``robust_*``: under the source's PGD images)."""

    images: int
    score: Agreement
    pixel_map: Agreement | None
    attack: str
    robust_source_auroc: float | None
    robust_exported_auroc: float | None

    @property
    def worst_gap(self) -> float:
        """The largest clean max-gap, score or map (what ``--max-gap`` bounds)."""
        return worst_gap(self.score, self.pixel_map)

    @property
    def robust_gap(self) -> float | None:
        if self.robust_source_auroc is None or self.robust_exported_auroc is None:
            return None
        return self.robust_exported_auroc - self.robust_source_auroc

    def to_json(self, **extra: Any) -> dict[str, Any]:
        """``parity.json``: schema, the measurements, ``worst_gap``, ``robust_gap``, ``extra``."""
        return {
            "schema": SCHEMA, **extra, "images": self.images, "score": self.score.to_json(),
            "pixel_map": None if self.pixel_map is None else self.pixel_map.to_json(),
            "attack": self.attack, "robust_source_auroc": self.robust_source_auroc,
            "robust_exported_auroc": self.robust_exported_auroc, "worst_gap": self.worst_gap,
            "robust_gap": self.robust_gap,
        }  # fmt: skip


__all__ = ["DEFAULT_MAX_GAP", "ParityReport", "export_parity"]


def export_parity(
    source: Detector,
    exported: Detector,
    category_or_dataset: Any,
    *,
    eps: float = 8 / 255,
    steps: int = 10,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    max_images: int | None = None,
    seed: int = 0,
) -> ParityReport:
    """Clean and robustness agreement of ``exported`` with ``source`` (see the module doc)."""
    source, exported = as_detector(source), as_detector(exported)
    if int(source.image_size) != int(exported.image_size):
        raise ParameterError(
            f"the source takes {source.image_size} px images, the export {exported.image_size} "
            "px: compare an export with the model it was exported from.",
            "exported",
        )
    check_at_least("steps", steps)
    check_at_least("batch_size", batch_size)
    device = torch.device(device)
    size = int(source.image_size)
    test = prepare_test_set(category_or_dataset, size, max_images, seed)
    spec = AttackSpec("pgd", "native", "inf", eps, steps, "detection")
    n = len(test)
    out = {key: np.empty(n, np.float32) for key in ("src", "exp", "src_adv", "exp_adv")}
    maps_src = np.empty((n, size, size), np.float32)
    maps_exp = np.empty_like(maps_src)
    masks = np.zeros((n, size, size), np.uint8)
    with attack_mode(source.to(device)), attack_mode(exported.to(device)):
        attacker = Attacker(source, input_shape=(3, size, size), device=device, seed=seed)
        judge = Attacker(exported, device=device, seed=seed)
        batches = list(iterate_batches(test, batch_size, device))
        for pos, images, _, batch_masks in batches:
            s_out, e_out = attacker.output(images), judge.output(images)
            out["src"][pos] = source.scores(s_out).float().cpu().numpy()
            out["exp"][pos] = exported.scores(e_out).float().cpu().numpy()
            with torch.no_grad():
                maps_src[pos] = source.anomaly_map(s_out.logits, size).float().cpu().numpy()
                # the same logits shape: the source's map rule for both (it is the source's
                # output the export reproduces); else each model's own rule
                rule = source if e_out.logits.shape == s_out.logits.shape else exported
                maps_exp[pos] = rule.anomaly_map(e_out.logits, size).float().cpu().numpy()
            masks[pos] = (batch_masks >= 0.5).cpu().numpy()
        labels = test.labels
        try:
            threshold = metrics.threshold_at_tpr(labels, out["src"])
        except metrics.UndefinedMetricError:
            threshold = float(np.median(out["src"]))
        for i, (pos, images, batch_labels, _) in enumerate(batches):
            adv, s_adv = attacker.run(spec, images, BatchTarget(batch_labels, None, threshold), i)
            out["src_adv"][pos] = source.scores(s_adv).float().cpu().numpy()
            out["exp_adv"][pos] = exported.scores(judge.output(adv)).float().cpu().numpy()
    score = score_agreement(labels, out["src"], out["exp"])
    pixel = map_agreement(masks, maps_src, maps_exp) if masks[labels == 1].any() else None
    return ParityReport(
        n, score, pixel, spec.id,
        image_auroc_or_none(labels, out["src_adv"]),
        image_auroc_or_none(labels, out["exp_adv"]),
    )  # fmt: skip
