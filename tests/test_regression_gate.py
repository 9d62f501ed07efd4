"""The regression gate: `pgaudit gate AUDIT --baseline MAIN --max-drop D` on real audits.

Two toy detectors on one category with strong red defects: ``Smooth`` (mean redness per 8x8
patch; the defects are far larger than any 8/255 change) stays robust, ``Brittle`` adds a term
that a checkerboard perturbation drives up (a weakened model): its robust image AUROC falls to 0.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import pgaudit
from pgaudit.errors import ParameterError
from pgaudit.regression import paired_drop_lower_bound

SIZE = 32


def _write_category(root: Path, seed: int, n_test: int = 24) -> Path:
    """An MVTec-layout folder: grey images; the defective half with a red 8x8 square."""
    rng = np.random.default_rng(seed)
    for sub in ("train/good", "test/good", "test/red", "ground_truth/red"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    def grey() -> np.ndarray:
        return np.clip(0.5 + 0.02 * rng.standard_normal((SIZE, SIZE, 3)), 0, 1)

    def save(image: np.ndarray, path: Path) -> None:
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)

    for i in range(4):
        save(grey(), root / f"train/good/{i:03d}.png")
    for i in range(n_test // 2):
        save(grey(), root / f"test/good/{i:03d}.png")
        image, mask = grey(), np.zeros((SIZE, SIZE), np.uint8)
        y, x = 8 * rng.integers(0, SIZE // 8, 2)
        image[y : y + 8, x : x + 8, 0] += rng.uniform(0.4, 0.6)
        mask[y : y + 8, x : x + 8] = 255
        save(image, root / f"test/red/{i:03d}.png")
        Image.fromarray(mask).save(root / f"ground_truth/red/{i:03d}_mask.png")
    return root


class Smooth(nn.Module):
    image_size = SIZE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x[:, :1] - x[:, 1:2], 8)[:, 0] * 50


class Brittle(Smooth):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = torch.arange(SIZE, device=x.device)
        board = ((i[:, None] + i[None, :]) % 2 * 2 - 1).float()
        return super().forward(x) + 500 * F.avg_pool2d((x[:, :1] - x[:, 1:2]) * board, 8)[:, 0]


@pytest.fixture(scope="module")
def audits(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("regression")
    red, other = _write_category(root / "red", 0), _write_category(root / "other", 1)
    runs = {
        "main": (Smooth(), red, {}),
        "weak": (Brittle(), red, {}),
        "other-data": (Smooth(), other, {}),
        "other-eps": (Smooth(), red, {"suite_options": {"eps": [4 / 255]}}),
    }
    for name, (model, data, options) in runs.items():
        pgaudit.audit(model, data, out_dir=root / name, bootstrap=0, **options)
    return {name: root / name for name in runs}


def _robust(folder: Path) -> float:
    return json.loads((folder / "results.json").read_text())["robust"]["metrics"]["image_auroc"][
        "value"
    ]


def test_the_toy_models_are_what_the_tests_need(audits):
    assert _robust(audits["main"]) == 1.0 and _robust(audits["weak"]) == 0.0


def test_an_audit_passes_against_itself(audits, run_cli):
    outcome = pgaudit.check_gate(audits["main"], baseline=audits["main"], max_drop=0.0)
    assert outcome.passed and outcome.criteria[0].name == "robust image_auroc drop"
    res = run_cli("gate", str(audits["main"]), "--baseline", str(audits["main"]), "--max-drop", "0")
    assert res.exit_code == 0, res.stderr
    assert "PASS robust image_auroc drop 0.000 <= 0.000 (1.000 -> 1.000" in res.stdout


def test_a_weakened_model_fails_against_the_hardened_baseline(audits, run_cli, tmp_path):
    junit = tmp_path / "gate.xml"
    res = run_cli("gate", str(audits["weak"]), "--baseline", str(audits["main"]),
                  "--max-drop", "0.02", "--junit", str(junit))  # fmt: skip
    assert res.exit_code == 1
    assert "FAIL robust image_auroc drop 1.000 > 0.020 (1.000 -> 0.000 against baseline" in (
        res.stdout.replace("\n", "")
    )
    case = ET.parse(junit).getroot().find("testsuite/testcase")
    assert (
        case.get("name") == "robust image_auroc drop <= 0.02" and case.find("failure") is not None
    )
    res = run_cli("gate", str(audits["weak"]), "--baseline", str(audits["main"]),
                  "--max-drop", "0.02", "--significant-only")  # fmt: skip
    assert res.exit_code == 1 and "paired bootstrap: at least" in res.stdout


@pytest.mark.parametrize(
    ("which", "what"), [("other-data", "test images"), ("other-eps", "headline eps")]
)
def test_a_baseline_of_other_data_or_suite_is_refused(audits, run_cli, which, what):
    res = run_cli("gate", str(audits[which]), "--baseline", str(audits["main"]),
                  "--max-drop", "0.02")  # fmt: skip
    assert res.exit_code == 2
    assert f"differs from {audits[which] / 'results.json'} in its {what}" in _flat(res.stderr)
    assert "compare audits of the same data and suite" in _flat(res.stderr)


def _edited_copy(source: Path, folder: Path, robust_value: float, swap: int) -> Path:
    """A copy of ``source`` whose robust image AUROC reads ``robust_value`` and whose first
    ``swap`` anomalous images score below every normal one under attack."""
    shutil.copytree(source, folder)
    data = json.loads((folder / "results.json").read_text())
    data["robust"]["metrics"]["image_auroc"]["value"] = robust_value
    (folder / "results.json").write_text(json.dumps(data))
    with np.load(folder / "scores.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    robust = arrays["robust.image_scores"].copy()
    anomalous = np.flatnonzero(arrays["labels"] == 1)[:swap]
    robust[anomalous] = robust[arrays["labels"] == 0].min() - 1
    arrays["robust.image_scores"] = robust
    np.savez(folder / "scores.npz", **arrays)
    return folder


def test_significant_only_passes_a_drop_the_bootstrap_cannot_confirm(audits, run_cli, tmp_path):
    one_image = _edited_copy(audits["main"], tmp_path / "one", 1 - 1 / 12, swap=1)
    args = ("gate", str(one_image), "--baseline", str(audits["main"]), "--max-drop", "0.05")
    res = run_cli(*args)
    assert res.exit_code == 1 and "FAIL robust image_auroc drop 0.083 > 0.050" in res.stdout
    res = run_cli(*args, "--significant-only")
    assert res.exit_code == 0, res.stdout
    assert "PASS robust image_auroc drop 0.083 > 0.050 but not significantly" in _flat(res.stdout)
    many = _edited_copy(audits["main"], tmp_path / "many", 0.5, swap=6)
    res = run_cli("gate", str(many), "--baseline", str(audits["main"]), "--max-drop", "0.05",
                  "--significant-only")  # fmt: skip
    assert res.exit_code == 1  # half the defective images lost: real


def test_the_paired_bootstrap_bound_is_zero_for_identical_scores_and_positive_for_a_real_drop():
    labels = np.array([0] * 20 + [1] * 20)
    good = np.r_[np.zeros(20), np.ones(20)]
    assert paired_drop_lower_bound((labels, good), (labels, good)) == 0.0
    bad = np.r_[np.zeros(20), np.r_[np.ones(10), -np.ones(10)]]
    assert 0.3 < paired_drop_lower_bound((labels, good), (labels, bad)) <= 0.5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--baseline", "MAIN"), "--baseline needs --max-drop"),
        (("--max-drop", "0.02"), "--max-drop needs --baseline"),
        (("--baseline", "MAIN", "--max-drop", "1.5"), "--max-drop 1.5: the allowed drop must lie"),
        (
            (
                "--baseline",
                "MAIN",
                "--max-drop",
                "0.02",
                "--significant-only",
                "--metric",
                "pixel_auroc",
            ),
            "applies to image_auroc, not --metric pixel_auroc",
        ),  # fmt: skip
        (("--significant-only", "--min-robust-auroc", "0.5"), "--significant-only applies to"),
    ],
)
def test_bad_regression_options_exit_2_with_one_sentence(audits, run_cli, extra, message):
    extra = tuple(str(audits["main"]) if a == "MAIN" else a for a in extra)
    res = run_cli("gate", str(audits["weak"]), *extra)
    assert res.exit_code == 2 and message in _flat(res.stderr)


def test_the_summary_table_is_appended_and_escapes_what_the_user_named(audits, run_cli, tmp_path):
    odd = tmp_path / "a|b"
    shutil.copytree(audits["weak"], odd)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    for _ in range(2):
        res = run_cli("gate", str(odd), "--baseline", str(audits["main"]), "--max-drop", "0.02",
                      "--min-robust-auroc", "0.5", "--summary-md", str(summary))  # fmt: skip
        assert res.exit_code == 1
    text = summary.read_text()
    assert text.startswith("earlier step\n") and text.count("### pgaudit gate: ") == 2
    assert f"### pgaudit gate: {tmp_path}/a\\|b: FAIL" in text
    assert "| robust image_auroc | 0.000 | ≥ 0.500 | **FAIL** |" in text
    assert "| robust image_auroc drop | 1.000 | ≤ 0.020 | **FAIL** |" in text


def test_the_report_shows_the_absolute_criteria_when_the_project_sets_max_drop(audits, tmp_path):
    html = pgaudit.render_report(audits["main"], tmp_path / "r.html",
                                 gate_criteria={"min_robust_auroc": 0.5, "max_drop": 0.02})  # fmt: skip
    text = html.read_text()
    assert "needs baseline" not in text and "0.500" in text


def test_the_api_names_parameters(audits):
    with pytest.raises(ParameterError) as caught:
        pgaudit.check_gate(audits["weak"], max_drop=0.02)
    assert caught.value.parameters == ("max_drop", "baseline")


def _flat(text: str) -> str:
    return " ".join(text.split())
