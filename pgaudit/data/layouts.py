"""Dataset layout readers and auto-detection: folders on disk -> :class:`Category` records.

Supported layouts (a *category folder* unless said otherwise):

- ``mvtec`` / ``mpdd``: ``train/good/``, ``test/good/``, ``test/<type>/``,
  ``ground_truth/<type>/<stem>_mask.png``. MPDD uses the same layout; a category whose name is one
  of MPDD's six categories is reported as ``mpdd``.
- ``btad``: ``train/ok/``, ``test/ok/``, ``test/ko/``, ``ground_truth/ko/<stem>.png|.bmp``.
- ``visa``: a VisA *root* with ``split_csv/1cls.csv`` (columns object, split, label, image, mask;
  paths relative to the root; label normal/anomaly). Each object is a category whose folder is
  ``<root>/<object>``; anomalies have the defect type "anomaly".
- ``folder``: ``normal/``, ``abnormal/`` (files, or one sub-folder per defect type) and optional
  ``masks/`` (masks named like their image, or ``<stem>.png``; also ``masks/<type>/``). The sorted
  normal images are split deterministically: every other one (indices 0, 2, 4, ...) goes to train,
  the rest to test; all abnormal images are test images.

Foreground masks (all layouts) are read from ``<category>/train/foreground_mask/`` under the image's
file name, or ``<stem>.png``. A *dataset root* is a folder whose sub-folders are categories.

Ground-truth masks are all-or-nothing per category: when no anomalous image has a mask the
category is detection-only (``has_masks`` False); when some have masks, a missing one is an error.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pgaudit.data.images import IMAGE_SUFFIXES, is_image_file
from pgaudit.data.records import LAYOUTS, Category, Sample
from pgaudit.errors import ParameterError, PgauditError

MPDD_CATEGORIES = frozenset(
    {"bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"}
)
VISA_CSV = Path("split_csv") / "1cls.csv"
VISA_COLUMNS = ("object", "split", "label", "image", "mask")
LAYOUT_HELP = (
    "an MVTec/MPDD category (train/good, test/<type>), a BTAD category (train/ok, test/ok|ko), "
    "a VisA root (split_csv/1cls.csv), a plain folder (normal/, abnormal/), "
    "or a folder of such categories"
)


def _images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _first_existing(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)


class _Foreground:
    """Looks up ``train/foreground_mask/<name>`` (or ``<stem>.png``) for training images."""

    def __init__(self, category_root: Path) -> None:
        folder = category_root / "train" / "foreground_mask"
        self.files = {p.name: p for p in _images(folder)}

    def __call__(self, image: Path) -> Path | None:
        return self.files.get(image.name) or self.files.get(image.stem + ".png")


def _attach_masks(
    test: list[tuple[Path, int, str]], find: Callable[[Path, str], list[Path]]
) -> list[Sample]:
    """Build test samples; masks all-or-nothing (see module docstring)."""
    found: dict[Path, Path | None] = {}
    missing: list[tuple[Path, Path]] = []
    for image, label, defect in test:
        if label == 0:
            continue
        candidates = find(image, defect)
        mask = _first_existing(candidates)
        found[image] = mask
        if mask is None:
            missing.append((image, candidates[0]))
    if missing and len(missing) < len(found):
        image, expected = missing[0]
        raise PgauditError(
            f"{expected}: ground-truth mask missing for {image}; add the mask, remove the image, "
            "or remove all masks to use the category for detection only."
        )
    return [Sample(image, label, defect, found.get(image)) for image, label, defect in test]


def _require_images(images: list[Path], folder: Path, what: str) -> list[Path]:
    if not images:
        suffixes = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
        raise PgauditError(f"{folder}: no images ({suffixes}) found; add {what}.")
    return images


def _require_dir(folder: Path, what: str) -> Path:
    if not folder.is_dir():
        raise PgauditError(f"{folder}: folder missing; add {what}.")
    return folder


def read_mvtec(root: Path, layout: str = "mvtec") -> Category:
    """Read an MVTec AD (or MPDD) category folder."""
    train_dir = _require_dir(root / "train" / "good", "the normal training images there")
    foreground = _Foreground(root)
    train = [
        Sample(p, 0, "good", None, foreground(p))
        for p in _require_images(_images(train_dir), train_dir, "normal training images")
    ]
    test_dir = _require_dir(root / "test", "test/good/ and test/<defect_type>/ image folders")
    test: list[tuple[Path, int, str]] = []
    for sub in sorted(_subdirs(test_dir), key=lambda d: (d.name != "good", d.name)):
        label = 0 if sub.name == "good" else 1
        test += [(p, label, sub.name) for p in _images(sub)]
    if not test:
        _require_images([], test_dir, "test images in test/good/ and test/<defect_type>/")

    def find(image: Path, defect: str) -> list[Path]:
        gt = root / "ground_truth" / defect
        return [gt / f"{image.stem}_mask.png", gt / f"{image.stem}.png", gt / image.name]

    return Category(root.name, root, layout, train, _attach_masks(test, find))


def read_btad(root: Path) -> Category:
    """Read a BTAD category folder (train/ok, test/ok|ko, ground_truth/ko)."""
    train_dir = _require_dir(root / "train" / "ok", "the normal training images there")
    foreground = _Foreground(root)
    train = [
        Sample(p, 0, "good", None, foreground(p))
        for p in _require_images(_images(train_dir), train_dir, "normal training images")
    ]
    test = [(p, 0, "good") for p in _images(root / "test" / "ok")]
    test += [(p, 1, "ko") for p in _images(root / "test" / "ko")]
    if not test:
        _require_images([], root / "test", "test images in test/ok/ and test/ko/")

    def find(image: Path, defect: str) -> list[Path]:
        gt = root / "ground_truth" / defect
        return [gt / f"{image.stem}.png", gt / f"{image.stem}.bmp", gt / f"{image.stem}_mask.png"]

    return Category(root.name, root, "btad", train, _attach_masks(test, find))


def read_folder(root: Path) -> Category:
    """Read a plain folder layout (normal/, abnormal/, masks/); see the module docstring."""
    normal_dir = _require_dir(root / "normal", "the normal images there")
    normal = _require_images(_images(normal_dir), normal_dir, "normal images")
    foreground = _Foreground(root)
    train = [Sample(p, 0, "good", None, foreground(p)) for p in normal[0::2]]
    test: list[tuple[Path, int, str]] = [(p, 0, "good") for p in normal[1::2]]
    abnormal = root / "abnormal"
    test += [(p, 1, "abnormal") for p in _images(abnormal)]
    if abnormal.is_dir():
        for sub in _subdirs(abnormal):
            test += [(p, 1, sub.name) for p in _images(sub)]
    if not test:
        _require_images([], root / "abnormal", "abnormal images or more normal images")

    def find(image: Path, defect: str) -> list[Path]:
        folders = [root / "masks"] if image.parent == abnormal else [root / "masks" / defect]
        folders.append(root / "masks")
        names = [image.name, f"{image.stem}.png", f"{image.stem}_mask.png"]
        return [f / n for f in folders for n in names]

    return Category(root.name, root, "folder", train, _attach_masks(test, find))


def _visa_rows(root: Path) -> list[dict[str, str]]:
    csv_path = root / VISA_CSV
    try:
        # utf-8-sig: a file saved by Excel starts with a byte-order mark, which would otherwise
        # become part of the first column's name ("\ufeffobject")
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PgauditError(
            f"{csv_path}: cannot read the split file ({type(exc).__name__}); restore it."
        ) from None
    absent = [c for c in VISA_COLUMNS if c not in columns]
    if absent:
        raise PgauditError(
            f"{csv_path}: column(s) {', '.join(absent)} missing; the VisA split file needs the "
            f"columns {', '.join(VISA_COLUMNS)}."
        )
    return rows


def visa_objects(root: Path) -> list[str]:
    """The object (category) names listed in a VisA root's ``split_csv/1cls.csv``."""
    return sorted({row["object"] for row in _visa_rows(root) if row["object"]})


