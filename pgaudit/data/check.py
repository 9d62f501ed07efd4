"""Validation summary of a category: counts, image sizes, masks, problems and warnings."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from pgaudit.data.images import verify_image
from pgaudit.data.records import Category
from pgaudit.errors import PgauditError


@dataclass
class CheckReport:
    """What :func:`check_category` found. ``problems`` make the category unusable."""

    category: str
    root: Path
    layout: str
    counts: dict[str, dict[str, int]]  # split -> defect type -> images
    masks: dict[str, tuple[int, int]]  # anomalous defect type -> (masks present, images)
    foreground: tuple[int, int]  # (training images with a foreground mask, training images)
    image_sizes: dict[tuple[int, int], int]  # (width, height) -> images
    has_masks: bool
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def table(self) -> Table:
        """Counts per split and defect type, with mask coverage; image sizes as the caption."""
        table = Table(title=f"{self.category} ({self.layout}): {self.root}", title_justify="left")
        for name in ("split", "defect type", "images", "gt masks", "foreground masks"):
            table.add_column(name, justify="left" if name in ("split", "defect type") else "right")
        for split, counts in self.counts.items():
            for defect, n in counts.items():
                present, total = self.masks.get(defect, (0, 0)) if split == "test" else (0, 0)
                gt = f"{present}/{total}" if total else "-"
                fg = f"{self.foreground[0]}/{self.foreground[1]}" if split == "train" else "-"
                table.add_row(split, defect, str(n), gt, fg)
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.image_sizes.items())
        table.caption = f"image sizes: {sizes or 'unreadable'}"
        table.caption_justify = "left"
        return table

    @property
    def ok(self) -> bool:
        """True when the category is usable (no problems; warnings are allowed)."""
        return not self.problems


def _size_problem(image: Path, other: Path, what: str, image_size: tuple[int, int]) -> str | None:
    other_size = verify_image(other)
    if other_size == image_size:
        return None
    return (
        f"{other}: {what} is {other_size[0]}x{other_size[1]} but its image {image} is "
        f"{image_size[0]}x{image_size[1]}; make the {what} the same size as the image."
    )


def check_category(category: Category) -> CheckReport:
    """Validate every file of ``category`` (structure, readability, mask sizes) and summarise it."""
    sizes: Counter[tuple[int, int]] = Counter()
    problems: list[str] = []
    for sample in [*category.train, *category.test]:
        try:
            size = verify_image(sample.image)
            sizes[size] += 1
            for extra, what in ((sample.mask, "mask"), (sample.foreground, "foreground mask")):
                if extra is not None:
                    problem = _size_problem(sample.image, extra, what, size)
                    if problem:
                        problems.append(problem)
        except PgauditError as exc:
            problems.append(str(exc))

    masks: dict[str, tuple[int, int]] = {}
    for sample in category.anomalous:
        present, total = masks.get(sample.defect_type, (0, 0))
        masks[sample.defect_type] = (present + (sample.mask is not None), total + 1)
    n_fg = sum(s.foreground is not None for s in category.train)

    warnings: list[str] = []
    n_anomalous = len(category.anomalous)
    n_normal = len(category.test) - n_anomalous
    if n_anomalous and not category.has_masks:
        warnings.append(
            f"{category.root}: no ground-truth masks for the {n_anomalous} anomalous test images; "
            "the category is usable for detection only (pixel metrics are skipped)."
        )
    if not n_anomalous:
        warnings.append(f"{category.root}: no anomalous test images; image AUROC is undefined.")
    if not n_normal:
        warnings.append(f"{category.root}: no normal test images; image AUROC is undefined.")
    if n_fg == 0:
        warnings.append(
            f"{category.foreground_dir}: no foreground masks; run `pgaudit masks {category.root}` "
            "for objects (textures need none: the whole image counts)."
        )
    elif n_fg < len(category.train):
        warnings.append(
            f"{category.foreground_dir}: only {n_fg} of {len(category.train)} training images have "
            "a foreground mask (the others count as all foreground); run `pgaudit masks "
            f"{category.root} --overwrite` to make a complete set."
        )
    if len(sizes) > 1:
        warnings.append(
            f"{category.root}: images come in {len(sizes)} sizes; all are resized to the model's "
            "square input size."
        )
    if category.layout == "folder":
        warnings.append(
            f"{category.root / 'normal'}: plain folder layout; every other normal image (sorted by "
            "name) is used for training, the rest for testing."
        )

    return CheckReport(
        category=category.name,
        root=category.root,
        layout=category.layout,
        counts={"train": category.defect_counts("train"), "test": category.defect_counts("test")},
        masks=masks,
        foreground=(n_fg, len(category.train)),
        image_sizes=dict(sizes.most_common()),
        has_masks=category.has_masks,
        problems=problems,
        warnings=warnings,
    )


@dataclass
class DatasetCheck:
    """What :func:`check_dataset` found: per category (in order) its report, or the error that
    kept it from being read."""

    path: Path
    results: list[CheckReport | PgauditError]

    @property
    def problems(self) -> list[str]:
        out: list[str] = []
        for result in self.results:
            out += [str(result)] if isinstance(result, PgauditError) else result.problems
        return out

    def raise_if_unusable(self) -> None:
        """A PgauditError with the one problem, or the count and the first one."""
        problems = self.problems
        if len(problems) == 1:
            raise PgauditError(problems[0])
        if problems:
            raise PgauditError(
                f"{self.path}: {len(problems)} problems (listed above, the first: {problems[0]}); "
                "fix them and run `pgaudit data check` again."
            )


def check_dataset(path: Path, category: str | None = None) -> DatasetCheck:
    """:func:`check_category` on every category at ``path`` (or only ``category``)."""
    from pgaudit.data.layouts import select_categories

    results: list[CheckReport | PgauditError] = []
    for ref in select_categories(path, category):
        try:
            results.append(check_category(ref.read()))
        except PgauditError as exc:
            results.append(exc)
    return DatasetCheck(path, results)
