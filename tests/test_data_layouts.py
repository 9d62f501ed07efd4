"""Layout readers and auto-detection on generated folder trees (property tests with hypothesis)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pgaudit.data import detect_layout, open_categories, open_category
from pgaudit.data.records import Sample
from pgaudit.errors import ParameterError, PgauditError


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), 128, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png_bytes()


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PNG)
    return path


def make_mvtec(root: Path, train: int, test: dict[str, int], masks: bool, fg: bool) -> list:
    """Write an MVTec category; returns the expected (train, test) sample sets."""
    expected_train = set()
    for i in range(train):
        image = touch(root / "train" / "good" / f"{i:03d}.png")
        fgp = touch(root / "train" / "foreground_mask" / f"{i:03d}.png") if fg else None
        expected_train.add(Sample(image, 0, "good", None, fgp))
    expected_test = set()
    for defect, n in test.items():
        for i in range(n):
            image = touch(root / "test" / defect / f"{i:03d}.png")
            mask = None
            if masks and defect != "good":
                mask = touch(root / "ground_truth" / defect / f"{i:03d}_mask.png")
            expected_test.add(Sample(image, int(defect != "good"), defect, mask, None))
    return [expected_train, expected_test]


names = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=10).filter(
    lambda s: s != "good" and not s.startswith("-")
)
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    category=names,
    train=st.integers(1, 4),
    good=st.integers(0, 3),
    defects=st.dictionaries(names, st.integers(1, 3), min_size=1, max_size=3),
    masks=st.booleans(),
    fg=st.booleans(),
)
def test_mvtec_reader_returns_exactly_the_files(category, train, good, defects, masks, fg):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / category
        test = {"good": good, **defects} if good else dict(defects)
        expected_train, expected_test = make_mvtec(root, train, test, masks, fg)
        cat = open_category(root)
        assert cat.name == category and cat.root == root
        assert cat.layout in ("mvtec", "mpdd")
        assert len(cat.train) == train and set(cat.train) == expected_train
        assert len(cat.test) == sum(test.values()) and set(cat.test) == expected_test
        assert cat.has_masks == masks
        assert cat.has_foreground == fg
        assert cat.defect_counts("test") == {k: v for k, v in test.items() if v}


@FAST
@given(
    categories=st.lists(names, min_size=2, max_size=4, unique=True),
    train=st.integers(1, 3),
)
def test_root_with_several_categories(categories, train):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "dataset"
        for name in categories:
            make_mvtec(root / name, train, {"good": 1, "scratch": 1}, True, False)
        opened = open_categories(root)
        assert [c.name for c in opened] == sorted(categories)
        assert all(len(c.train) == train and len(c.test) == 2 for c in opened)
        chosen = sorted(categories)[-1]
        assert open_category(root, chosen).name == chosen
        with pytest.raises(ParameterError, match="choose one with category") as info:
            open_category(root)
        assert info.value.for_cli().endswith("choose one with --category.")
        assert all(name in str(info.value) for name in categories)


@FAST
@given(
    n_normal=st.integers(2, 9),
    n_flat=st.integers(0, 3),
    typed=st.dictionaries(names, st.integers(1, 2), max_size=2),
    masks=st.booleans(),
)
def test_folder_reader_splits_normals_deterministically(n_normal, n_flat, typed, masks):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "parts"
        normals = [touch(root / "normal" / f"n{i:02d}.png") for i in range(n_normal)]
        expected = set()
        for i in range(n_flat):
            image = touch(root / "abnormal" / f"a{i}.png")
            mask = touch(root / "masks" / f"a{i}.png") if masks else None
            expected.add(Sample(image, 1, "abnormal", mask))
        for defect, n in typed.items():
            for i in range(n):
                image = touch(root / "abnormal" / defect / f"{defect}{i}.png")
                mask = touch(root / "masks" / defect / f"{defect}{i}.png") if masks else None
                expected.add(Sample(image, 1, defect, mask))
        cat = open_category(root)
        assert cat.layout == "folder"
        assert [s.image for s in cat.train] == normals[0::2]
        assert {s.image for s in cat.test if s.label == 0} == set(normals[1::2])
        assert {s for s in cat.test if s.label == 1} == expected
        assert cat.has_masks == (masks and bool(expected))


def test_btad_reader(tmp_path):
    root = tmp_path / "02"
    for i in range(3):
        touch(root / "train" / "ok" / f"{i:04d}.bmp")
    touch(root / "test" / "ok" / "0000.png")
    touch(root / "test" / "ko" / "0000.png")
    touch(root / "test" / "ko" / "0001.png")
    touch(root / "ground_truth" / "ko" / "0000.png")
    touch(root / "ground_truth" / "ko" / "0001.bmp")
    assert detect_layout(root) == "btad"
    cat = open_category(root)
    assert len(cat.train) == 3 and all(s.defect_type == "good" for s in cat.train)
    assert [(s.label, s.defect_type) for s in cat.test] == [(0, "good"), (1, "ko"), (1, "ko")]
    assert [s.mask.name for s in cat.anomalous] == ["0000.png", "0001.bmp"]
    assert cat.has_masks


def _visa(root: Path, rows: list[str], bom: bool = False) -> None:
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text(
        "object,split,label,image,mask\n" + "\n".join(rows),
        encoding="utf-8-sig" if bom else "utf-8",
    )


@pytest.mark.parametrize("bom", [False, True], ids=["plain", "excel-bom"])
def test_visa_reader_uses_the_split_csv(tmp_path, bom):
    root = tmp_path / "VisA"
    rows = []
    for obj in ("candle", "pcb1"):
        for i in range(3):
            touch(root / obj / "Data" / "Images" / "Normal" / f"{i:04d}.JPG")
            rows.append(f"{obj},train,normal,{obj}/Data/Images/Normal/{i:04d}.JPG,")
        touch(root / obj / "Data" / "Images" / "Normal" / "0100.JPG")
        rows.append(f"{obj},test,normal,{obj}/Data/Images/Normal/0100.JPG,")
        touch(root / obj / "Data" / "Images" / "Anomaly" / "000.JPG")
        touch(root / obj / "Data" / "Masks" / "Anomaly" / "000.png")
        rows.append(
            f"{obj},test,anomaly,{obj}/Data/Images/Anomaly/000.JPG,{obj}/Data/Masks/Anomaly/000.png"
        )
    _visa(root, rows, bom=bom)  # a split file saved by Excel starts with a byte-order mark
    assert detect_layout(root) == "visa"
    assert [c.name for c in open_categories(root)] == ["candle", "pcb1"]
    cat = open_category(root, "pcb1")
    assert cat.layout == "visa" and cat.root == root / "pcb1"
    assert len(cat.train) == 3 and len(cat.test) == 2 and cat.has_masks
    assert cat.anomalous[0].defect_type == "anomaly"
    assert cat.anomalous[0].mask == root / "pcb1/Data/Masks/Anomaly/000.png"
    assert open_category(root / "candle").name == "candle"  # an object folder inside the root


def test_visa_csv_with_missing_columns_names_the_csv(tmp_path):
    root = tmp_path / "VisA"
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("object,split,image\ncandle,train,a.JPG\n")
    with pytest.raises(PgauditError, match=r"1cls\.csv.*label"):
        open_categories(root)


def test_mpdd_is_recognised_by_category_name(tmp_path):
    make_mvtec(tmp_path / "tubes", 1, {"good": 1, "anomalous": 1}, True, False)
    assert detect_layout(tmp_path / "tubes") == "mpdd"
    assert open_category(tmp_path / "tubes").layout == "mpdd"


def test_non_png_images_find_png_foreground_masks(tmp_path):
    root = tmp_path / "cat"
    touch(root / "train" / "good" / "a.jpg")
    touch(root / "train" / "foreground_mask" / "a.png")
    touch(root / "test" / "good" / "b.jpg")
    assert open_category(root).train[0].foreground == root / "train" / "foreground_mask" / "a.png"


def test_detection_only_category_has_no_masks(tmp_path):
    make_mvtec(tmp_path / "c", 2, {"good": 1, "dent": 2}, masks=False, fg=False)
    cat = open_category(tmp_path / "c")
    assert not cat.has_masks and all(s.mask is None for s in cat.test)


def test_mask_missing_for_one_image_names_the_expected_mask(tmp_path):
    root = tmp_path / "c"
    make_mvtec(root, 2, {"good": 1, "dent": 2}, masks=True, fg=False)
    (root / "ground_truth" / "dent" / "001_mask.png").unlink()
    with pytest.raises(PgauditError, match=r"001_mask\.png.*001\.png"):
        open_category(root)


def test_a_broken_category_does_not_block_the_others(tmp_path):
    make_mvtec(tmp_path / "good_one", 1, {"good": 1}, False, False)
    touch(tmp_path / "broken" / "test" / "good" / "000.png")
    assert open_category(tmp_path, "good_one").name == "good_one"
    with pytest.raises(PgauditError, match=r"broken/train/good"):
        open_categories(tmp_path)


def test_unknown_category_lists_the_choices(tmp_path):
    make_mvtec(tmp_path / "a", 1, {"good": 1}, False, False)
    make_mvtec(tmp_path / "b", 1, {"good": 1}, False, False)
    with pytest.raises(PgauditError, match=r"'zz'.*a, b"):
        open_category(tmp_path, "zz")


def test_category_option_on_a_single_category_is_an_error(tmp_path):
    make_mvtec(tmp_path / "a", 1, {"good": 1}, False, False)
    assert open_category(tmp_path / "a", "a").name == "a"
    with pytest.raises(ParameterError, match="drop category 'b'"):
        open_category(tmp_path / "a", "b")
