"""Plain data records: one :class:`Sample` per image, one :class:`Category` per dataset category."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

LAYOUTS = ("mvtec", "visa", "btad", "mpdd", "folder")


@dataclass(frozen=True)
class Sample:
    """One image and its annotations (paths; ``mask``/``foreground`` are None when absent).

    ``label`` is 0 for normal and 1 for anomalous; ``defect_type`` is "good" for normal images.
    """

    image: Path
    label: int
    defect_type: str
    mask: Path | None = None
    foreground: Path | None = None


@dataclass
class Category:
    """One category of a dataset: its training (normal) and test samples."""

    name: str
    root: Path
    layout: str
    train: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)

    @property
    def anomalous(self) -> list[Sample]:
        """The anomalous test samples."""
        return [s for s in self.test if s.label == 1]

    @property
    def has_masks(self) -> bool:
        """True when every anomalous test sample has a ground-truth mask (and there is one)."""
        anomalous = self.anomalous
        return bool(anomalous) and all(s.mask is not None for s in anomalous)

    @property
    def has_foreground(self) -> bool:
        """True when every training sample has a foreground mask."""
        return bool(self.train) and all(s.foreground is not None for s in self.train)

    @property
    def foreground_dir(self) -> Path:
        """Where foreground masks of the training images live (all layouts)."""
        return self.root / "train" / "foreground_mask"

    def defect_counts(self, split: str = "test") -> dict[str, int]:
        """Number of images per defect type in ``split`` ("train" or "test"), sorted by name."""
        samples = self.train if split == "train" else self.test
        counts = Counter(s.defect_type for s in samples)
        return dict(sorted(counts.items(), key=lambda kv: (kv[0] != "good", kv[0])))
