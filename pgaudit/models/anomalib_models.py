"""anomalib models (anomalib 2.x Lightning checkpoints) as white-box detectors.

anomalib's exported torch file (``export_type="torch"``: the whole module, pickled) is read only
with ``--trust-pickle``. A checkpoint written by anomalib's ``Engine`` is a plain dict (it loads with
``torch.load(weights_only=True)``): ``state_dict``, ``hyper_parameters`` and the pre-/post-processor
configuration as plain data. pgaudit recognises the model family from the state_dict's keys,
rebuilds the Lightning module from the hyper-parameters (``pre_trained=False``: the weights come
from the checkpoint, nothing is downloaded) and loads the weights.

What is attacked: the model's own pre-processor (resize + normalise, differentiable) followed by
the model's parts, assembled into a forward **with** gradients — anomalib's own forwards extract
features under ``torch.no_grad()`` (PaDiM, PatchCore), so a naive wrapper would give attacks no
gradient at all. The scores are the raw ``pred_score`` and ``anomaly_map`` *before* anomalib's
post-processor (which normalises with the validation statistics and clamps to [0, 1]: a clamp
blunts gradients and queries); AUROC does not change under that monotone map, except where the
clamp ties scores. Families without a differentiable forward here run the model's own forward
and are audited with the black-box attacks (:func:`pgaudit.attacks.suites.gradient_free_plan`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgaudit.errors import PgauditError
from pgaudit.models.detector import Detector, DetectorCard, DetectorOutput

#: family -> (anomalib class name, a state_dict key only that family has)
FAMILIES: dict[str, tuple[str, str]] = {
    "padim": ("Padim", "model.gaussian.inv_covariance"),
    "patchcore": ("Patchcore", "model.memory_bank"),
}
SCORE_RULE = "anomalib's raw pred_score (before its post-processor)"
MAP_RULE = "anomalib's raw anomaly_map (before its post-processor), resized to the image"


def is_anomalib_checkpoint(payload: Any) -> bool:
    """True for an anomalib Lightning checkpoint (a dict with its component configuration)."""
    return (
        isinstance(payload, Mapping)
        and isinstance(payload.get("state_dict"), Mapping)
        and ("anomalib_components_enabled" in payload or "anomalib_pre_processor_config" in payload)
    )


def is_anomalib_torch_export(payload: Any) -> bool:
    """True for anomalib's exported torch file (``{"model": <Lightning module>}``, pickled: only
    readable with ``--trust-pickle``)."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("model"), nn.Module):
        return False
    return type(payload["model"]).__module__.split(".")[0] == "anomalib"


def from_torch_export(payload: Mapping[str, Any], path: Path, image_size: int | None) -> Detector:
    """The detector of anomalib's exported torch file (already unpickled, at the user's word)."""
    module = payload["model"]
    family = family_of(module.state_dict(), path)
    size = image_size or _pre_processor_size(module) or 256
    return AnomalibDetector(module.eval(), family, size, path)


def family_of(state: Mapping[str, Any], path: Path) -> str:
    """The model family of an anomalib checkpoint's state_dict, or a sentence naming those known."""
    for family, (_, key) in FAMILIES.items():
        if key in state:
            return family
    prefixes = sorted({k.split(".")[1] for k in state if k.startswith("model.") and "." in k[6:]})
    raise PgauditError(
        f"{path} is an anomalib checkpoint of a model family pgaudit does not rebuild yet (its "
        f"model has {', '.join(prefixes[:6]) or 'no'} parts); supported: "
        f"{', '.join(FAMILIES)}. Export it (ONNX/OpenVINO) to audit it black-box."
    )


def _import_anomalib() -> Any:
    try:
        import anomalib.models as models
    except ImportError:
        raise PgauditError(
            "auditing an anomalib checkpoint needs anomalib: pip install 'pgaudit[anomalib]'."
        ) from None
    return models


