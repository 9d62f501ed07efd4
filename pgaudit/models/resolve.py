"""The MODEL argument of ``harden``, ``attack`` and ``report`` -> a detector: one resolver for all.

Accepted, tried in this order:

- a **pgaudit checkpoint** (from ``train``/``harden``, or a baseline from ``fit-baseline``:
  kinds ``patchguard``, ``patchcore``, ``autoencoder``);
- a **checkpoint of the official PatchGuard code** (a plain state_dict, recognised by its keys;
  kind ``official-patchguard``; see :mod:`pgaudit.models.official`);
- a **TorchScript** file (recognised by content: a zip with ``constants.pkl``/``code/``);
- a **torch.export program** (``torch.export.save``, ``.pt2``; recognised by content: a zip with
  ``archive_format`` and ``models/``), attacked white-box through the program's own graph; one
  exported for a fixed batch size is run in chunks of that size;
- an **anomalib checkpoint** (anomalib 2.x ``Engine``/Lightning ``.ckpt``; families PaDiM and
  PatchCore, attacked white-box through a differentiable forward, see
  :mod:`pgaudit.models.anomalib_models`; extra ``pgaudit[anomalib]``);
- an **ONNX** file (``.onnx``, onnxruntime) or an **OpenVINO IR** (``.xml`` + ``.bin``): run as
  they ship, without gradients, so audited by black-box and transfer attacks (see
  :mod:`pgaudit.models.exported`; extras ``pgaudit[onnx]``, ``pgaudit[openvino]``);
- a **Python factory** ``package.module:function`` imported from the working directory and
  ``PYTHONPATH``, called without arguments (or with ``image_size=`` when it takes one), returning an
  ``nn.Module`` (kind ``python``);
- with ``trust_pickle=True`` only: a file holding a whole pickled ``nn.Module`` (kind ``pickle``).

Files are always read with ``torch.load(weights_only=True)`` first, which never runs code from the
file; a file that needs more is refused with a message naming ``--trust-pickle``. User modules are
wrapped by :class:`pgaudit.models.adapters.DetectorAdapter` (output contract in that module) and
probed once with two random images, so a bad output fails at load time with a clear message.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pgaudit.errors import ParameterError, PgauditError
from pgaudit.models.adapters import DetectorAdapter, probe, resolve_image_size
from pgaudit.models.checkpoint import (
    check_payload,
    fingerprint,
    is_pgaudit_checkpoint,
    model_from_payload,
    read_torch_file,
    weights_fingerprint,
)
from pgaudit.models.detector import Detector

ACCEPTED = (
    "a pgaudit checkpoint (pgaudit train/harden/fit-baseline), an official PatchGuard state_dict "
    "(feature_extractor.pretrained_model.* + discriminator.*), a TorchScript or torch.export "
    "(.pt2) file, an anomalib checkpoint (.ckpt), an ONNX (.onnx) or OpenVINO (.xml) export, "
    "a Python "
    "factory package.module:function, or a pickled nn.Module with --trust-pickle"
)

_BASELINE_NAMES = {"patchcore": "PatchCore baseline", "autoencoder": "Autoencoder baseline"}
_FACTORY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass
class LoadedDetector:
    """A resolved MODEL: the detector (eval mode, on the device) and what the report says of it."""

    detector: Detector
    kind: str
    name: str
    fingerprint: str
    card: dict[str, Any] = field(default_factory=dict)
    trainable: bool = False
    spec: str = ""

    def model_info(self) -> dict[str, Any]:
        """The ``model`` section of results.json: spec, kind, name, fingerprint, config, card."""
        config = self.detector.card().config
        return {
            "spec": self.spec,
            "kind": self.kind,
            "name": self.name,
            "preset": self.card.get("preset"),
            "fingerprint": self.fingerprint,
            "config": config,
            "training": self.card.get("training", {}),
            "card": self.card,
        }


def load_detector(
    spec: str | Path,
    *,
    device: str | torch.device = "cpu",
    trust_pickle: bool = False,
    backbone: str | None = None,
    image_size: int | None = None,
    grid: tuple[int, int] | None = None,
    feature_blocks: tuple[int, ...] | None = None,
    factory: str | None = None,
) -> LoadedDetector:
    """Resolve MODEL (a file or ``package.module:function``) into a detector; see the module doc.

    ``backbone`` and ``feature_blocks`` apply to official PatchGuard checkpoints; ``image_size``
    declares the input side of user modules (and must agree with fixed-size models); ``grid``
    reshapes flat ``[B, h*w]`` outputs of user modules whose grid is not square. ``factory``:
    the ``package.module:function`` a hardened Python detector's checkpoint was made from; such a
    checkpoint names its factory, and pgaudit imports and calls it only when the caller names the
    same one here (or passes ``trust_pickle``): a model file never picks the code that runs.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        loaded = _load_file(path, trust_pickle, backbone, image_size, grid, feature_blocks, factory)
    elif path.is_dir():
        raise PgauditError(f"{path} is a folder: pass a model file or package.module:function.")
    elif _FACTORY.match(text):
        loaded = _load_factory(text, image_size, grid)
    else:
        raise PgauditError(
            f"{text}: no such file, and not a Python factory package.module:function; pass a "
            "model file path or e.g. mypkg.detectors:build."
        )
    if backbone is not None and loaded.kind != "official-patchguard":
        raise ParameterError(
            f"backbone {backbone}: only applies to official PatchGuard checkpoints, but "
            f"{text} is a {loaded.kind} model; drop backbone.",
            "backbone",
            "backbone",
        )
    if image_size is not None and int(loaded.detector.image_size) != image_size:
        raise ParameterError(
            f"image_size {image_size}: {text} expects {loaded.detector.image_size} px; drop "
            "image_size.",
            "image_size",
            "image_size",
        )
    loaded.detector.to(device).eval()
    if isinstance(loaded.detector, DetectorAdapter):  # check a user module's output early
        loaded.card.update(probe(loaded.detector, loaded.detector.name, device))
    loaded.spec = text
    loaded.card = {
        "kind": loaded.kind,
        "name": loaded.name,
        "source": text,
        "fingerprint": loaded.fingerprint,
        "trainable": loaded.trainable,
        **loaded.card,
    }
    loaded.card.setdefault("image_size", int(loaded.detector.image_size))
    return loaded


