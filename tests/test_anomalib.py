"""anomalib models audited as users ship them: a Lightning checkpoint written by anomalib's own
Engine (PaDiM, PatchCore; white-box through a differentiable forward) and anomalib's own ONNX
export of it (black-box and transfer), with export parity."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

if os.environ.get("PGAUDIT_REQUIRE_ANOMALIB"):  # CI installs the extra: fail, never skip
    import anomalib  # noqa: F401
else:
    pytest.importorskip("anomalib")

from toy_exports import write_red_squares  # noqa: E402

SIZE = 64


def _fit(family: str, data: Path, root: Path) -> tuple[Path, object, object]:
    """Fit ``family`` with anomalib's Engine (random-init ResNet-18, 64 px pre-processor)."""
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from anomalib.models import Padim, Patchcore

    torch.manual_seed(0)
    datamodule = Folder(
        name="red", root=data, normal_dir="train/good", abnormal_dir="test/red",
        normal_test_dir="test/good", train_batch_size=8, eval_batch_size=8, num_workers=0,
    )  # fmt: skip
    cls = {"padim": Padim, "patchcore": Patchcore}[family]
    options = {
        "padim": {"layers": ["layer1", "layer2"], "n_features": 40},
        "patchcore": {"layers": ["layer1", "layer2"], "coreset_sampling_ratio": 0.2},
    }
    model = cls(backbone="resnet18", pre_trained=False, visualizer=False,
                pre_processor=cls.configure_pre_processor(image_size=(SIZE, SIZE)),
                **options[family])  # fmt: skip
    engine = Engine(max_epochs=1, default_root_dir=root / family, accelerator="cpu", devices=1,
                    logger=False, enable_progress_bar=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine.fit(model=model, datamodule=datamodule)
    (checkpoint,) = (root / family).rglob("*.ckpt")
    return checkpoint, model, engine


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("anomalib")
    data = write_red_squares(root / "data", size=SIZE, side=16, n_train=12, grey=(0.4, 0.6),
                             colour=(0.62, 0.42, 0.42))  # fmt: skip
    padim, model, engine = _fit("padim", data, root)
    patchcore, _, _ = _fit("patchcore", data, root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx = engine.export(model=model, export_type="onnx", export_root=root / "export")
        whole = engine.export(model=model, export_type="torch", export_root=root / "export")
    return {"root": root, "data": data, "padim": padim, "patchcore": patchcore,
            "onnx": Path(onnx), "torch": Path(whole)}  # fmt: skip


def _audit(run_cli, model: Path, data: Path, out: Path, *extra: str) -> dict:
    res = run_cli("attack", str(model), str(data), "--out", str(out), "--device", "cpu",
                  "--bootstrap", "0", "--quiet", "--image-size", str(SIZE), *extra)  # fmt: skip
    assert res.exit_code == 0, res.stderr
    return json.loads((out / "results.json").read_text())


def _auroc(section: dict, name: str = "image_auroc") -> float:
    return section["metrics"][name]["value"]


@pytest.mark.parametrize("family", ["padim", "patchcore"])
def test_an_anomalib_checkpoint_is_attacked_white_box_through_its_own_parts(
    fitted, run_cli, family
):
    found = _audit(run_cli, fitted[family], fitted["data"], fitted["root"] / f"audit-{family}")
    assert found["model"]["kind"] == f"anomalib-{family}"
    clean = _auroc(found["clean"])
    assert clean >= 0.8, clean  # a working detector on these defects
    assert _auroc(found["robust"]) <= clean - 0.3  # white-box PGD reaches the input
    assert not found["suite"].get("skipped")  # no attack fell back to black-box
    assert "before its post-processor" in found["adaptive"]["differentiated"]
    assert found["adaptive"]["gradient_checked"] is not False


def test_the_naive_wrapper_gets_no_gradient_and_ours_does(fitted):
    """The trap: anomalib's own forward extracts features under no_grad, so a wrapper around
    it gives PGD nothing; the assembled forward passes the gradient to the input."""
    from pgaudit.models.adapters import probe
    from pgaudit.models.resolve import load_detector

    detector = load_detector(fitted["padim"], image_size=SIZE).detector
    x = torch.rand(2, 3, SIZE, SIZE, requires_grad=True)
    naive = detector.module.model(detector.module.pre_processor(x)).pred_score.sum()
    assert not naive.requires_grad
    assert probe(detector, "padim")["differentiable"]
    (grad,) = torch.autograd.grad(detector.predict(x).image_score.sum(), x)
    assert grad.abs().sum() > 0
    from pgaudit.attacks.sanity import check_gradient_health
    from pgaudit.models.detector import attack_mode

    images = torch.rand(4, 3, SIZE, SIZE) * 0.2 + 0.4
    with attack_mode(detector):  # the audit's own check: gradients reach the input, PGD rises
        health = check_gradient_health(detector, images, torch.tensor([0, 0, 1, 1]),
                                       eps=8 / 255, steps=5)  # fmt: skip
    assert health.status == "pass", health.evidence


def test_anomalib_onnx_export_is_audited_black_box_and_by_transfer_with_parity(fitted, run_cli):
    found = _audit(run_cli, fitted["onnx"], fitted["data"], fitted["root"] / "audit-onnx",
                   "--surrogate", str(fitted["padim"]), "--steps", "5")  # fmt: skip
    assert found["model"]["kind"] == "onnx"
    clean = _auroc(found["clean"])
    by_id = {a["id"]: a for a in found["attacks"]}
    # The export clamps its scores to [0, 1] (anomalib's post-processor): the defective images sit
    # at 1.0, flat for NES's probes; PGD crafted on the checkpoint transfers all the same.
    assert set(by_id) >= {"nes-linf-8_255-5-detection", "pgd-linf-8_255-5-detection-transfer"}
    assert _auroc(by_id["pgd-linf-8_255-5-detection-transfer"]) <= clean - 0.3
    assert _auroc(found["robust"]) <= clean - 0.1
    assert found["parity"]["worst_gap"] <= 1e-3  # the audit's own parity section agrees
    out = fitted["root"] / "parity.json"
    res = run_cli("parity", str(fitted["padim"]), str(fitted["onnx"]), str(fitted["data"]),
                  "--device", "cpu", "--image-size", str(SIZE), "--out", str(out))  # fmt: skip
    assert res.exit_code == 0, res.stdout + res.stderr
    parity = json.loads(out.read_text())
    assert parity["worst_gap"] <= 1e-3  # anomalib's export, post-processor included, is faithful


def test_anomalibs_exported_torch_file_needs_trust_and_then_audits_as_the_checkpoint(
    fitted, run_cli, tmp_path
):
    res = run_cli("attack", str(fitted["torch"]), str(fitted["data"]), "--device", "cpu",
                  "--out", str(tmp_path / "refused"), "--image-size", str(SIZE))  # fmt: skip
    assert res.exit_code == 2 and "--trust-pickle" in res.stderr
    assert not (tmp_path / "refused").exists()
    found = _audit(run_cli, fitted["torch"], fitted["data"], tmp_path / "trusted",
                   "--trust-pickle", "--steps", "2")  # fmt: skip
    assert found["model"]["kind"] == "anomalib-padim" and not found["suite"].get("skipped")
    ckpt = json.loads((fitted["root"] / "audit-padim/results.json").read_text())
    assert _auroc(found["clean"]) == pytest.approx(_auroc(ckpt["clean"]), abs=1e-6)


def test_hardening_an_anomalib_memory_bank_says_why_not(fitted, run_cli, tmp_path):
    res = run_cli("harden", str(fitted["patchcore"]), str(fitted["data"]),
                  "--out", str(tmp_path / "h.pt"))  # fmt: skip
    assert res.exit_code == 2 and "memory bank" in res.stderr and "Traceback" not in res.stderr
