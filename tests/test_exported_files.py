"""Exported files (ONNX, OpenVINO IR) audited as they ship: no gradients, so black-box (NES,
Square) and transfer attacks from a surrogate; export parity against the source model."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

if os.environ.get("PGAUDIT_REQUIRE_EXPORTS"):  # CI installs the extras: fail, never skip
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
    import openvino  # noqa: F401
else:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

from toy_exports import Redness, onnx_export, write_red_squares  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    """The data, the source (a torch.export program), its faithful ONNX export, an OpenVINO IR
    converted from it (when openvino is installed) and a faulty export (another resize)."""
    root = tmp_path_factory.mktemp("shipped")
    write_red_squares(root / "data", size=SIZE, side=8)
    model = Redness(SIZE).eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.rand(2, 3, SIZE, SIZE),),
                                  dynamic_shapes={"x": {0: batch}})  # fmt: skip
    torch.export.save(program, root / "source.pt2")
    onnx_export(model, root / "model.onnx")
    onnx_export(Redness(SIZE, shrink=True), root / "faulty.onnx")
    try:
        import openvino as ov
    except ImportError:
        pass
    else:
        ov.save_model(ov.convert_model(str(root / "model.onnx")), str(root / "model.xml"))
    return root


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def _image_auroc(section: dict) -> float:
    return section["metrics"]["image_auroc"]["value"]


def _audit(run_cli, model: Path, out: Path, *extra: str) -> dict:
    res = run_cli("attack", str(model), str(model.parent / "data"), "--out", str(out),
                  "--device", "cpu", "--bootstrap", "0", "--quiet", *extra)  # fmt: skip
    assert res.exit_code == 0, res.stderr
    return _results(out)


def test_an_onnx_export_gets_black_box_and_transfer_attacks_that_lower_its_auroc(shipped, run_cli):
    source = _audit(run_cli, shipped / "source.pt2", shipped / "audit-source")
    assert _image_auroc(source["robust"]) <= _image_auroc(source["clean"]) - 0.3  # white-box
    found = _audit(run_cli, shipped / "model.onnx", shipped / "audit-onnx",
                   "--surrogate", str(shipped / "source.pt2"))  # fmt: skip
    assert found["model"]["kind"] == "onnx" and found["model"]["card"]["gradients"] is False
    clean = _image_auroc(found["clean"])
    assert clean == pytest.approx(_image_auroc(source["clean"]), abs=1e-6)  # a faithful export
    by_id = {a["id"]: a for a in found["attacks"]}
    assert set(by_id) == {
        "nes-linf-8_255-10-detection", "nes-linf-8_255-10-localization",
        "pgd-linf-8_255-10-detection-transfer", "pgd-linf-8_255-10-localization-transfer",
    }  # fmt: skip
    assert by_id["pgd-linf-8_255-10-detection-transfer"]["transfer"] is True
    assert "Transfer" in by_id["pgd-linf-8_255-10-detection-transfer"]["notes"]
    for attack in ("nes-linf-8_255-10-detection", "pgd-linf-8_255-10-detection-transfer"):
        assert _image_auroc(by_id[attack]) <= clean - 0.1, attack  # each attack works alone
    for skipped in found["suite"]["skipped"]:  # the white-box runs, and what replaced them
        assert "no gradient" in skipped["reason"] and "transfer" in skipped["reason"]
    assert run_cli("report", str(shipped / "audit-onnx")).exit_code == 0
    html = (shipped / "audit-onnx/report.html").read_text()
    assert "nes-linf-8_255-10-detection" in html and "Transfer" in html
    gate = run_cli("gate", str(shipped / "audit-onnx"), "--min-robust-auroc", "0.9")
    assert gate.exit_code == 1  # the robust AUROC of the shipped file is gateable
    parity = found["parity"]  # the export against the model it came from, in the audit
    assert parity["worst_gap"] <= 1e-3 and parity["score"]["rank_correlation"] > 0.999
    (robust,) = [r for r in parity["robust"] if r["attack"].endswith("detection-transfer")]
    assert robust["exported_image_auroc"] == pytest.approx(robust["source_image_auroc"])
    assert "Export parity" in html and 'id="parity"' in html
    gate = run_cli("gate", str(shipped / "audit-onnx"), "--max-parity-gap", "1e-3")
    assert gate.exit_code == 0 and "PASS parity worst gap" in gate.stdout


class _BlueOnly(nn.Module):
    """Gradient-free patch logits from the blue channel: blind to what a Redness surrogate's
    PGD changes (its gradient w.r.t. blue is 0, so blue pixels stay as they are)."""

    image_size = SIZE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x[:, 2:3].detach(), 4)[:, 0] * 10


def test_a_transfer_attack_is_scored_by_the_audited_detector_not_the_surrogate(shipped, tmp_path):
    from pgaudit.api import audit
    from pgaudit.attacks.suites import AttackSpec, Suite

    pgd = AttackSpec("pgd", "native", "inf", 8 / 255, 10, "detection", random_init=False)
    found = audit(_BlueOnly(), shipped / "data", Suite("pgd", "no random start", [pgd]),
                  out_dir=tmp_path / "a", surrogate=Redness(SIZE), bootstrap=0)  # fmt: skip
    transfer = found.attack("pgd-linf-8_255-10-detection-transfer")
    assert transfer.metric("image_auroc").value == found.clean.metric("image_auroc").value
    scores = np.load(tmp_path / "a/scores.npz")
    assert np.array_equal(scores["pgd-linf-8_255-10-detection-transfer.image_scores"],
                          scores["clean.image_scores"])  # fmt: skip


def test_nes_moves_the_objective_further_than_random_search_with_as_many_queries():
    """NES estimates the gradient from scores only; with the same number of queries (5 steps ×
    21) it must beat the best of as many random points of the ε-ball on every image, or it is
    no better than noise (with the suite's tiles; per-pixel probes are far weaker here)."""
    from pgaudit.attacks.algorithms import NativeNES
    from pgaudit.attacks.native import nes, random_start

    model = Redness(SIZE).eval()
    images = torch.rand(4, 3, SIZE, SIZE) * 0.3 + 0.35
    sign = 1 - 2 * torch.tensor([0.0, 0.0, 1.0, 1.0])
    eps, rng = 8 / 255, np.random.RandomState(0)

    def objective(x: torch.Tensor) -> torch.Tensor:
        return sign * model(x).flatten(1).topk(3, dim=1).values.mean(1)

    with torch.no_grad():
        adv = nes(objective, images, eps=eps, steps=5, rng=rng, tile=NativeNES.tile(SIZE))
        assert (adv - images).abs().max() <= eps + 1e-6
        draws = [objective((images + random_start(images.shape, eps, "inf", rng)).clamp(0, 1))
                 for _ in range(5 * 21)]  # fmt: skip
        best_random = torch.stack(draws).max(0).values
        assert (objective(adv) > best_random + 0.2).all()
        assert (objective(adv) > objective(images) + 0.3).all()


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_an_openvino_ir_is_audited_as_its_onnx_source(shipped, run_cli):
    onnx = _results(shipped / "audit-onnx") if (shipped / "audit-onnx").exists() else _audit(
        run_cli, shipped / "model.onnx", shipped / "audit-onnx")  # fmt: skip
    found = _audit(run_cli, shipped / "model.xml", shipped / "audit-ir")
    assert found["model"]["kind"] == "openvino"
    assert _image_auroc(found["clean"]) == pytest.approx(_image_auroc(onnx["clean"]), abs=1e-6)
    nes = next(a for a in found["attacks"] if a["id"] == "nes-linf-8_255-10-detection")
    assert _image_auroc(nes) <= _image_auroc(found["clean"]) - 0.1
    (shipped / "model.bin").rename(shipped / "moved.bin")
    try:
        res = run_cli("attack", str(shipped / "model.xml"), str(shipped / "data"), "--device",
                      "cpu", "--out", str(shipped / "no-bin"))  # fmt: skip
    finally:
        (shipped / "moved.bin").rename(shipped / "model.bin")
    assert res.exit_code == 2 and "model.bin" in res.stderr and "Traceback" not in res.stderr
    assert not (shipped / "no-bin").exists()


def test_a_faulty_export_fails_the_parity_gate_and_an_audit_without_parity_is_refused(
    shipped, run_cli
):
    found = _audit(run_cli, shipped / "faulty.onnx", shipped / "audit-faulty",
                   "--surrogate", str(shipped / "source.pt2"))  # fmt: skip
    assert found["parity"]["worst_gap"] > 0.05
    gate = run_cli("gate", str(shipped / "audit-faulty"), "--max-parity-gap", "1e-3")
    assert gate.exit_code == 1 and "FAIL parity worst gap" in gate.stdout
    plain = _audit(run_cli, shipped / "model.onnx", shipped / "audit-plain")  # no --surrogate
    assert "parity" not in plain
    gate = run_cli("gate", str(shipped / "audit-plain"), "--max-parity-gap", "1e-3")
    assert gate.exit_code == 2 and "--surrogate" in gate.stderr


def test_parity_is_exact_for_a_faithful_export_and_flags_a_different_resize(shipped, run_cli):
    from pgaudit import cli_parity, parity

    assert cli_parity.DEFAULT_MAX_GAP == parity.DEFAULT_MAX_GAP
    data = str(shipped / "data")
    res = run_cli("parity", str(shipped / "source.pt2"), str(shipped / "model.onnx"), data,
                  "--device", "cpu", "--out", str(shipped / "parity.json"))  # fmt: skip
    assert res.exit_code == 0, res.stderr
    found = json.loads((shipped / "parity.json").read_text())
    assert found["schema"] == "pgaudit.parity/1" and found["images"] == 16
    assert found["worst_gap"] <= 1e-3 and found["score"]["rank_correlation"] > 0.999
    assert found["robust_gap"] == pytest.approx(0, abs=1e-6)  # the same images, the same scores
    assert found["robust_source_auroc"] <= found["score"]["source_auroc"] - 0.3
    res = run_cli("parity", str(shipped / "source.pt2"), str(shipped / "faulty.onnx"), data,
                  "--device", "cpu", "--out", str(shipped / "faulty.json"))  # fmt: skip
    assert res.exit_code == 1 and "exceeds" in res.stdout
    faulty = json.loads((shipped / "faulty.json").read_text())
    assert faulty["worst_gap"] > 0.05 and faulty["pixel_map"]["max_gap"] > 0.05
    if (shipped / "model.xml").exists():  # OpenVINO in f32 agrees with its ONNX source
        res = run_cli("parity", str(shipped / "source.pt2"), str(shipped / "model.xml"), data,
                      "--device", "cpu", "--out", str(shipped / "ir.json"))  # fmt: skip
        assert res.exit_code == 0, res.stdout + res.stderr
        assert json.loads((shipped / "ir.json").read_text())["worst_gap"] <= 1e-3


def test_bad_exported_files_are_one_sentence(shipped, run_cli, tmp_path, monkeypatch):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    res = run_cli("attack", str(broken), str(shipped / "data"), "--device", "cpu",
                  "--out", str(tmp_path / "a"))  # fmt: skip
    assert res.exit_code == 2 and "not a loadable ONNX model" in res.stderr
    res = run_cli("harden", str(shipped / "model.onnx"), str(shipped / "data"),
                  "--out", str(tmp_path / "h.pt"))  # fmt: skip
    assert res.exit_code == 2 and "harden the model it was exported from" in res.stderr
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # not installed
    res = run_cli("attack", str(shipped / "model.onnx"), str(shipped / "data"), "--device",
                  "cpu", "--out", str(tmp_path / "b"))  # fmt: skip
    assert res.exit_code == 2 and "pip install 'pgaudit[onnx]'" in res.stderr
