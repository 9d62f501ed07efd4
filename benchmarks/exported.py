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
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from toy_exports import Redness, onnx_export, write_red_squares  # noqa: E402  (tests/toy_exports.py)

SIZE = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/exported"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import openvino as ov

    from pgaudit.api import audit, export_parity_of, load_detector

    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    write_red_squares(out / "data", size=SIZE, side=12, n_good=20, n_bad=20, seed=args.seed)
    torch.export.save(
        torch.export.export(Redness(SIZE).eval(), (torch.rand(2, 3, SIZE, SIZE),),
                            dynamic_shapes={"x": {0: torch.export.Dim("batch")}}),
        out / "source.pt2",
    )  # fmt: skip
    onnx_export(Redness(SIZE), out / "model.onnx")
    onnx_export(Redness(SIZE, shrink=True), out / "faulty.onnx")
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