def read_visa(root: Path, name: str) -> Category:
    """Read one object of a VisA root as a category."""
    csv_path = root / VISA_CSV
    category_root = root / name
    foreground = _Foreground(category_root)
    train: list[Sample] = []
    test: list[tuple[Path, int, str]] = []
    masks: dict[Path, Path] = {}
    for row in _visa_rows(root):
        if row["object"] != name:
            continue
        if row["label"] not in ("normal", "anomaly") or row["split"] not in ("train", "test"):
            raise PgauditError(
                f"{csv_path}: row for {row['image']!r} has split {row['split']!r} and label "
                f"{row['label']!r}; use split train/test and label normal/anomaly."
            )
        image = root / row["image"]
        if not image.is_file():
            raise PgauditError(f"{image}: listed in {csv_path} but missing; restore the file.")
        label = int(row["label"] == "anomaly")
        if row["split"] == "train":
            if label:
                raise PgauditError(
                    f"{csv_path}: anomalous image {row['image']} is in the train split; "
                    "training images must be normal, move it to the test split."
                )
            train.append(Sample(image, 0, "good", None, foreground(image)))
            continue
        test.append((image, label, "anomaly" if label else "good"))
        if label and row["mask"]:
            masks[image] = root / row["mask"]
    _require_images([p.image for p in train], category_root, f"training rows for {name}")
    _require_images([p for p, _, _ in test], category_root, f"test rows for {name}")

    def find(image: Path, defect: str) -> list[Path]:
        listed = masks.get(image)
        if listed is not None and not listed.is_file():
            raise PgauditError(f"{listed}: listed in {csv_path} but missing; restore the mask.")
        return [listed] if listed is not None else [image.with_suffix(".png")]

    return Category(name, category_root, "visa", train, _attach_masks(test, find))


