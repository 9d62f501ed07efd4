"""Run an attack suite over a test set and write the audit folder.

:func:`run_audit` streams the test set in batches through every attack of a suite, re-scores
each adversarial batch with a plain forward pass, and writes:

* ``results.json`` (schema ``pgaudit.results/1``, see :mod:`pgaudit.results`);
* ``scores.npz``: ``labels``, ``names`` (paths relative to the data root), ``clean.image_scores``,
  ``<attack id>.image_scores`` for every attack and ``robust.image_scores``;
* with ``save_maps``: ``maps.npz``: ``masks`` (uint8 {0, 1}), ``clean.maps`` and ``robust.maps``
  (float16, at mask resolution), ``labels``, ``names``;
* ``gallery/``: PNGs of a few test images of both classes (see :mod:`pgaudit.attacks.gallery`).

Logits stay at grid resolution until the metrics; pixel maps are upsampled and smoothed in chunks.
``robust`` is the per-example worst case (AutoAttack's convention) over the clean images and every
L∞ attack at the headline ε: per image the highest score (normal) or the lowest (anomalous), per
pixel likewise by the ground truth.

Under ``torch.distributed`` (``pgaudit attack --nproc N`` or torchrun) the batches are shared out
round-robin (:func:`pgaudit.attacks.testset.shard_batches`; batch ``b`` and its attack seeds are
those of a single process), each worker attacks its own, and scores, logits, masks and gallery
images are gathered on rank 0, which alone computes the metrics, runs the sanity checks, prints
and writes files: the results equal a single-process run's.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn
from torch.utils.data import Subset

from pgaudit import __version__, metrics
from pgaudit.attacks.adaptive import adaptive_note
from pgaudit.attacks.algorithms import make_attack
from pgaudit.attacks.eps import eps_label
from pgaudit.attacks.execute import Attacker, BatchTarget
from pgaudit.attacks.gallery import write_gallery_item
from pgaudit.attacks.outputs import staged_folder
from pgaudit.attacks.sanity import (
    NO_GRADIENT,
    run_sanity_checks,
    sanity_budget,
    sanity_positions,
)
from pgaudit.attacks.suites import AttackSpec, Suite, build_suite, gradient_free_plan
from pgaudit.attacks.testset import AuditSet, iterate_batches, prepare_test_set, shard_batches
from pgaudit.checks import check_at_least, check_out_folder, check_seed
from pgaudit.data.grid import mask_to_grid
from pgaudit.devices import resolve_device
from pgaudit.errors import ParameterError, PgauditError
from pgaudit.models.adapters import as_detector, probe
from pgaudit.models.checkpoint import weights_fingerprint
from pgaudit.models.detector import Detector, attack_mode
from pgaudit.precision import resolve_precision
from pgaudit.results import (
    DEFAULT_BOOTSTRAP,
    AttackResult,
    AuditResults,
    CleanSection,
    MetricValue,
    RobustSection,
    SanityCheck,
    Section,
    metric_values,
    write_results,
)
from pgaudit.runtime import distributed

#: Suites that run the gradient-masking checklist (pgaudit.attacks.sanity).
SANITY_SUITES = ("standard", "full", "auto")
#: Budget slack when checking that adversarial images respect ε (float32 rounding).
BUDGET_TOLERANCE = 1e-5
ROBUST_NOTES = (
    "Per-example worst case over the clean images and every L-inf attack at the headline eps: per "
    "normal image the highest score, per anomalous image the lowest; per pixel the highest "
    "(normal pixels) or lowest (anomalous pixels) map value."
)


# ------------------------------------------------------------------------------------------------
# small helpers


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, dist in (
        ("torch", "torch"),
        ("art", "adversarial-robustness-toolbox"),
        ("timm", "timm"),
        ("numpy", "numpy"),
    ):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _progress(enabled: bool, console: Console | None) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        disable=not enabled,
    )


def _is_headline(spec: AttackSpec, headline: float) -> bool:
    return spec.norm == "inf" and abs(spec.eps - headline) < 1e-9


def gallery_positions(labels: np.ndarray, size: int, seed: int) -> list[int]:
    """Up to ``size`` test positions, half normal and half anomalous where possible."""
    rng = np.random.default_rng(seed + 1)
    normal = list(rng.permutation(np.flatnonzero(labels == 0)))
    anomalous = list(rng.permutation(np.flatnonzero(labels == 1)))
    take_anom = anomalous[: max(size // 2, size - len(normal))]
    take_norm = normal[: size - len(take_anom)]
    return sorted(int(i) for i in take_norm + take_anom)


# ------------------------------------------------------------------------------------------------
# the passes over the test set


@dataclass
class CleanPass:
    """Clean scores and logits, ground truth, and the operating threshold."""

    scores: np.ndarray
    logits: np.ndarray
    masks: np.ndarray
    input_shape: tuple[int, ...]
    threshold: float | None

    @property
    def grid(self) -> tuple[int, int]:
        return (int(self.logits.shape[1]), int(self.logits.shape[2]))


@dataclass
class AttackRecord:
    """One attack's per-image results (scores, logits) and measured budget use."""

    spec: AttackSpec
    scores: np.ndarray
    logits: np.ndarray
    seconds: float = 0.0
    max_linf: float = 0.0
    max_l2: float = 0.0
    out_of_range: float = 0.0
    gallery_images: dict[int, np.ndarray] = field(default_factory=dict)
    #: A transfer attack's image scores of the surrogate it was crafted on (export parity).
    source_scores: np.ndarray | None = None

    def measure(self, adv: torch.Tensor, images: torch.Tensor) -> None:
        """Track the largest perturbation and any pixel outside [0, 1] (never assumed)."""
        delta = (adv - images).flatten(1)
        self.max_linf = max(self.max_linf, float(delta.abs().amax()))
        self.max_l2 = max(self.max_l2, float(delta.norm(dim=1).amax()))
        self.out_of_range = max(self.out_of_range, float((adv - adv.clamp(0, 1)).abs().amax()))


