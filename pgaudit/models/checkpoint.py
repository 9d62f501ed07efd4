"""pgaudit checkpoints: one torch file with weights, the full config and the pgaudit version.

Saved as plain tensors and Python primitives, so loading uses ``torch.load(weights_only=True)``
and never executes code from the file; written atomically (temp file + rename).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pgaudit import __version__
from pgaudit.errors import ParameterError, PgauditError
from pgaudit.models.detector import Detector
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import PatchGuardConfig

FORMAT = "pgaudit.checkpoint/1"


class NotAPgauditCheckpoint(PgauditError):
    """The file is a valid torch file, but not one written by pgaudit."""


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    training: dict[str, Any] | None = None,
    resume_state: dict[str, Any] | None = None,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (+ training summary, + optimizer/scheduler state for resuming) to ``path``.

    ``state_dict``: the weights to store instead of the model's own (e.g. their moving average).
    """
    path = Path(path)
    weights = model.state_dict() if state_dict is None else state_dict
    state = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "pgaudit_version": __version__,
        "state_dict": state,
        "training": training or {},
    }
    if isinstance(model, PatchGuard):
        payload.update(kind="patchguard", config=model.config.to_dict())
    elif isinstance(model, Detector) and (spec := model.card().source_spec):  # factory + weights
        payload.update(kind="python", spec=spec, image_size=int(model.image_size))
    else:
        raise PgauditError(
            f"cannot save a {type(model).__name__} to {path}: pgaudit checkpoints hold PatchGuard "
            "models and detectors loaded from a Python factory (package.module:function)."
        )
    if resume_state is not None:
        payload["resume"] = resume_state
    return write_payload(payload, path)


def write_payload(payload: dict[str, Any], path: Path) -> Path:
    """``torch.save`` a checkpoint payload atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def looks_like_torch_file(path: Path) -> bool:
    """A torch zip archive, or a legacy torch/pickle file (pickle protocol 2+ starts with 0x80)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x80"


def _unsafe_globals(exc: Exception) -> str:
    """The Python names a refused pickle wanted, e.g. ``torch.nn.modules.linear.Linear``."""
    names = re.findall(r"GLOBAL ([\w.]+)", str(exc))
    return ", ".join(dict.fromkeys(names))


#: Packages whose Enum classes a checkpoint may name and the safe loader may rebuild (an Enum
#: member is rebuilt from its value: no code from the file runs).
ENUM_PACKAGES = ("anomalib",)


def _library_enums(path: Path) -> list[type]:
    """The Enum classes of :data:`ENUM_PACKAGES` that the file names, when it names nothing
    else the safe loader refuses (else [])."""
    import enum
    import importlib

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        return []
    found = []
    for name in names:
        module, _, attr = name.rpartition(".")
        if not module or module.split(".")[0] not in ENUM_PACKAGES:
            return []
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return []
        if not (isinstance(obj, type) and issubclass(obj, enum.Enum)):
            return []
        found.append(obj)
    return found


