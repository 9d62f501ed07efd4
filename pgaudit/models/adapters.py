"""Adapters: a user's detector (Python module, TorchScript, pickled module) -> the Detector protocol.

The contract for a user detector: ``module(images)`` with ``images`` ``[B, 3, H, W]`` in [0, 1]
returns, differentiably w.r.t. the images, either

- anomaly logits on a grid: ``[B, h, w]``, ``[B, 1, h, w]``, or flat ``[B, h*w]`` / ``[B, h*w, 1]``
  (square grids are recognised; pass ``grid=(h, w)`` otherwise), or
- a dict (or an object with attributes) with ``anomaly_map`` (any of the shapes above) and an
  optional ``image_score`` ``[B]`` / ``[B, 1]``.

Larger = more anomalous. ``image_size`` comes from the module's ``image_size`` attribute or from
``--image-size``; ``top_k``, ``image_score(logits)``, ``anomaly_map(logits, size)`` and
``describe()`` (extra model-card entries) on the module are honoured.

:class:`DetectorAdapter` is a :class:`~pgaudit.models.detector.Detector`: ``adapter.predict(x)``
returns a :class:`~pgaudit.models.detector.DetectorOutput` carrying a dict's ``image_score``
(still differentiable w.r.t. ``x``), ``adapter(x)`` the logits alone. :func:`as_detector` wraps
anything that is not yet a Detector (a plain module or callable), as the API entry points do.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from pgaudit.errors import ParameterError, PgauditError
from pgaudit.models.detector import (
    DEFAULT_MAP_RULE,
    DEFAULT_TOP_K,
    OWN_MAP_RULE,
    OWN_SCORE_RULE,
    Detector,
    DetectorCard,
    DetectorOutput,
    attack_mode,
    smooth_upsample,
    topk_mean,
)

CONTRACT = (
    "a detector must return anomaly logits [B,h,w], [B,1,h,w] or [B,h*w], or a dict with "
    "'anomaly_map' (one of those) and optional 'image_score' [B]"
)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {list(value.shape)}"
    if isinstance(value, Mapping):
        return f"a dict with keys {sorted(map(str, value))}"
    return f"a {type(value).__name__}"


def _bad_output(name: str, found: str, hint: str = "") -> PgauditError:
    return PgauditError(f"{name} returned {found}, but {CONTRACT}{hint}.")


def _as_grid(
    maps: Tensor, batch: int, grid: tuple[int, int] | None, name: str, what: str
) -> Tensor:
    """``maps`` in one of the accepted shapes -> ``[B, h, w]``."""
    found = f"{what} of shape {list(maps.shape)} for a batch of {batch}"
    if not maps.is_floating_point():
        raise _bad_output(name, f"{what} of dtype {maps.dtype}", " (floating point)")
    if maps.ndim == 0 or maps.shape[0] != batch:
        raise _bad_output(name, found, " (the first axis is the batch)")
    if maps.ndim == 4 and maps.shape[1] == 1:  # [B, 1, h, w]
        maps = maps[:, 0]
    if maps.ndim == 3 and maps.shape[2] == 1:  # [B, h*w, 1]
        maps = maps[:, :, 0]
    if maps.ndim == 3:
        return maps
    if maps.ndim != 2:
        raise _bad_output(name, found)
    cells = maps.shape[1]
    if grid is not None:
        if grid[0] * grid[1] != cells:
            raise _bad_output(name, found, f" (the grid {grid[0]}x{grid[1]} has other cells)")
        return maps.reshape(batch, *grid)
    side = math.isqrt(cells)
    if side * side != cells or cells < 2:
        raise _bad_output(name, found, " (a flat map that is not square needs grid=(h, w))")
    return maps.reshape(batch, side, side)


def _image_score(value: Any, batch: int, name: str) -> Tensor:
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise _bad_output(name, f"an image_score that is {_describe(value)}")
    if value.shape in ((batch,), (batch, 1)):
        return value.reshape(batch)
    raise _bad_output(name, f"an image_score of shape {list(value.shape)} for a batch of {batch}")


def to_logits(
    output: Any, batch: int, grid: tuple[int, int] | None = None, name: str = "the detector"
) -> tuple[Tensor, Tensor | None]:
    """A detector's raw output -> (logits ``[B, h, w]``, its own image score ``[B]`` or None)."""
    if isinstance(output, Tensor):
        return _as_grid(output, batch, grid, name, "a tensor"), None
    if isinstance(output, DetectorOutput):  # a module that is itself a pgaudit Detector
        fields: Mapping[str, Any] = {
            "anomaly_map": output.logits,
            "image_score": output.image_score,
        }
    elif isinstance(output, Mapping):
        fields = output
    elif hasattr(output, "anomaly_map"):
        fields = {
            k: getattr(output, k) for k in ("anomaly_map", "image_score") if hasattr(output, k)
        }
    else:
        raise _bad_output(name, _describe(output))
    maps = fields.get("anomaly_map")
    if not isinstance(maps, Tensor):
        raise _bad_output(name, _describe(output))
    logits = _as_grid(maps, batch, grid, name, "an anomaly_map")
    score = fields.get("image_score")
    return logits, (None if score is None else _image_score(score, batch, name))


