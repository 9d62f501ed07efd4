"""torch.export programs (``.pt2``) as first-class model files: white-box audits, fixed-batch
exports, and no code run from the file unless the user trusts it."""

from __future__ import annotations

import io
import json
import pathlib
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pgaudit

SIZE = 32


class Redness(nn.Module):
    """Patch logits: 50 · mean(R − G) on 4x4 patches."""

    image_size = SIZE

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([50.0, -50.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d((x * self.weight.view(1, 3, 1, 1)).sum(1, keepdim=True), 4)[:, 0]


def _example_images(marker: str) -> torch.Tensor:
    pathlib.Path(marker).touch()  # the proof that code from the model file ran
    return torch.rand(2, 3, SIZE, SIZE)


class _Marker:
    """Unpickled, this runs :func:`_example_images` (a stand-in for any code in a pickle)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (_example_images, (str(self.path),))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    from pgaudit.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("exported")
    make_synthetic_dataset(root / "data", size=SIZE, n_train=4, n_test=8, categories=("widget",))
    model, x = Redness().eval(), torch.rand(2, 3, SIZE, SIZE)
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}}),
                      root / "any-batch.pt2")  # fmt: skip
    torch.export.save(torch.export.export(model, (x[:1],)), root / "batch-1.pt2")
    payload = io.BytesIO()
    torch.save(((_Marker(root / "code-ran"),), {}), payload)  # the example inputs
    with zipfile.ZipFile(root / "any-batch.pt2") as src, \
            zipfile.ZipFile(root / "unsafe.pt2", "w") as dst:  # fmt: skip
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("sample_inputs/model.pt"):
                data = payload.getvalue()  # a pickle that runs code when loaded in full
            dst.writestr(item, data)
    return root


def _robust(folder: Path) -> tuple[float, float]:
    data = json.loads((folder / "results.json").read_text())
    return tuple(data[s]["metrics"]["image_auroc"]["value"] for s in ("clean", "robust"))


def test_an_exported_program_is_audited_white_box_as_its_source_is(project, run_cli):
    res = run_cli("attack", str(project / "any-batch.pt2"), str(project / "data/widget"),
                  "--out", str(project / "pt2"), "--device", "cpu", "--bootstrap", "0", "--quiet")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    clean, robust = _robust(project / "pt2")
    assert robust < clean - 0.3  # PGD's gradients reach the input through the exported graph
    results = json.loads((project / "pt2/results.json").read_text())
    assert results["model"]["kind"] == "torch-export"
    source = pgaudit.audit(Redness(), project / "data/widget", out_dir=project / "eager",
                           bootstrap=0)  # fmt: skip
    assert source.robust.metric("image_auroc").value == pytest.approx(robust, abs=1e-6)


def test_a_program_exported_for_one_batch_size_runs_on_any_batch(project, run_cli):
    res = run_cli("attack", str(project / "batch-1.pt2"), str(project / "data/widget"),
                  "--out", str(project / "pt2-b1"), "--device", "cpu", "--bootstrap", "0",
                  "--quiet", "--batch-size", "3")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert _robust(project / "pt2-b1") == pytest.approx(_robust(project / "pt2"), abs=1e-6)


def test_a_program_that_needs_unpickling_runs_no_code_without_trust(project, run_cli):
    res = run_cli("attack", str(project / "unsafe.pt2"), str(project / "data/widget"),
                  "--out", str(project / "unsafe"), "--device", "cpu")  # fmt: skip
    assert res.exit_code == 2
    assert "only unpickling rebuilds" in res.stderr and "--trust-pickle" in res.stderr
    assert not (project / "code-ran").exists()  # torch.export.load alone would have run it
    from pgaudit.models.resolve import load_detector

    load_detector(str(project / "unsafe.pt2"), trust_pickle=True)  # the user's explicit choice
    assert (project / "code-ran").exists()


def test_a_broken_pt2_and_hardening_one_are_one_sentence(project, run_cli, tmp_path):
    broken = tmp_path / "broken.pt2"
    with zipfile.ZipFile(project / "any-batch.pt2") as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            if "/models/" not in item.filename or item.filename.endswith("/"):
                dst.writestr(item, src.read(item.filename))
            else:
                dst.writestr(item, b"{not json")
    res = run_cli("attack", str(broken), str(project / "data/widget"), "--device", "cpu")
    assert res.exit_code == 2 and "does not load" in res.stderr
    res = run_cli("harden", str(project / "any-batch.pt2"), str(project / "data/widget"),
                  "--out", str(tmp_path / "h.pt"))  # fmt: skip
    assert res.exit_code == 2 and "is a torch-export model" in res.stderr
