"""The test images of an audit: which ones (subset), their names, labels, and batches of them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from pgaudit.errors import ParameterError, PgauditError


@dataclass
class AuditSet:
    """The (possibly subsampled) test images: dataset, positions used, names, labels."""

    dataset: Dataset
    indices: list[int]
    names: list[str]
    labels: np.ndarray
    defect_types: list[str]
    has_masks: bool | None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)


def _relative_name(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()


def data_fingerprint(paths: Sequence[Path], root: Path) -> str:
    """sha256 over the sorted ``(name relative to root, size in bytes)`` of the test files."""
    digest = hashlib.sha256()
    for name, size in sorted((_relative_name(p, root), Path(p).stat().st_size) for p in paths):
        digest.update(f"{name}\t{size}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def stratified_subset(labels: np.ndarray, max_images: int | None, seed: int) -> list[int]:
    """At most ``max_images`` positions, both classes kept in proportion (>= 1 each), sorted."""
    n = len(labels)
    if max_images is None or max_images >= n:
        return list(range(n))
    if max_images < 1:
        raise ParameterError(f"max_images {max_images} must be at least 1.", "max_images")
    rng = np.random.default_rng(seed)
    normal, anomalous = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    k_anom = round(max_images * len(anomalous) / n)
    if len(anomalous) and max_images >= 2:
        k_anom = min(max(k_anom, 1), len(anomalous), max_images - min(1, len(normal)))
    k_norm = min(max_images - k_anom, len(normal))
    picked = np.concatenate(
        [rng.choice(normal, k_norm, replace=False), rng.choice(anomalous, k_anom, replace=False)]
    )
    return sorted(int(i) for i in picked)


def prepare_test_set(
    category_or_dataset: Any, image_size: int, max_images: int | None, seed: int
) -> AuditSet:
    """A :class:`AuditSet` from a ``pgaudit.data.Category`` or any dataset of pgaudit items."""
    from pgaudit.data import AnomalyDataset, Category

    info: dict[str, Any] = {}
    if isinstance(category_or_dataset, Category):
        cat = category_or_dataset
        if not cat.test:
            raise PgauditError(f"{cat.root}: the category has no test images; add test/ images.")
        dataset: Dataset = AnomalyDataset(cat.test, image_size)
        names = [_relative_name(s.image, cat.root) for s in cat.test]
        labels = np.array([s.label for s in cat.test], dtype=np.int64)
        types = [s.defect_type for s in cat.test]
        has_masks: bool | None = cat.has_masks
        info = {
            "name": f"{Path(cat.root).resolve().parent.name}/{cat.name}",
            "layout": cat.layout,
            "category": cat.name,
            "root": str(cat.root),
            "fingerprint": data_fingerprint([s.image for s in cat.test], cat.root),
        }
    else:
        dataset = category_or_dataset
        samples = getattr(dataset, "samples", None)
        n = len(dataset)  # type: ignore[arg-type]
        if samples is not None and len(samples) == n and hasattr(samples[0], "image"):
            root = Path(os.path.commonpath([str(Path(s.image).parent) for s in samples]))
            names = [_relative_name(s.image, root) for s in samples]
            labels = np.array([s.label for s in samples], dtype=np.int64)
            types = [
                getattr(s, "defect_type", "good" if s.label == 0 else "anomaly") for s in samples
            ]
        else:
            given = getattr(dataset, "labels", None)
            if given is None:
                given = [int(dataset[i]["label"]) for i in range(n)]
            elif isinstance(given, torch.Tensor):
                given = given.detach().cpu().numpy()
            labels = np.asarray(given, dtype=np.int64).reshape(-1)
            if len(labels) != n:
                raise PgauditError(
                    f"the test dataset has {n} images but {len(labels)} labels: its `labels` "
                    "must hold one 0/1 label per image."
                )
            names = [f"#{i}" for i in range(n)]
            types = ["good" if v == 0 else "anomaly" for v in labels]
        has_masks = None  # decided from the masks themselves during the clean pass
        if n == 0:
            raise PgauditError("the test dataset is empty: pass a dataset with test images.")
    indices = stratified_subset(labels, max_images, seed)
    chosen = labels[indices]
    if len(set(chosen.tolist())) < 2:
        what = "normal" if chosen.max(initial=0) == 0 else "defective"
        where = (
            f"the {len(chosen)} test image(s) chosen by max_images"
            if max_images
            else (f"the {len(chosen)} test images")
        )
        raise ParameterError(
            f"{where} are all {what}: AUROC (image, pixel) is undefined without both normal and "
            "defective images; add the other kind to the test set"
            + (" or raise max_images." if max_images else "."),
            *(("max_images", "max_images") if max_images else ()),
        )
    return AuditSet(
        dataset=dataset,
        indices=indices,
        names=[names[i] for i in indices],
        labels=labels[indices],
        defect_types=[types[i] for i in indices],
        has_masks=has_masks,
        info=info,
    )


def shard_batches(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[range]:
    """The test positions of each batch a worker processes, in test-set order.

    Batch ``b`` always covers positions ``[b·B, (b+1)·B)``, whatever the number of workers (so the
    per-batch attack seeds do not change); worker ``rank`` takes the batches ``b ≡ rank (mod
    world_size)``.
    """
    step = batch_size * world_size
    return [range(s, min(s + batch_size, n)) for s in range(rank * batch_size, n, step)]


def iterate_batches(
    test: AuditSet,
    batch_size: int,
    device: torch.device,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[slice, Tensor, Tensor, Tensor]]:
    """``(positions, images, labels, masks)`` per batch, in test-set order (this worker's share
    of the batches, see :func:`shard_batches`)."""
    batches = [list(b) for b in shard_batches(len(test), batch_size, rank, world_size)]
    loader = DataLoader(Subset(test.dataset, test.indices), batch_sampler=batches)
    for positions, item in zip(batches, loader, strict=True):
        images = item["image"].to(device=device, dtype=torch.float32)
        yield (
            slice(positions[0], positions[-1] + 1),
            images,
            torch.as_tensor(item["label"]).to(device).long(),
            item["mask"].to(device=device, dtype=torch.float32),
        )