def load_anomalib(payload: Mapping[str, Any], path: Path, image_size: int | None) -> Detector:
    """The detector of an anomalib checkpoint ``payload`` (read from ``path``)."""
    state = payload["state_dict"]
    family = family_of(state, path)
    models = _import_anomalib()
    hparams = dict(payload.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    hparams["pre_trained"] = False  # the checkpoint holds the weights; never download
    try:
        module = getattr(models, FAMILIES[family][0])(**hparams)
        module.on_load_checkpoint(dict(payload))
        for key, value in state.items():  # fitted buffers (memory bank, Gaussian) take their size
            owner, _, name = key.rpartition(".")
            sub = module.get_submodule(owner) if owner else module
            if name in dict(sub.named_buffers(recurse=False)) and isinstance(value, Tensor):
                if getattr(sub, name).shape != value.shape:
                    setattr(sub, name, torch.empty_like(value))
        module.load_state_dict(state)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise PgauditError(
            f"{path}: the anomalib {family} checkpoint does not rebuild with this anomalib "
            f"({first}); save it again with the installed anomalib version."
        ) from None
    size = image_size or _pre_processor_size(module) or 256
    return AnomalibDetector(module.eval(), family, size, path)


def _pre_processor_size(module: nn.Module) -> int | None:
    for transform in _transforms(getattr(module, "pre_processor", None)):
        size = getattr(transform, "size", None)
        if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
            return int(size[0])
        if isinstance(size, int):
            return size
    return None


def _transforms(pre: Any) -> list[Any]:
    transform = getattr(pre, "export_transform", None) or getattr(pre, "transform", None)
    if transform is None:
        return []
    return list(getattr(transform, "transforms", [transform]))


def _padim(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    features = model.feature_extractor(x)
    embedding = model.generate_embedding(features)
    amap = model.anomaly_map_generator(
        embedding=embedding, mean=model.gaussian.mean,
        inv_covariance=model.gaussian.inv_covariance, image_size=x.shape[-2:],
    )  # fmt: skip
    return amap, amap.amax(dim=(-2, -1)).reshape(-1)


def _patchcore(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.type(model.memory_bank.dtype)
    features = model.feature_extractor(x)
    features = {layer: model.feature_pooler(f) for layer, f in features.items()}
    embedding = model.generate_embedding(features)
    batch, _, width, height = embedding.shape
    embedding = model.reshape_embedding(embedding)
    patch_scores, locations = model.nearest_neighbors(embedding=embedding, n_neighbors=1)
    patch_scores, locations = patch_scores.reshape(batch, -1), locations.reshape(batch, -1)
    score = model.compute_anomaly_score(patch_scores, locations, embedding)
    amap = model.anomaly_map_generator(patch_scores.reshape(batch, 1, width, height), x.shape[-2:])
    return amap, score.reshape(-1)


#: The differentiable forwards, per family: ``(torch model, pre-processed x) -> (map, score)``.
FORWARDS: dict[str, Callable[[nn.Module, Tensor], tuple[Tensor, Tensor]]] = {
    "padim": _padim,
    "patchcore": _patchcore,
}


class AnomalibDetector(Detector):
    """An anomalib Lightning module as a Detector: pre-processor + the family's differentiable
    forward; ``logits`` is the raw anomaly map, ``image_score`` the raw ``pred_score``."""

    def __init__(
        self, module: nn.Module, family: str, image_size: int, path: Path,
        post_processed: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.module, self.family, self.image_size, self.path = module, family, image_size, path
        self.post_processed = post_processed
        extractor = getattr(module.model, "feature_extractor", None)
        if extractor is not None and hasattr(extractor, "requires_grad"):
            extractor.requires_grad = True  # its forward then runs with autograd on
        self.differentiable = family in FORWARDS and getattr(module.model, "tiler", None) is None

    def predict(self, images: Tensor) -> DetectorOutput:
        pre = getattr(self.module, "pre_processor", None)
        x = pre(images) if pre is not None else images
        if self.differentiable:
            amap, score = FORWARDS[self.family](self.module.model, x)
        else:  # the model's own forward (no gradients): black-box attacks only
            out = self.module.model(x)
            amap, score = out.anomaly_map, out.pred_score.reshape(-1)
        post = getattr(self.module, "post_processor", None)
        if self.post_processed and post is not None:  # what anomalib's export outputs
            from anomalib.data import InferenceBatch

            shipped = post(InferenceBatch(pred_score=score, anomaly_map=amap))
            amap, score = shipped.anomaly_map, shipped.pred_score.reshape(-1)
        if amap.ndim == 4:
            amap = amap[:, 0]
        return DetectorOutput(amap.float(), score.float())

    def as_shipped(self) -> AnomalibDetector:
        """The same model with anomalib's post-processor applied (normalised and clamped to
        [0, 1]), as its exporter writes it: what an export is compared with (parity)."""
        return AnomalibDetector(self.module, self.family, self.image_size, self.path, True)

    def forward(self, images: Tensor) -> Tensor:
        return self.predict(images).logits

    def anomaly_map(self, logits: Tensor, size: int) -> Tensor:
        """The raw map resized to ``size`` (anomalib's map is smooth already: no extra blur)."""
        if logits.shape[-2:] == (size, size):
            return logits
        return F.interpolate(logits[:, None], size=(size, size), mode="bilinear")[:, 0]

    def rules(self) -> tuple[str, str]:
        if self.post_processed:
            return "anomalib's post-processed pred_score", "anomalib's post-processed anomaly_map"
        return SCORE_RULE, MAP_RULE

    def card(self) -> DetectorCard:
        hparams = dict(getattr(self.module, "hparams", {}) or {})
        return DetectorCard({
            "architecture": f"anomalib {FAMILIES[self.family][0]}",
            "family": self.family,
            "image_size": int(self.image_size),
            "parameters": sum(p.numel() for p in self.parameters()),
            "hyper_parameters": {k: v for k, v in hparams.items() if not k.startswith("_")},
            "outputs": "raw pred_score and anomaly_map, before anomalib's post-processor",
            "differentiable_forward": self.differentiable,
        })  # fmt: skip