# --- files ---


def implied_factory(model: str | Path, factory: str | None) -> str | None:
    """``factory``, else ``model`` itself when it is a ``package.module:function`` (hardening a
    factory and resuming its checkpoint names the factory already)."""
    if factory is not None:
        return factory
    text = str(model)
    return text if _FACTORY.match(text) and not Path(text).exists() else None


def _zip_names(path: Path) -> list[str]:
    """The member names of a zip archive ([] for any other file)."""
    if not zipfile.is_zipfile(path):
        return []
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (a zip holding ``constants.pkl`` or ``code/``)."""
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in _zip_names(path))


def is_exported_program(path: Path) -> bool:
    """True for a ``torch.export.save`` archive (a zip with ``archive_format`` and ``models/``)."""
    names = _zip_names(path)
    return any(n.endswith("/archive_format") for n in names) and any("/models/" in n for n in names)


class ExportedModule(nn.Module):
    """A torch.export program's module as a plain one: its graph has a single mode (train/eval
    only set the flag), and one exported for batches of exactly ``batch`` images runs on any batch
    in chunks (the last padded by repeating its final image, the padding dropped again)."""

    def __init__(self, program: nn.Module, batch: int | None = None) -> None:
        super().__init__()
        self.program, self.batch = program, batch

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode  # the exported graph cannot switch modes
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.batch is None:
            return self.program(images)
        outputs = []
        for chunk in images.split(self.batch):
            n = chunk.shape[0]
            if n < self.batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - n, *chunk.shape[1:])])
            outputs.append(self.program(chunk)[:n])
        return torch.cat(outputs)


def _read_exported(path: Path, trust_pickle: bool) -> Any:
    """``torch.export.load`` that never unpickles code unless ``trust_pickle``: torch falls back to
    ``torch.load(weights_only=False)`` on its own when a weights_only load fails."""
    import pickle
    from unittest import mock

    real = torch.load

    def chosen(*args: Any, **kwargs: Any) -> Any:  # the user's choice, never torch's fallback
        return real(*args, **{**kwargs, "weights_only": not trust_pickle})

    try:
        with mock.patch.object(torch, "load", chosen):
            return torch.export.load(str(path))
    except pickle.UnpicklingError:
        raise PgauditError(
            f"{path} is a torch.export program holding objects only unpickling rebuilds (which "
            "runs code from the file); pass --trust-pickle only if you trust its source."
        ) from None
    except Exception as exc:
        raise PgauditError(
            f"{path} looks like a torch.export program but does not load "
            f"({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}); save it "
            "again with torch.export.save from this torch version."
        ) from None


def _load_exported(
    path: Path, digest: str, trust_pickle: bool, image_size: int | None,
    grid: tuple[int, int] | None,
) -> LoadedDetector:  # fmt: skip
    program = _read_exported(path, trust_pickle)
    inputs = [n for n in program.graph.nodes if n.op == "placeholder"
              and n.name in program.graph_signature.user_inputs]  # fmt: skip
    shape = getattr(inputs[0].meta.get("val"), "shape", None) if len(inputs) == 1 else None
    if shape is None or len(shape) != 4:
        raise PgauditError(
            f"{path}: the exported program takes {len(inputs)} input(s); pgaudit passes one "
            "image batch [B, 3, S, S]: export the detector's forward(images)."
        )
    if image_size is None and isinstance(shape[-1], int) and shape[-1] == shape[-2]:
        image_size = int(shape[-1])
    batch = int(shape[0]) if isinstance(shape[0], int) else None  # exported for one batch size
    module = ExportedModule(program.module(), batch)
    label = f"torch.export program {path}"
    return _adapt(module, "torch-export", f"torch.export ({path.name})", digest, label, image_size,
                  grid)  # fmt: skip


def _load_file(
    path: Path,
    trust_pickle: bool,
    backbone: str | None,
    image_size: int | None,
    grid: tuple[int, int] | None,
    feature_blocks: tuple[int, ...] | None,
    factory: str | None = None,
) -> LoadedDetector:
    from pgaudit.models.exported import export_format

    if export_format(path) is not None:
        return _load_export(path, image_size, grid)
    digest = fingerprint(path)
    if is_torchscript(path):
        return _load_torchscript(path, digest, image_size, grid)
    if is_exported_program(path):
        return _load_exported(path, digest, trust_pickle, image_size, grid)
    payload = read_torch_file(path, trust_pickle=trust_pickle)
    from pgaudit.models.anomalib_models import is_anomalib_checkpoint, is_anomalib_torch_export

    if is_anomalib_checkpoint(payload) or is_anomalib_torch_export(payload):
        return _load_anomalib(payload, path, digest, image_size)
    if is_pgaudit_checkpoint(payload):
        return _load_pgaudit(payload, path, digest, factory, trust_pickle)
    if isinstance(payload, nn.Module):
        return _load_module(payload, path, digest, image_size, grid)
    if isinstance(payload, Mapping):
        from pgaudit.models.official import is_official_state_dict, load_official, unwrap_state_dict

        state = unwrap_state_dict(payload)
        if is_official_state_dict(state):
            model, notes = load_official(
                state,
                path=path,
                backbone=backbone,
                image_size=image_size,
                feature_blocks=feature_blocks,
            )
            card = {**model.card().info, "official": notes}
            display = f"PatchGuard (official {path.stem})"
            return LoadedDetector(model, "official-patchguard", display, digest, card, True)
        keys = [str(k) for k in list(state)[:3]]
        raise PgauditError(
            f"{path} holds {len(state)} entries (e.g. {keys}) in no layout pgaudit knows; "
            f"pass {ACCEPTED}."
        )
    raise PgauditError(
        f"{path} holds a {type(payload).__name__}, not a model pgaudit knows; pass {ACCEPTED}."
    )


def _load_pgaudit(
    payload: dict[str, Any], path: Path, digest: str, factory: str | None = None,
    trust_pickle: bool = False,
) -> LoadedDetector:  # fmt: skip
    check_payload(payload, path)
    kind = payload.get("kind", "patchguard")
    meta = {
        "pgaudit_version": payload.get("pgaudit_version"),
        "training": payload.get("training", {}),
    }
    if kind == "patchguard":
        model = model_from_payload(payload, path)
        display = f"PatchGuard ({model.config.name})"
        return LoadedDetector(model, kind, display, digest, {**model.card().info, **meta}, True)
    if kind == "python":  # a hardened user detector: rebuild from its factory, then its weights
        stored = payload.get("spec")
        if not isinstance(stored, str) or not _FACTORY.match(stored):
            raise PgauditError(f"{path}: a Python detector checkpoint without a valid factory "
                               f"({stored!r}); it was edited: harden the detector again.")  # fmt: skip
        if factory != stored and not trust_pickle:
            raise ParameterError(
                f"{path} holds the weights of the Python detector {stored!r}; loading it imports "
                f"and runs that code, so confirm it: pass factory {stored} (or trust_pickle).",
                "factory", "trust_pickle",
            )  # fmt: skip
        loaded = load_detector(stored, image_size=int(payload["image_size"]))
        try:
            loaded.detector.load_state_dict(payload["state_dict"])
        except RuntimeError:
            raise PgauditError(
                f"{path} holds weights that {payload['spec']} no longer accepts: the factory's "
                "architecture changed since hardening; rebuild it as it was or harden again."
            ) from None
        loaded.name = f"{payload['spec']} (hardened, {path.name})"
        loaded.fingerprint, loaded.card = digest, {**loaded.card, **meta}
        return loaded
    from pgaudit.models.baselines import BASELINES, baseline_from_payload

    if kind in BASELINES:
        model = baseline_from_payload(payload, path)
        display = f"{_BASELINE_NAMES[kind]} ({path.stem})"
        return LoadedDetector(model, kind, display, digest, {**model.card().info, **meta}, False)
    raise PgauditError(
        f"{path} is a pgaudit checkpoint of kind {kind!r}, unknown to this version "
        f"({payload.get('pgaudit_version')}); upgrade pgaudit."
    )


def _load_anomalib(
    payload: Mapping[str, Any], path: Path, digest: str, image_size: int | None
) -> LoadedDetector:
    from pgaudit.models.anomalib_models import (
        FAMILIES,
        from_torch_export,
        is_anomalib_torch_export,
        load_anomalib,
    )

    if is_anomalib_torch_export(payload):  # unpickled already: the user passed trust_pickle
        model = from_torch_export(payload, path, image_size)
    else:
        model = load_anomalib(payload, path, image_size)
    kind = f"anomalib-{model.family}"
    display = f"anomalib {FAMILIES[model.family][0]} ({path.name})"
    return LoadedDetector(model, kind, display, digest, model.card().info, False)


def _load_export(
    path: Path, image_size: int | None, grid: tuple[int, int] | None
) -> LoadedDetector:
    from pgaudit.models.exported import export_fingerprint, load_exported_file

    digest = export_fingerprint(path)
    runtime = load_exported_file(path)
    kind = runtime.format
    label = f"{'ONNX' if kind == 'onnx' else 'OpenVINO'} model {path}"
    return _adapt(runtime, kind, f"{label.split(' model')[0]} ({path.name})", digest, label,
                  image_size, grid)  # fmt: skip


def _load_torchscript(
    path: Path, digest: str, image_size: int | None, grid: tuple[int, int] | None
) -> LoadedDetector:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise PgauditError(
            f"{path} looks like TorchScript but does not load ({str(exc).splitlines()[0][:160]}); "
            "save it again with torch.jit.save."
        ) from None
    label = f"TorchScript model {path}"
    return _adapt(
        module, "torchscript", f"TorchScript ({path.name})", digest, label, image_size, grid
    )


def _load_module(
    module: nn.Module,
    path: Path,
    digest: str,
    image_size: int | None,
    grid: tuple[int, int] | None,
) -> LoadedDetector:
    from pgaudit.models.patchguard import PatchGuard

    if isinstance(module, PatchGuard):
        display = f"PatchGuard ({path.name}, pickled)"
        return LoadedDetector(module, "pickle", display, digest, module.card().info, True)
    display = f"{type(module).__name__} ({path.name}, pickled)"
    return _adapt(module, "pickle", display, digest, f"pickled model {path}", image_size, grid)


# --- Python factories ---


def import_factory(spec: str) -> Any:
    """The object ``package.module:attr`` names, imported from the working directory/PYTHONPATH."""
    module_name, attr = spec.split(":", 1)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise PgauditError(
                f"{spec}: module {exc.name!r} is not importable from {cwd} or PYTHONPATH; run from "
                "the folder that holds it or add that folder to PYTHONPATH."
            ) from None
        raise PgauditError(f"{spec}: importing {module_name} failed ({exc}); install it.") from exc
    except Exception as exc:
        raise PgauditError(
            f"{spec}: importing {module_name} raised {type(exc).__name__}: {exc}; fix the module."
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PgauditError(f"{spec}: {module_name} has no attribute {attr!r}; check the name.")
        obj = getattr(obj, part)
    return obj


def _load_factory(
    spec: str, image_size: int | None, grid: tuple[int, int] | None
) -> LoadedDetector:
    factory = import_factory(spec)
    if isinstance(factory, nn.Module):
        module = factory
    elif callable(factory):
        kwargs: dict[str, Any] = {}
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}
        if image_size is not None and "image_size" in params:
            kwargs["image_size"] = image_size
        try:
            module = factory(**kwargs)
        except Exception as exc:
            raise PgauditError(
                f"{spec}: the factory raised {type(exc).__name__}: {exc}; call it in Python to "
                "see the traceback."
            ) from exc
    else:
        raise PgauditError(f"{spec}: names a {type(factory).__name__}, not a callable factory.")
    if not isinstance(module, nn.Module):
        raise PgauditError(
            f"{spec}: the factory returned a {type(module).__name__}, but it must return a "
            "torch.nn.Module."
        )
    # source_spec lets a hardened copy be saved as (spec, weights)
    digest = weights_fingerprint(module)
    return _adapt(module, "python", spec, digest, spec, image_size, grid, source_spec=spec)


# --- shared ---


def _adapt(
    module: nn.Module,
    kind: str,
    name: str,
    digest: str,
    label: str,
    image_size: int | None,
    grid: tuple[int, int] | None,
    source_spec: str | None = None,
) -> LoadedDetector:
    size = resolve_image_size(module, image_size, label)
    adapter = DetectorAdapter(module, size, grid=grid, name=label, source_spec=source_spec)
    trainable = any(p.requires_grad for p in module.parameters() if p.is_floating_point())
    return LoadedDetector(adapter, kind, name, digest, adapter.card().info, trainable)
