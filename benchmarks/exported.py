"""Exported files audited as they ship: parity and robustness of a model and its exports.

A differentiable patch detector (logits 50 · mean(R − G) per 4x4 patch, 64 px) on an MVTec-layout
category of grey noise with faint red squares (exact masks) is saved as a torch.export program
(the source), exported to ONNX (torch.onnx, dynamo) and converted to OpenVINO IR; a faulty export
resizes the image to 3/4 and back first. Then, as a user would:

    pgaudit attack source.pt2 data                     # white-box quick suite
    pgaudit attack model.onnx data --surrogate source.pt2   # NES + transfer
    pgaudit attack model.xml data --surrogate source.pt2
    pgaudit parity source.pt2 model.onnx data          # and faulty.onnx, model.xml

Prints ``METRIC name value unit`` lines. Needs ``pip install -e ".[onnx,openvino]"``.

    python benchmarks/exported.py [--out runs/exported] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

SIZE = 64


class Redness(nn.Module):
    image_size = SIZE

    def __init__(self, shrink: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([50.0, -50.0, 0.0]))
        self.shrink = shrink

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shrink:
            x = F.interpolate(x, size=(SIZE * 3 // 4,) * 2, mode="bilinear", antialias=True)
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear")
        return F.avg_pool2d((x * self.weight.view(1, 3, 1, 1)).sum(1, keepdim=True), 4)[:, 0]


def write_category(root: Path, seed: int, n_good: int = 20, n_bad: int = 20) -> None:
    rng = np.random.default_rng(seed)
    for folder in ("train/good", "test/good", "test/red", "ground_truth/red"):
        (root / folder).mkdir(parents=True)

    def grey() -> np.ndarray:
        return np.repeat(rng.uniform(0.35, 0.65, (SIZE, SIZE, 1)), 3, axis=2)

    def save(array: np.ndarray, path: Path) -> None:
        Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)).save(path)

    for i in range(4):
        save(grey(), root / f"train/good/{i:03d}.png")
    for i in range(n_good):
        save(grey(), root / f"test/good/{i:03d}.png")
    for i in range(n_bad):
        image, mask = grey(), np.zeros((SIZE, SIZE), np.uint8)
        y, x = rng.integers(0, SIZE - 12, 2)
        image[y : y + 12, x : x + 12, 0] += 0.02
        image[y : y + 12, x : x + 12, 1] -= 0.02
        mask[y : y + 12, x : x + 12] = 255
        save(image, root / f"test/red/{i:03d}.png")
        Image.fromarray(mask).save(root / f"ground_truth/red/{i:03d}_mask.png")


def export_onnx(model: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.rand(2, 3, SIZE, SIZE),), str(path), input_names=["images"],
            output_names=["anomaly_map"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            dynamo=True, verbose=False, external_data=False,
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/exported"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import openvino as ov

    from pgaudit.api import audit, export_parity_of, load_detector

    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    write_category(out / "data", args.seed)
    torch.export.save(
        torch.export.export(Redness().eval(), (torch.rand(2, 3, SIZE, SIZE),),
                            dynamic_shapes={"x": {0: torch.export.Dim("batch")}}),
        out / "source.pt2",
    )  # fmt: skip
    export_onnx(Redness(), out / "model.onnx")
    export_onnx(Redness(shrink=True), out / "faulty.onnx")
    ov.save_model(ov.convert_model(str(out / "model.onnx")), str(out / "model.xml"))

    source = str(out / "source.pt2")
    for name in ("source.pt2", "model.onnx", "model.xml"):
        model = load_detector(out / name)
        stand_in = None if name == "source.pt2" else load_detector(source)
        found = audit(model, out / "data", "quick", out_dir=out / f"audit-{name}",
                      surrogate=stand_in, bootstrap=0, seed=args.seed)  # fmt: skip
        tag = name.replace(".", "_")
        print(f"METRIC {tag}_clean_image_auroc {found.clean.metric('image_auroc').value:.3f} auroc")
        for entry in found.attacks:
            value = entry.metric("image_auroc").value
            print(f"METRIC {tag}_{entry.id}_image_auroc {value:.3f} auroc")
        print(
            f"METRIC {tag}_robust_image_auroc {found.robust.metric('image_auroc').value:.3f} auroc"
        )
    for name in ("model.onnx", "model.xml", "faulty.onnx"):
        report = export_parity_of(source, out / name, out / "data", seed=args.seed)
        tag = name.replace(".", "_")
        (out / f"parity-{tag}.json").write_text(json.dumps(report.to_json(), indent=2))
        print(f"METRIC parity_{tag}_worst_gap {report.worst_gap:.2e} of_range")
        print(f"METRIC parity_{tag}_score_rank_correlation {report.score.rank_correlation:.4f} rho")
        print(f"METRIC parity_{tag}_robust_gap {report.robust_gap:+.3f} auroc")


if __name__ == "__main__":
    main()