def read_torch_file(path: str | Path, *, trust_pickle: bool = False) -> Any:
    """``torch.load(weights_only=True)`` with one-sentence errors for missing/corrupt/unsafe files.

    With ``trust_pickle`` a file that needs full unpickling is loaded anyway (this runs code from
    the file: the user's explicit choice, ``--trust-pickle``).
    """
    path = Path(path)
    if not path.is_file():
        raise PgauditError(f"{path} does not exist: pass the path of a model file.")
    if not looks_like_torch_file(path):
        raise PgauditError(
            f"{path} is not a PyTorch file (neither a zip archive nor a pickle): check that it "
            "was copied completely."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        wanted = _unsafe_globals(exc)
        enums = _library_enums(path)
        if enums:  # e.g. anomalib's PrecisionType in a Lightning checkpoint: plain values
            with torch.serialization.safe_globals(enums):
                return torch.load(path, map_location="cpu", weights_only=True)
        if not wanted and not trust_pickle:  # damaged data, or pickle features beyond tensors
            raise ParameterError(
                f"{path} is not a readable PyTorch file for the safe loader: it is damaged "
                "(check that it was copied completely) or it is a pickle of Python objects "
                "(pass trust_pickle only if you trust its source).",
                "trust_pickle",
            ) from None
        if not trust_pickle:
            raise ParameterError(
                f"{path} holds more than tensors ({wanted[:160]}) and loading it "
                "could run code from the file: pass trust_pickle only if you trust its source.",
                "trust_pickle",
            ) from None
    except Exception as exc:  # torch raises many types (KeyError, RuntimeError, …) on damage
        detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise PgauditError(
            f"{path} is not a readable PyTorch file ({detail}): "
            "check that it was copied completely."
        ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ParameterError(
            f"{path} could not be unpickled even with trust_pickle ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); the classes it names must "
            "be importable (set PYTHONPATH).",
            "trust_pickle",
        ) from None


def fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes, as ``sha256:<hex>``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 over a module's state_dict (names, dtypes, shapes, values), ``sha256-weights:<hex>``.

    For detectors that come without a file (Python factories, modules passed to the API); 0-d
    tensors (BatchNorm's ``num_batches_tracked``) count too.
    """
    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{tensor.dtype}{list(value.shape)}".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return f"sha256-weights:{digest.hexdigest()}"


def is_pgaudit_checkpoint(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def check_payload(payload: Mapping[str, Any], path: str | Path = "<memory>") -> None:
    """Refuse a pgaudit checkpoint whose fields do not have their types (an edited or truncated
    file), in one sentence, before anything is built from it."""
    expected: dict[str, tuple[tuple[type, ...], str]] = {
        "state_dict": ((Mapping,), "a table of tensors"),
        "config": ((Mapping,), "a table of settings"),
        "training": ((Mapping,), "a table"),
        "image_size": ((int,), "an integer"),
        "kind": ((str,), "a name"),
    }
    required = ["state_dict"] + (
        ["config"] if payload.get("kind", "patchguard") != "python" else []
    )
    for key, (kinds, what) in expected.items():
        if key not in payload:
            if key in required:
                raise PgauditError(
                    f"{path} is a pgaudit checkpoint without its {key!r}: it was truncated or "
                    "edited; train or harden again."
                )
            continue
        value = payload[key]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise PgauditError(
                f"{path}: its {key!r} is a {type(value).__name__}, not {what}: the file was "
                "edited; train or harden again."
            )
    bad = [str(k) for k, v in payload["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise PgauditError(
            f"{path}: its state_dict holds non-tensors ({', '.join(bad[:3])}): the file was "
            "edited; train or harden again."
        )


def model_from_payload(payload: dict[str, Any], path: str | Path = "<memory>") -> PatchGuard:
    """Rebuild a PatchGuard from a loaded checkpoint payload (no pretrained download needed)."""
    check_payload(payload, path)
    # The weights come from the checkpoint: never load pretrained backbone weights again.
    try:
        config = replace(PatchGuardConfig.from_dict(payload["config"]), pretrained_backbone=False)
        model = PatchGuard(config)
    except PgauditError:
        raise
    except Exception as exc:
        raise PgauditError(
            f"{path}: its config does not build a PatchGuard ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); the file was edited or "
            "written by another pgaudit version."
        ) from None
    try:
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as exc:  # a tensor of another shape than the config makes
        names = re.findall(r"size mismatch for ([\w.]+)", str(exc))
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        what = f"the shape of {names[0]}{more}" if names else "their shapes"
        raise PgauditError(
            f"{path}: its weights do not fit the model its config describes ({what}): it was "
            "edited or written by another pgaudit version."
        ) from None
    if missing or unexpected:
        raise PgauditError(
            f"{path} does not match the model its config describes (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}): it was edited or written by another pgaudit version."
        )
    return model


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[PatchGuard, dict]:
    """Load a pgaudit checkpoint; returns (model in eval mode, the file's metadata)."""
    payload = read_torch_file(path)
    if not is_pgaudit_checkpoint(payload):
        raise NotAPgauditCheckpoint(
            f"{path} is not a pgaudit checkpoint: pass a file written by `pgaudit train` or "
            "`pgaudit harden`."
        )
    model = model_from_payload(payload, path).to(device).eval()
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "resume")}
    return model, meta