class _Audit:
    """State shared by the passes of one audit: detector, test set, device, batching."""

    def __init__(
        self,
        detector: Detector,
        test: AuditSet,
        *,
        device: torch.device,
        batch_size: int,
        seed: int,
        bootstrap: int,
        bar: Progress,
        surrogate: Detector | None = None,
        precision: str = "fp32",
    ) -> None:
        self.detector = detector
        self.precision = precision  # of the attacks' gradient passes; scores are fp32
        self.test = test
        self.device = device
        self.batch_size = batch_size
        self.seed = seed
        self.bootstrap = bootstrap
        self.bar = bar
        self.surrogate = surrogate
        self._transfer: tuple[Attacker, tuple[int, ...]] | None = None
        self.size = int(detector.image_size)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        shards = shard_batches(len(test), batch_size, self.rank, self.world)
        #: the test positions this worker processes (all of them in a single process)
        self.own = np.array([p for batch in shards for p in batch], dtype=np.int64)

    @property
    def is_main(self) -> bool:
        """True on the worker that computes metrics and writes files (rank 0)."""
        return self.rank == 0

    def batches(self) -> Iterator[tuple[slice, Tensor, Tensor, Tensor]]:
        """``(positions, images, labels, masks)`` per batch of this worker, in test-set order."""
        return iterate_batches(
            self.test, self.batch_size, self.device, rank=self.rank, world_size=self.world
        )

    def clean_pass(self) -> CleanPass:
        n, labels = len(self.test), self.test.labels
        masks = np.zeros((n, self.size, self.size), dtype=np.uint8)
        scores = np.empty(n, dtype=np.float32)
        logits_all: np.ndarray | None = None
        input_shape: tuple[int, ...] = (3, self.size, self.size)
        task = self.bar.add_task("clean", total=len(self.own))
        with torch.no_grad():
            for pos, images, _, batch_masks in self.batches():
                output = self.detector.predict(images)
                logits = output.logits
                if logits.ndim != 3:
                    raise PgauditError(
                        f"the detector returned logits of shape {tuple(logits.shape)}: a detector "
                        "must map [B,3,S,S] images to [B,h,w] anomaly logits."
                    )
                if batch_masks.shape[1:] != images.shape[2:]:
                    raise PgauditError(
                        f"the dataset's masks are {tuple(batch_masks.shape[1:])} but its images "
                        f"{tuple(images.shape[2:])}: masks must have the size of their images."
                    )
                if logits_all is None:
                    logits_all = np.empty((n, *logits.shape[1:]), dtype=np.float32)
                    input_shape = tuple(images.shape[1:])
                logits_all[pos] = logits.float().cpu().numpy()
                scores[pos] = self.detector.scores(output).float().cpu().numpy()
                masks[pos] = (batch_masks >= 0.5).cpu().numpy()
                self.bar.advance(task, images.shape[0])
        assert logits_all is not None
        if self.test.has_masks is None:  # generic datasets: decide from the masks themselves
            own = self.own[labels[self.own] == 1]
            found = bool(masks[own].any()) if len(own) else False
            self.test.has_masks = any(distributed.all_gather(found))
        if self.world > 1:  # every worker needs all scores (threshold); rank 0 the rest too
            own = self.own
            for pos, part in distributed.all_gather((own, scores[own])):
                scores[pos] = part
            gathered = distributed.gather_to_main((own, logits_all[own], masks[own]))
            for pos, part_logits, part_masks in gathered or []:
                logits_all[pos], masks[pos] = part_logits, part_masks
        try:
            threshold: float | None = metrics.threshold_at_tpr(labels, scores)
        except metrics.UndefinedMetricError:
            threshold = None
        return CleanPass(scores, logits_all, masks, input_shape, threshold)

    def attack(
        self,
        attacker: Attacker,
        spec: AttackSpec,
        clean: CleanPass,
        keep: list[int],
    ) -> AttackRecord:
        """Run ``spec`` over the test set; keep the adversarial images at positions ``keep``."""
        n = len(self.test)
        rec = AttackRecord(spec, np.empty(n, np.float32), np.empty_like(clean.logits))
        # Without anomalous clean images there is no operating threshold: decide at the median.
        threshold = (
            clean.threshold if clean.threshold is not None else float(np.median(clean.scores))
        )
        attack = make_attack(spec)
        crafter, grid = (attacker, clean.grid) if not spec.transfer else self.transfer_attacker()
        task = self.bar.add_task(spec.id, total=len(self.own))
        start = time.perf_counter()
        for pos, images, labels, masks in self.batches():
            grid_masks = mask_to_grid(masks, grid) if self.test.has_masks else None
            target = BatchTarget(labels, grid_masks, threshold)
            batch_index = pos.start // self.batch_size  # the same seeds for any number of workers
            adv, output = crafter.run(attack, images, target, batch_index=batch_index)
            if spec.transfer:  # crafted on the surrogate, judged by the detector
                if rec.source_scores is None:
                    rec.source_scores = np.empty(n, np.float32)
                rec.source_scores[pos] = crafter.detector.scores(output).float().cpu().numpy()
                output = attacker.output(adv)
            rec.logits[pos] = output.logits.float().cpu().numpy()
            rec.scores[pos] = self.detector.scores(output).float().cpu().numpy()
            rec.measure(adv, images)
            for p in keep:
                if pos.start <= p < pos.stop:
                    rec.gallery_images[p] = adv[p - pos.start].cpu().numpy()
            self.bar.advance(task, images.shape[0])
        rec.seconds = time.perf_counter() - start
        if self.world > 1:
            self._gather_record(rec)
        return rec

    def transfer_attacker(self) -> tuple[Attacker, tuple[int, ...]]:
        """The attacker that crafts transfer attacks on the surrogate, and the surrogate's grid
        (its localization objective needs the masks on that grid)."""
        if self._transfer is None:
            surrogate = self.surrogate
            assert surrogate is not None
            if int(surrogate.image_size) != self.size:
                raise ParameterError(
                    f"surrogate: it expects {surrogate.image_size} px images, the detector "
                    f"{self.size} px; pass a surrogate of the detector's input size.",
                    "surrogate",
                )
            found = probe(surrogate, "the surrogate", self.device)
            if not found["differentiable"]:
                raise ParameterError(
                    "surrogate: it gives no gradient w.r.t. its input either, so nothing can be "
                    "crafted on it; pass a differentiable model (e.g. the one the file was "
                    "exported from).",
                    "surrogate",
                )
            side = self.size
            crafter = Attacker(
                surrogate, input_shape=(3, side, side), cells=int(np.prod(found["patch_grid"])),
                device=self.device, seed=self.seed, precision=self.precision,
            )  # fmt: skip
            self._transfer = (crafter, tuple(found["patch_grid"]))
        return self._transfer

    def _gather_record(self, rec: AttackRecord) -> None:
        """Collect the other workers' rows, budget use and gallery images into ``rec`` on rank 0."""
        own = self.own
        mine = (
            own, rec.scores[own], rec.logits[own], rec.gallery_images,
            (rec.max_linf, rec.max_l2, rec.out_of_range, rec.seconds),
            None if rec.source_scores is None else rec.source_scores[own],
        )  # fmt: skip
        for pos, scores, logits, gallery, budget, source in distributed.gather_to_main(mine) or []:
            rec.scores[pos], rec.logits[pos] = scores, logits
            if source is not None and rec.source_scores is not None:
                rec.source_scores[pos] = source
            rec.gallery_images.update(gallery)
            rec.max_linf, rec.max_l2 = max(rec.max_linf, budget[0]), max(rec.max_l2, budget[1])
            rec.out_of_range = max(rec.out_of_range, budget[2])
            rec.seconds = max(rec.seconds, budget[3])

    def parity_section(
        self, clean: CleanPass, clean_maps: np.ndarray | None, records: list[AttackRecord]
    ) -> dict[str, Any]:
        """Export parity of the detector (an export) with the surrogate it came from: the
        surrogate's clean pass on every test image (rank 0 only), against the audit's, and each
        transfer attack's AUROC on the surrogate vs on the detector (results.json ``parity``)."""
        from pgaudit.agreement import (
            image_auroc_or_none,
            map_agreement,
            score_agreement,
            worst_gap,
        )

        assert self.surrogate is not None
        ref = self.surrogate
        ref = ref.as_shipped() if hasattr(ref, "as_shipped") else ref  # anomalib: as exported
        n = len(self.test)
        scores = np.empty(n, np.float32)
        logits: np.ndarray | None = None
        with torch.no_grad(), attack_mode(ref):
            for pos, images, _, _ in iterate_batches(self.test, self.batch_size, self.device):
                out = ref.predict(images)
                scores[pos] = ref.scores(out).float().cpu().numpy()
                if logits is None:
                    logits = np.empty((n, *out.logits.shape[1:]), np.float32)
                logits[pos] = out.logits.float().cpu().numpy()
        assert logits is not None
        pixel = None
        if clean_maps is not None:  # one logits shape: the source's map rule makes both maps
            same = logits.shape[1:] == clean.logits.shape[1:]
            exported = self.maps(clean.logits, detector=ref) if same else clean_maps
            pixel = map_agreement(clean.masks, self.maps(logits, detector=ref), exported)
        labels = self.test.labels
        score = score_agreement(labels, scores, clean.scores)
        robust = []
        for rec in records:
            if rec.source_scores is None:
                continue
            on_source = image_auroc_or_none(labels, rec.source_scores)
            on_export = image_auroc_or_none(labels, rec.scores)
            gap = None if on_source is None or on_export is None else on_export - on_source
            robust.append({"attack": rec.spec.id, "source_image_auroc": on_source,
                           "exported_image_auroc": on_export, "gap": gap})  # fmt: skip
        return {
            "source": getattr(ref, "name", type(ref).__name__), "images": n,
            "score": score.to_json(), "pixel_map": None if pixel is None else pixel.to_json(),
            "worst_gap": worst_gap(score, pixel), "robust": robust,
        }  # fmt: skip

    def maps(
        self, logits: np.ndarray, chunk: int = 32, detector: Detector | None = None
    ) -> np.ndarray:
        """Pixel maps ``[N, S, S]`` (float32) from stored logits, upsampled chunk by chunk (by
        ``detector``'s map rule; default: the audited detector's)."""
        rule = self.detector if detector is None else detector
        out = np.empty((logits.shape[0], self.size, self.size), dtype=np.float32)
        with torch.no_grad():
            for i in range(0, logits.shape[0], chunk):
                part = torch.from_numpy(logits[i : i + chunk]).to(self.device)
                out[i : i + chunk] = rule.anomaly_map(part, self.size).float().cpu().numpy()
        return out

    def robust_maps(
        self, clean: CleanPass, clean_maps: np.ndarray, head: list[AttackRecord]
    ) -> np.ndarray:
        """Per-pixel worst case over the clean map and the headline attacks' maps, by chunk."""
        out = np.empty_like(clean_maps)
        for i in range(0, len(self.test), self.batch_size):
            sl = slice(i, i + self.batch_size)
            parts = [self.maps(r.logits[sl]) for r in head]
            out[sl] = metrics.worst_case_maps(clean.masks[sl], clean_maps[sl], *parts)
        return out

    def section(
        self, scores: np.ndarray, maps: np.ndarray | None, clean: CleanPass
    ) -> dict[str, dict[str, MetricValue]]:
        """``metrics`` and ``operating_point`` (at the clean threshold) of one set of scores, as
        :class:`~pgaudit.results.Section` fields."""
        masks = clean.masks if self.test.has_masks else None
        labels = self.test.labels
        found = metrics.evaluate(
            labels, scores, masks, maps, bootstrap=self.bootstrap, seed=self.seed
        )
        point = metrics.operating_point(labels, scores, clean.threshold)
        return {"metrics": metric_values(found), "operating_point": metric_values(point)}


