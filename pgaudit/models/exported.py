"""Exported detectors: an ONNX file (onnxruntime) or an OpenVINO IR (``model.xml`` + ``.bin``).

These are the files that run on the line, and they carry no gradients: pgaudit runs them as they
are, on the CPU, and audits them with score-based (black-box) attacks and with attacks crafted on
a surrogate (``--surrogate``, typically the model the file was exported from), see
:func:`pgaudit.attacks.suites.gradient_free_plan`.

The file's contract (the same as a Python detector's, see :mod:`pgaudit.models.adapters`): one
input, an image batch ``[B, 3, S, S]`` in [0, 1] (any normalisation is inside the graph), float32;
outputs either a single anomaly map (``[B, h, w]``, ``[B, 1, h, w]`` or flat), or named ones: the
map ``anomaly_map`` (or ``logits``) and optionally the image score ``pred_score`` or
``image_score`` (anomalib's export names; its ``pred_label``/``pred_mask`` are ignored). A file
exported for a fixed batch size runs in chunks of that size. OpenVINO runs with f32 inference
precision (its CPU plugin otherwise picks bf16 on CPUs that have it), so clean parity with the
source measures the export, not the runtime's precision choice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pgaudit.errors import PgauditError

#: Output names recognised as the anomaly map and as the image score, in order of preference.
MAP_NAMES = ("anomaly_map", "logits", "anomaly_logits")
SCORE_NAMES = ("pred_score", "image_score", "score")
FORMATS = {".onnx": "onnx", ".xml": "openvino"}

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def export_format(path: Path) -> str | None:
    """``"onnx"`` or ``"openvino"`` for a file of that format (by its suffix), else None."""
    return FORMATS.get(path.suffix.lower())


def export_fingerprint(path: Path) -> str:
    """sha256 over the file and its weights file (see :func:`_files`), ``sha256:<hex>``."""
    digest = hashlib.sha256()
    for part in _files(path):
        with open(part, "rb") as handle:
            for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _files(path: Path) -> list[Path]:
    """The file and what it needs beside it: an IR's ``.bin``; an ONNX file's external weights
    (``<name>.data``, as torch.onnx and anomalib write them) when present."""
    if export_format(path) != "openvino":
        weights = path.with_name(path.name + ".data")
        return [path, weights] if weights.is_file() else [path]
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise PgauditError(
            f"{path}: an OpenVINO IR needs its weights {weights.name} beside it; copy the .bin "
            "file that was saved with it."
        )
    return [path, weights]


def _missing(extra: str, package: str) -> PgauditError:
    return PgauditError(
        f"auditing a .{'onnx' if extra == 'onnx' else 'xml'} file needs {package}: "
        f"pip install 'pgaudit[{extra}]'."
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


class ExportedRuntime(nn.Module):
    """An exported file as a module: ``forward(images)`` runs it (no gradients) and returns the
    anomaly map, or ``{"anomaly_map", "image_score"}`` when the file gives a score too."""

    def __init__(
        self,
        runner: Runner,
        *,
        fmt: str,
        input_shape: Sequence[int | None],
        outputs: Sequence[str],
        path: Path,
    ) -> None:
        super().__init__()
        self.runner, self.format, self.path = runner, fmt, path
        self.output_names = list(outputs)
        batch, side = input_shape[0], input_shape[-1]
        self.batch = batch if isinstance(batch, int) and batch > 0 else None
        if isinstance(side, int) and side > 0 and input_shape[-2] == side:
            self.image_size = side
        self.map_name, self.score_name = _choose_outputs(self.output_names, path)

    def train(self, mode: bool = True) -> ExportedRuntime:
        self.training = mode  # an exported graph has one mode
        return self

    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        try:
            return self.runner(images)
        except Exception as exc:
            raise PgauditError(
                f"{self.path} failed on a batch {list(images.shape)} ({_first_line(exc)}); "
                "export it for [B, 3, S, S] float32 images in [0, 1] (pass --image-size S "
                "when its input side is dynamic)."
            ) from None

    def forward(self, images: Tensor) -> Tensor | dict[str, Tensor]:
        array = images.detach().float().cpu().numpy()
        chunks = [array] if self.batch is None else [
            array[i : i + self.batch] for i in range(0, len(array), self.batch)
        ]  # fmt: skip
        maps, scores = [], []
        for chunk in chunks:
            n = len(chunk)
            if self.batch is not None and n < self.batch:  # pad by repeating the last image
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - n, axis=0)])
            out = self._run(np.ascontiguousarray(chunk))
            maps.append(np.asarray(out[self.map_name], dtype=np.float32)[:n])
            if self.score_name is not None:
                scores.append(np.asarray(out[self.score_name], dtype=np.float32).reshape(-1)[:n])
        anomaly_map = torch.from_numpy(np.concatenate(maps)).to(images.device)
        if self.score_name is None:
            return anomaly_map
        score = torch.from_numpy(np.concatenate(scores)).to(images.device)
        return {"anomaly_map": anomaly_map, "image_score": score}

    def describe(self) -> dict[str, Any]:
        """Model-card entries: format, runtime, outputs used."""
        return {
            "architecture": f"{self.format} export",
            "format": self.format,
            "runtime": _runtime_version(self.format),
            "outputs": {"anomaly_map": self.map_name, "image_score": self.score_name},
            "gradients": False,
        }


def _choose_outputs(names: list[str], path: Path) -> tuple[str, str | None]:
    if len(names) == 1:
        return names[0], None
    lower = {n.lower(): n for n in names}
    found_map = next((lower[n] for n in MAP_NAMES if n in lower), None)
    score = next((lower[n] for n in SCORE_NAMES if n in lower), None)
    if found_map is None:
        raise PgauditError(
            f"{path} has outputs {names} but none named {' or '.join(MAP_NAMES)}: export the "
            "anomaly map under one of those names (and the image score as pred_score)."
        )
    return found_map, score


def _runtime_version(fmt: str) -> str:
    from importlib import metadata

    package = "onnxruntime" if fmt == "onnx" else "openvino"
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package


def load_exported_file(path: Path) -> ExportedRuntime:
    """The exported file at ``path`` as an :class:`ExportedRuntime` (CPU, f32)."""
    fmt = export_format(path)
    if fmt == "onnx":
        return _onnx(path)
    if fmt == "openvino":
        return _openvino(path)
    raise PgauditError(f"{path}: not an ONNX (.onnx) or OpenVINO IR (.xml) file.")


def _onnx(path: Path) -> ExportedRuntime:
    try:
        import onnxruntime as ort
    except ImportError:
        raise _missing("onnx", "onnxruntime") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise PgauditError(
            f"{path} is not a loadable ONNX model ({_first_line(exc)}); export it again "
            "(torch.onnx.export, or anomalib's exporter)."
        ) from None
    inputs = session.get_inputs()
    _check_inputs(path, [(i.name, list(i.shape), i.type) for i in inputs], "tensor(float)")
    name = inputs[0].name
    outputs = [o.name for o in session.get_outputs()]

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(outputs, {name: images}), strict=True))

    shape = [d if isinstance(d, int) else None for d in inputs[0].shape]
    return ExportedRuntime(run, fmt="onnx", input_shape=shape, outputs=outputs, path=path)


def _openvino(path: Path) -> ExportedRuntime:
    _files(path)  # the .bin must be there
    try:
        import openvino as ov
    except ImportError:
        raise _missing("openvino", "openvino") from None
    try:
        core = ov.Core()
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except Exception as exc:
        raise PgauditError(
            f"{path} is not a loadable OpenVINO IR ({_first_line(exc)}); save it again with "
            "openvino.save_model (or anomalib's exporter)."
        ) from None
    inputs = compiled.inputs
    described = []
    for port in inputs:
        dims = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        described.append((port.get_any_name(), dims, str(port.get_element_type())))
    _check_inputs(path, described, "<Type: 'float32'>")
    outputs = [port.get_any_name() for port in compiled.outputs]
    request = compiled.create_infer_request()

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        result = request.infer({0: images})
        return {port.get_any_name(): np.asarray(result[port]) for port in compiled.outputs}

    return ExportedRuntime(
        run, fmt="openvino", input_shape=described[0][1], outputs=outputs, path=path
    )


def _check_inputs(path: Path, inputs: list[tuple[str, list[Any], str]], float_type: str) -> None:
    """One float image input ``[B, 3, S, S]``, or a sentence saying what the file takes."""
    if len(inputs) != 1:
        raise PgauditError(
            f"{path} takes {len(inputs)} inputs ({', '.join(i[0] for i in inputs)}); pgaudit "
            "passes one image batch [B, 3, S, S]: export the detector's forward(images)."
        )
    name, shape, kind = inputs[0]
    if len(shape) != 4 or shape[1] not in (3, None):
        raise PgauditError(
            f"{path}: its input {name!r} has shape {shape}; pgaudit passes image batches "
            "[B, 3, S, S] (NCHW): export with that layout."
        )
    if float_type not in kind:
        raise PgauditError(
            f"{path}: its input {name!r} is {kind}; pgaudit passes float32 images in [0, 1]: "
            "export with a float32 input."
        )