def resolve_image_size(module: nn.Module, image_size: int | None, name: str) -> int:
    """The input side: ``image_size`` if given, else the module's ``image_size`` attribute."""
    if image_size is None:
        image_size = getattr(module, "image_size", None)
    if isinstance(image_size, (tuple, list)) and len(set(image_size)) == 1:
        image_size = image_size[0]
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ParameterError(
            f"{name} has no integer image size attribute: pass image_size (the square input "
            "side it expects, in pixels).",
            "image_size",
        )
    return image_size


class DetectorAdapter(Detector):
    """A user's module seen as a :class:`~pgaudit.models.detector.Detector`.

    The wrapped module is ``adapter.module``: its parameters are the adapter's, so hardening
    trains them and ``adapter.module.state_dict()`` holds the user's own key names. ``module``
    may also be a plain callable (no parameters). ``source_spec``: the factory it came from.
    """

    def __init__(
        self,
        module: nn.Module,
        image_size: int,
        *,
        grid: tuple[int, int] | None = None,
        name: str = "the detector",
        source_spec: str | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.image_size = int(image_size)
        self.grid = tuple(grid) if grid is not None else None  # type: ignore[assignment]
        self.name = name
        self.source_spec = source_spec
        top_k = getattr(module, "top_k", DEFAULT_TOP_K)
        self.top_k = int(top_k) if isinstance(top_k, int) else DEFAULT_TOP_K
        self._warned = False
        self._gives_score = False

    @property
    def _own_score(self) -> Any:
        own = getattr(self.module, "image_score", None)
        return own if callable(own) and not isinstance(own, Tensor) else None

    @property
    def _own_map(self) -> Any:
        own = getattr(self.module, "anomaly_map", None)
        return own if callable(own) and not isinstance(own, nn.Module) else None

    def predict(self, images: Tensor) -> DetectorOutput:
        module = self.module
        raw = module.predict(images) if isinstance(module, Detector) else module(images)
        logits, score = to_logits(raw, images.shape[0], self.grid, self.name)
        if score is not None:
            self._gives_score = True
        return DetectorOutput(logits, score)

    def forward(self, images: Tensor) -> Tensor:
        return self.predict(images).logits

    def image_score(self, logits: Tensor) -> Tensor:
        """The module's own ``image_score(logits)`` if it has one, else the top-k mean."""
        if self._own_score is not None:
            return self._own_score(logits)
        if self._gives_score and not self._warned:
            self._warned = True
            warnings.warn(
                f"{self.name}: its own image_score is not attached to these (transformed) "
                "logits; using the top-k mean of the map instead.",
                stacklevel=2,
            )
        return topk_mean(logits, self.top_k)

    def anomaly_map(self, logits: Tensor, size: int) -> Tensor:
        """The module's own ``anomaly_map(logits, size)`` if it has one, else upsample + smooth."""
        if self._own_map is not None:
            return self._own_map(logits, size)
        return smooth_upsample(logits, size)

    def rules(self) -> tuple[str, str]:
        if isinstance(self.module, Detector) and not self._gives_score:
            return self.module.rules()
        own_score = self._own_score is not None or self._gives_score
        return (
            OWN_SCORE_RULE if own_score else f"top-{self.top_k} mean of the logit map",
            OWN_MAP_RULE if self._own_map is not None else DEFAULT_MAP_RULE,
        )

    def card(self) -> DetectorCard:
        """Architecture, parameter count and image size, after the module's own ``describe()``
        (or its ``card()``, for a module that is itself a Detector)."""
        module = self.module
        script = isinstance(module, torch.jit.ScriptModule)
        params = module.parameters() if isinstance(module, nn.Module) else iter(())
        info: dict[str, Any] = {
            "architecture": "TorchScript" if script else type(module).__name__,
            "parameters": sum(p.numel() for p in params if p.is_floating_point()),
            "image_size": self.image_size,
        }
        describe = module.card().info.copy if isinstance(module, Detector) else None
        describe = describe or getattr(module, "describe", None)  # a user module's extra entries
        if callable(describe) and not script:
            try:
                extra = describe()
                if isinstance(extra, Mapping):
                    info = {**dict(extra), **info}
            except Exception:  # a card is a nicety; never fail for it
                pass
        return DetectorCard(info, source_spec=self.source_spec)


def as_detector(detector: Any) -> Detector:
    """``detector`` as a :class:`~pgaudit.models.detector.Detector`: itself if it is one, else
    a plain module or callable (``images -> logits``, ``image_size`` attribute) wrapped in a
    :class:`DetectorAdapter` (its ``top_k``/``image_score``/``anomaly_map`` honoured)."""
    if isinstance(detector, Detector):
        return detector
    size = resolve_image_size(detector, None, f"the {type(detector).__name__} detector")
    return DetectorAdapter(detector, size, name=f"the {type(detector).__name__} detector")


def probe(detector: Detector, name: str, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Run two random images through ``detector`` to check its output early.

    Returns ``{"patch_grid": [h, w], "differentiable": bool, "own_image_score": bool}``
    (differentiable: the image score has a gradient w.r.t. the input, so white-box attacks
    apply); raises
    PgauditError (naming the output found and the contract) when the output does not fit.
    """
    size = int(detector.image_size)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, size, size, generator=generator).to(device).requires_grad_(True)
    try:
        with attack_mode(detector), torch.enable_grad():
            output = detector.predict(images)
            logits = output.logits
            scores = detector.scores(output)
            grad = None
            if scores.requires_grad:
                (grad,) = torch.autograd.grad(scores.sum(), images, allow_unused=True)
    except PgauditError:
        raise
    except Exception as exc:  # the user's forward failed on a valid input
        raise ParameterError(
            f"{name} failed on a batch [2, 3, {size}, {size}] ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); check image_size and that "
            "it accepts images in [0, 1].",
            "image_size",
        ) from None
    if not isinstance(logits, Tensor) or logits.ndim != 3 or logits.shape[0] != 2:
        raise _bad_output(name, _describe(logits))
    if not isinstance(scores, Tensor) or scores.shape != (2,):
        raise _bad_output(name, f"image scores of shape {list(getattr(scores, 'shape', []))}")
    if not (torch.isfinite(logits).all() and torch.isfinite(scores).all()):
        raise PgauditError(
            f"{name} returns NaN or infinite scores on random images in [0, 1]: fix its forward "
            "(metrics and attacks need finite scores)."
        )
    return {
        "patch_grid": list(logits.shape[1:]),
        "differentiable": grad is not None,
        "own_image_score": output.image_score is not None,
    }