# ------------------------------------------------------------------------------------------------
# the audit


def check_audit_options(
    *,
    max_images: int | None = None,
    batch_size: int = 16,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    out_dir: str | Path | None = None,
) -> None:
    """Refuse bad :func:`run_audit` settings before anything is loaded or attacked."""
    for name, value in (("max_images", max_images), ("batch_size", batch_size)):
        if value is not None:
            check_at_least(name, value)
    if bootstrap < 0:
        raise ParameterError(
            f"bootstrap {bootstrap} must be 0 (no intervals) or more.", "bootstrap"
        )
    check_seed(seed)
    if out_dir is not None:
        check_out_folder(out_dir, "out_dir")


def run_audit(
    detector: Detector,
    category_or_dataset: Any,
    suite: Suite | str,
    *,
    out_dir: str | Path,
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_images: int | None = None,
    save_maps: bool = False,
    model_info: dict[str, Any] | None = None,
    data_info: dict[str, Any] | None = None,
    progress: bool = True,
    batch_size: int = 16,
    gallery_size: int = 6,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    surrogate: Detector | None = None,
    command: str | None = None,
    console: Console | None = None,
    precision: str = "fp32",
) -> AuditResults | None:
    """Attack ``detector`` on the test images with ``suite``; write and return the results.

    ``category_or_dataset``: a ``pgaudit.data.Category`` (its test split is used) or a dataset of
    items ``{"image", "label", "mask", ...}``. ``suite``: a :class:`Suite` or a suite name.
    The detector is put in eval mode with frozen weights for the run; both are restored after.
    ``model_info`` / ``data_info`` fill the ``model`` / ``data`` sections (spec, fingerprint, …).
    ``bootstrap``: resamples for the 95 % intervals of every metric (0: none), as the CLI.
    ``surrogate``: a smooth detector whose adversarial images are transferred to ``detector`` in
    the sanity checks of the standard and full suites (``transfer-not-stronger``; skipped
    without one); for a detector without gradients (an ONNX/OpenVINO export) each white-box
    attack also runs as a transfer attack crafted on it
    (:func:`~pgaudit.attacks.suites.gradient_free_plan`).
    ``precision``: of the attacks' gradient passes (``fp32``, ``bf16``, ``fp16`` on CUDA, ``auto``:
    :mod:`pgaudit.precision`); every score is recomputed in fp32 on the final adversarial images.
    Inside a ``torch.distributed`` process group the test batches are shared among the workers;
    rank 0 returns (and writes) the results, the other ranks return None.
    """
    started, t_start = _now(), time.perf_counter()
    out_dir = Path(out_dir)
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    image_size = int(detector.image_size)
    if isinstance(suite, str):
        suite = build_suite(suite, image_size=image_size)
    for spec in suite.attacks:  # a bad attack fails here, before the clean pass
        make_attack(spec)
    check_audit_options(
        max_images=max_images, batch_size=batch_size, bootstrap=bootstrap, seed=seed,
        out_dir=out_dir,
    )  # fmt: skip
    torch.manual_seed(seed)
    test = prepare_test_set(category_or_dataset, image_size, max_images, seed)
    workers, n_batches = distributed.world_size(), -(-len(test) // batch_size)
    if workers > n_batches:
        raise ParameterError(
            f"nproc {workers}: the {len(test)} test images make {n_batches} batch(es) of "
            f"batch_size {batch_size} but every worker needs one; use a smaller batch_size or "
            "fewer workers.",
            "nproc", "batch_size", "batch_size",
        )  # fmt: skip
    main = distributed.is_main()
    durations = {"prepare": time.perf_counter() - t_start}

    attacked = as_detector(detector).to(device)  # a plain module or callable: wrapped
    if surrogate is not None:
        surrogate = as_detector(surrogate).to(device)
    with staged_folder(out_dir, active=main) as stage:  # out_dir changes only on success
        with attack_mode(attacked), attack_mode(surrogate), \
                _progress(progress and main, console) as bar:  # fmt: skip
            audit = _Audit(
                attacked, test, device=device, batch_size=batch_size, seed=seed,
                bootstrap=bootstrap, bar=bar, surrogate=surrogate, precision=precision,
            )  # fmt: skip
            body = _run(audit, suite, stage, save_maps, gallery_size, durations)
        if body is None:  # a worker other than rank 0: rank 0 has the results
            return None
        durations["total"] = time.perf_counter() - t_start
        meta = {
            "pgaudit_version": __version__, "python": platform.python_version(), **_versions(),
            "seed": seed, "device": str(device), "precision": precision,
            "batch_size": batch_size, "workers": workers, "bootstrap": bootstrap,
            "started": started, "seconds": durations["total"],
            "durations": {k: round(v, 3) for k, v in durations.items()}, "command": command,
        }  # fmt: skip
        results = AuditResults(
            created=_now(),
            model=_model_section(detector, model_info),
            data=_data_section(test, image_size, max_images, data_info),
            **body,
            meta=meta,
        )
        write_results(results, stage / "results.json")
    return results


def _run(
    audit: _Audit,
    suite: Suite,
    out_dir: Path,
    save_maps: bool,
    gallery_size: int,
    durations: dict[str, float],
) -> dict[str, Any] | None:
    """Clean pass, attacks, metrics, files: the :class:`AuditResults` fields between ``data``
    and ``meta`` (``None`` on workers other than rank 0, once they have handed over their
    share)."""
    test, headline = audit.test, suite.headline_eps

    t0 = time.perf_counter()
    clean = audit.clean_pass()
    has_masks = bool(test.has_masks)
    durations["clean"] = time.perf_counter() - t0

    specs = [s for s in suite.attacks if has_masks or s.objective != "localization"]
    skipped = [
        {"id": s.id, "reason": "no ground-truth masks for the anomalous test images"}
        for s in suite.attacks
        if s not in specs
    ]
    gradients = probe(audit.detector, "the detector", audit.device)["differentiable"]
    if not gradients:  # black-box (NES, Square) and transfer attacks instead, and say so
        specs, white = gradient_free_plan(specs, surrogate=audit.surrogate is not None)
        instead = "NES (black-box)" + (
            " and transfer from the surrogate" if audit.surrogate is not None else
            "; pass --surrogate to add transfer attacks")  # fmt: skip
        skipped += [{"id": s.id, "reason": f"{NO_GRADIENT}; run as {instead}"} for s in white]
    t0 = time.perf_counter()
    attacker = Attacker(
        audit.detector, input_shape=clean.input_shape, cells=int(np.prod(clean.grid)),
        device=audit.device, seed=audit.seed, precision=audit.precision,
    )  # fmt: skip
    keep = gallery_positions(test.labels, gallery_size, audit.seed)
    records = [
        audit.attack(attacker, s, clean, keep if _is_headline(s, headline) else []) for s in specs
    ]
    durations["attacks"] = time.perf_counter() - t0
    if not audit.is_main:
        return None

    t0 = time.perf_counter()
    clean_maps = audit.maps(clean.logits) if has_masks else None
    clean_section = CleanSection(
        **audit.section(clean.scores, clean_maps, clean), threshold=clean.threshold
    )
    attacks = []
    for rec in records:
        maps = audit.maps(rec.logits) if has_masks else None
        attacks.append(
            rec.spec.result(
                **audit.section(rec.scores, maps, clean),
                seconds=round(rec.seconds, 3),
                budget={"max_linf": rec.max_linf, "max_l2": rec.max_l2},
            )  # fmt: skip
        )
        del maps
    head = [r for r in records if _is_headline(r.spec, headline)]
    robust_scores = metrics.worst_case_scores(test.labels, clean.scores, *[r.scores for r in head])
    robust_maps = audit.robust_maps(clean, clean_maps, head) if clean_maps is not None else None
    robust = RobustSection(
        **audit.section(robust_scores, robust_maps, clean),
        eps=headline,
        eps_label=eps_label(headline),
        attack_ids=tuple(r.spec.id for r in head),
        notes=ROBUST_NOTES,
    )
    durations["metrics"] = time.perf_counter() - t0

    _write_arrays(out_dir, audit, clean, records, robust_scores, clean_maps, robust_maps, save_maps)
    gallery = _write_gallery(out_dir, audit, clean, records, attacks, keep)
    sanity = [budget_check(records)]
    if suite.name in SANITY_SUITES:
        t0 = time.perf_counter()
        sanity += _sanity_checks(audit, suite, clean_section, attacks, headline, gradients)
        durations["sanity"] = time.perf_counter() - t0
    parity = None
    if not gradients and audit.surrogate is not None:  # an export and the model it came from
        t0 = time.perf_counter()
        parity = audit.parity_section(clean, clean_maps, records)
        durations["parity"] = time.perf_counter() - t0
    return {
        "parity": parity,
        "suite": suite.info(specs, skipped),
        "headline_eps": headline,
        "headline_eps_label": eps_label(headline),
        "clean": clean_section,
        "attacks": tuple(attacks),
        "robust": robust,
        "sanity": tuple(sanity),
        "adaptive": adaptive_note(audit.detector, _first_image(audit)),
        "gallery": tuple(gallery),
    }


def _first_image(audit: _Audit) -> torch.Tensor:
    """The first test image as a batch of one (for the gradient check of ``adaptive``)."""
    item = audit.test.dataset[audit.test.indices[0]]
    return torch.as_tensor(item["image"]).float().unsqueeze(0).to(audit.device)


def _sanity_checks(
    audit: _Audit,
    suite: Suite,
    clean_section: Section,
    attacks: list[AttackResult],
    headline: float,
    gradients: bool = True,
) -> list[SanityCheck]:
    """The gradient-masking checklist (pgaudit.attacks.sanity) on a balanced subset of the test images."""
    test = audit.test
    positions = sanity_positions(test.labels, sanity_budget(suite.name).n_images, audit.seed)
    items = [test.dataset[test.indices[int(p)]] for p in positions]
    images = torch.stack([torch.as_tensor(it["image"]) for it in items]).float()
    return run_sanity_checks(
        audit.detector, images, test.labels[positions], attacks, clean=clean_section,
        eps=headline, surrogate=audit.surrogate, seed=audit.seed, device=audit.device,
        budget=suite.name, precision=audit.precision, gradients=gradients,
    )  # fmt: skip


def _model_section(detector: Detector, model_info: dict[str, Any] | None) -> dict[str, Any]:
    model: dict[str, Any] = {
        "kind": type(detector).__name__.lower(),
        "name": type(detector).__name__,
    }
    card = as_detector(detector).card().info
    model["name"] = str(card.get("architecture", model["name"]))
    if isinstance(detector, Detector):  # one of pgaudit's own (or an adapter): it has a card
        model["preset"] = card.get("preset")
    model.update(model_info or {})
    if not model.get("fingerprint"):
        model["fingerprint"] = (
            weights_fingerprint(detector) if isinstance(detector, nn.Module) else None
        )
    return model


def _data_section(
    test: AuditSet, image_size: int, max_images: int | None, data_info: dict[str, Any] | None
) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for t in test.defect_types:
        counts[t] = counts.get(t, 0) + 1
    data = {**test.info, **(data_info or {})}
    data.update(
        image_size=image_size,
        n_test=len(test),
        n_normal=int((test.labels == 0).sum()),
        n_anomalous=int((test.labels == 1).sum()),
        has_masks=bool(test.has_masks),
        defect_types=dict(sorted(counts.items(), key=lambda kv: (kv[0] != "good", kv[0]))),
    )
    if max_images is not None:
        data["max_images"] = max_images
    return data


def _write_arrays(
    out_dir: Path,
    audit: _Audit,
    clean: CleanPass,
    records: list[AttackRecord],
    robust_scores: np.ndarray,
    clean_maps: np.ndarray | None,
    robust_maps: np.ndarray | None,
    save_maps: bool,
) -> None:
    """scores.npz always; maps.npz (float16 maps, uint8 masks) with ``save_maps``."""
    common = {
        "labels": audit.test.labels.astype(np.int64),
        "names": np.array(audit.test.names, dtype=str),
    }
    np.savez_compressed(
        out_dir / "scores.npz",
        **common,
        **{"clean.image_scores": clean.scores},
        **{f"{r.spec.id}.image_scores": r.scores for r in records},
        **{"robust.image_scores": robust_scores.astype(np.float32)},
    )
    if save_maps:
        maps = clean_maps if clean_maps is not None else audit.maps(clean.logits)
        arrays = {**common, "masks": clean.masks, "clean.maps": maps.astype(np.float16)}
        if robust_maps is not None:
            arrays["robust.maps"] = robust_maps.astype(np.float16)
        np.savez_compressed(out_dir / "maps.npz", **arrays)


def budget_check(records: list[AttackRecord]) -> SanityCheck:
    """Sanity entry: every adversarial image lies in its ε-ball and in [0, 1] (measured)."""
    meaning = "adversarial images stay within the stated budget and the [0, 1] pixel range"
    if not records:
        return SanityCheck("perturbation-budget", "skip", "no attacks ran", meaning)
    bad = []
    for r in records:
        measured = r.max_linf if r.spec.norm == "inf" else r.max_l2
        if measured > r.spec.eps * (1 + BUDGET_TOLERANCE) + BUDGET_TOLERANCE:
            bad.append(f"{r.spec.id}: {measured:.6g} > eps {r.spec.eps:.6g}")
        if r.out_of_range > BUDGET_TOLERANCE:
            bad.append(f"{r.spec.id}: pixels outside [0, 1] by {r.out_of_range:.3g}")
    used = max((r.max_linf / r.spec.eps for r in records if r.spec.norm == "inf"), default=0.0)
    evidence = (
        "; ".join(bad)
        if bad
        else f"all {len(records)} attacks within budget (largest L-inf use {used:.3f} x eps)"
    )
    return SanityCheck("perturbation-budget", "fail" if bad else "pass", evidence, meaning)


def _write_gallery(
    out_dir: Path,
    audit: _Audit,
    clean: CleanPass,
    records: list[AttackRecord],
    attacks: list[AttackResult],
    positions: list[int],
) -> list[dict[str, Any]]:
    """Gallery PNGs from the strongest localization attack at the headline ε (lowest pixel
    AUROC); without one, from the headline attack with the lowest image AUROC."""
    candidates = [
        (rec, entry)
        for rec, entry in zip(records, attacks, strict=True)
        if positions and len(rec.gallery_images) == len(positions)
    ]
    if not candidates:
        return []

    def value(entry: AttackResult, name: str) -> float:
        v = entry.metrics[name].value
        return float("inf") if v is None else float(v)

    local = [c for c in candidates if c[0].spec.objective == "localization"]
    if local and any(value(e, "pixel_auroc") < float("inf") for _, e in local):
        rec = min(local, key=lambda c: value(c[1], "pixel_auroc"))[0]
    else:
        rec = min(candidates, key=lambda c: value(c[1], "image_auroc"))[0]

    test, idx = audit.test, np.array(positions)
    clean_maps, adv_maps = audit.maps(clean.logits[idx]), audit.maps(rec.logits[idx])
    items = Subset(test.dataset, [test.indices[p] for p in positions])
    return [
        write_gallery_item(
            out_dir,
            k,
            name=test.names[p],
            label=int(test.labels[p]),
            clean=item["image"].float().numpy(),
            adversarial=rec.gallery_images[p],
            eps=rec.spec.eps,
            mask=clean.masks[p],
            clean_map=clean_maps[k],
            adversarial_map=adv_maps[k],
            attack_id=rec.spec.id,
            clean_score=float(clean.scores[p]),
            adversarial_score=float(rec.scores[p]),
        )  # fmt: skip
        for k, (p, item) in enumerate(zip(positions, items, strict=True))
    ]