def _is_visa_root(path: Path) -> bool:
    return (path / VISA_CSV).is_file()


def _category_layout(path: Path) -> str | None:
    """The layout of ``path`` as a single category, or None when it is not a category."""
    if (path / "train" / "good").is_dir():
        return "mpdd" if path.name in MPDD_CATEGORIES else "mvtec"
    if (path / "train" / "ok").is_dir() or (path / "test" / "ko").is_dir():
        return "btad"
    if (path / "normal").is_dir():
        return "folder"
    if _is_visa_root(path.parent) and not _is_visa_root(path):
        return "visa"
    if any((path / d).is_dir() for d in ("train", "test", "ground_truth")):
        raise PgauditError(
            f"{path / 'train' / 'good'}: folder missing; put the normal training images there "
            "(MVTec layout) or use one of the supported layouts."
        )
    return None


def _looks_like_category(path: Path) -> bool:
    return any((path / d).is_dir() for d in ("train", "test", "normal", "ground_truth"))


def _require_folder(path: Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise PgauditError(f"{path}: no such folder; check the dataset path.")
    if not path.is_dir():
        raise PgauditError(f"{path}: not a folder; pass a dataset category folder or root.")
    return path


def _read(path: Path, layout: str) -> Category:
    if layout not in LAYOUTS:
        _category_layout(path)  # raises the specific error for a broken category
        raise PgauditError(f"{path}: unknown dataset layout; expected {LAYOUT_HELP}.")
    if layout == "visa":
        return read_visa(path.parent, path.name)
    if layout == "btad":
        return read_btad(path)
    if layout == "folder":
        return read_folder(path)
    return read_mvtec(path, layout)


@dataclass(frozen=True)
class CategoryRef:
    """A category found on disk, not yet read: its name, folder and layout."""

    name: str
    path: Path
    layout: str

    def read(self) -> Category:
        """Read the category's records."""
        return _read(self.path, self.layout)


def find_categories(path: Path) -> tuple[list[CategoryRef], bool]:
    """The categories at ``path`` and whether ``path`` is a root (True) or one category (False)."""
    path = _require_folder(path)
    if _is_visa_root(path):
        objects = visa_objects(path)
        if not objects:
            raise PgauditError(f"{path / VISA_CSV}: no rows; add the VisA split rows.")
        return [CategoryRef(o, path / o, "visa") for o in objects], True
    layout = _category_layout(path)
    if layout is not None:
        return [CategoryRef(path.name, path, layout)], False
    refs = []
    for sub in _subdirs(path):
        if _looks_like_category(sub):
            try:
                layout = _category_layout(sub) or "unknown"
            except PgauditError:
                layout = "invalid"  # reading it raises the specific error
            refs.append(CategoryRef(sub.name, sub, layout))
    if not refs:
        raise PgauditError(f"{path}: unknown dataset layout; expected {LAYOUT_HELP}.")
    return refs, True


def detect_layout(path: Path) -> str:
    """The layout of a category folder or dataset root ("mvtec", "visa", "btad", "mpdd", "folder").

    For a root whose categories use different layouts, the layouts joined by "+".
    """
    refs, _ = find_categories(path)
    return "+".join(sorted({r.layout for r in refs}))


def select_categories(path: Path, category: str | None = None) -> list[CategoryRef]:
    """The categories at ``path`` (all, or the one named ``category``), not yet read."""
    path = _require_folder(path)
    refs, is_root = find_categories(path)
    if category is None:
        return refs
    if not is_root:
        if category == refs[0].name:
            return refs
        raise ParameterError(
            f"{path}: is the single category {refs[0].name!r}, not a dataset root; "
            f"drop category {category!r} or pass the root folder.",
            "category",
        )
    chosen = [r for r in refs if r.name == category]
    if not chosen:
        names = ", ".join(r.name for r in refs)
        raise ParameterError(
            f"{path}: has no category {category!r}; choose category from: {names}.", "category"
        )
    return chosen


def open_categories(path: Path, category: str | None = None) -> list[Category]:
    """Read every category at ``path`` (a category folder or a dataset root), or just ``category``."""
    return [ref.read() for ref in select_categories(path, category)]


def open_category(path: Path, category: str | None = None) -> Category:
    """Read one category: ``path`` is a category folder, or a root and ``category`` names one."""
    refs = select_categories(path, category)
    if len(refs) > 1:
        names = ", ".join(r.name for r in refs)
        raise ParameterError(
            f"{path}: holds several categories ({names}); choose one with category.", "category"
        )
    return refs[0].read()
