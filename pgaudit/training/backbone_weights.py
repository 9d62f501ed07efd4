"""Pretrained backbone weights from a local file (hub downloads are impossible offline).

:func:`load_backbone_weights` reads a timm checkpoint, a ``.safetensors`` file, a plain state_dict
or an official PatchGuard checkpoint into ``model.feature_extractor.pretrained_model`` (the timm
ViT), resampling the position embeddings when the patch grid differs (timm's own filter).
:func:`load_hub_weights` tries timm's hub and turns the offline failure into a clear error.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from pgaudit.errors import ParameterError, PgauditError
from pgaudit.models.checkpoint import read_torch_file

_PREFIXES = ("feature_extractor.pretrained_model.", "module.", "model.", "backbone.")
_HEAD_KEYS = ("head.", "fc_norm.", "head_drop.")


def _vit_of(model: nn.Module, option: str) -> nn.Module:
    vit = getattr(getattr(model, "feature_extractor", None), "pretrained_model", None)
    if vit is None:
        raise ParameterError(
            f"{option}: this model has no timm ViT backbone to load into (the lite preset loads "
            f"its own EfficientNet weights); drop {option} or use a ViT preset.",
            option, option,
        )  # fmt: skip
    return vit


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` or torch file, unwrapped from ``{"model"|"state_dict": ...}``."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.is_file():
            raise PgauditError(f"{path} does not exist: pass the path of a weights file.")
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise PgauditError(f"{path} is not a readable safetensors file ({exc}).") from None
    data = read_torch_file(path)
    for key in ("state_dict", "model", "module"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise PgauditError(f"{path} does not hold a state_dict of tensors: pass a weights file.")
    return data


def _strip(state: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if not k.startswith(_HEAD_KEYS)}


def load_backbone_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load ViT weights from ``path`` into ``model``'s backbone; returns notes (e.g. resampling).

    Raises :class:`PgauditError` naming the file when the weights do not fit the backbone.
    """
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = Path(path)
    vit = _vit_of(model, "backbone_weights")
    state = _strip(read_state_dict(path))
    notes = []
    own = vit.state_dict()
    if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        notes.append(
            f"resampled pos_embed {list(state['pos_embed'].shape)} -> {list(own['pos_embed'].shape)}"
        )
    try:
        state = checkpoint_filter_fn(state, vit)
    except Exception as exc:  # timm raises assorted errors on foreign layouts
        raise PgauditError(
            f"{path} does not fit the {type(vit).__name__} backbone ({exc}); pass weights of the "
            "preset's architecture."
        ) from None
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_KEYS)}
    depth = len(vit.blocks)
    extra = {k for k in state if k.startswith("blocks.") and int(k.split(".")[1]) >= depth}
    if extra:  # a deeper ViT: keep its first blocks (the preset's depth)
        deepest = max(int(k.split(".")[1]) for k in extra) + 1
        notes.append(f"kept the first {depth} of {deepest} blocks")
        state = {k: v for k, v in state.items() if k not in extra}
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if wrong or missing or unexpected:
        detail = (
            f"shape mismatch at {wrong[:3]}"
            if wrong
            else f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
        raise PgauditError(
            f"{path} does not match the backbone ({detail}); pass weights of the preset's "
            "architecture (same width, depth and patch size)."
        )
    vit.load_state_dict(state)
    return notes


def load_hub_weights(model: nn.Module, name: str) -> None:
    """Load timm hub weights for ``name`` (needs the internet or a filled cache)."""
    import timm

    vit = _vit_of(model, "pretrained")
    offline = "no network" if not _hub_reachable() else None
    try:
        if offline:
            raise ConnectionError(offline)
        hub = timm.create_model(
            name,
            pretrained=True,
            num_classes=0,
            img_size=model.image_size,  # type: ignore[arg-type]
            patch_size=vit.patch_embed.patch_size[0],
            embed_dim=vit.embed_dim,
            depth=len(vit.blocks),
        )
    except Exception as exc:  # offline: connection/HF errors of many kinds
        raise ParameterError(
            f"pretrained: hub weights cannot be downloaded here ({type(exc).__name__}); "
            "pass backbone_weights with a local copy.",
            "pretrained", "backbone_weights",
        ) from None  # fmt: skip
    missing, unexpected = vit.load_state_dict(hub.state_dict(), strict=False)
    if missing or unexpected:
        raise ParameterError(
            f"pretrained: the hub weights of {name} do not fit this backbone; use "
            "backbone_weights with a local file.",
            "pretrained", "backbone_weights",
        )  # fmt: skip


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Cheap probe before timm's slow retries: is huggingface.co reachable (and not disabled)?"""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False
