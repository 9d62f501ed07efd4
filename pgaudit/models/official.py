"""Checkpoints of the official PatchGuard code: plain state_dicts -> a PatchGuard with its config.

The official files (``patchguard_<dataset>_<class>.pth``) hold the ``state_dict`` of a module with
two children: ``feature_extractor.pretrained_model.*`` (a timm ViT, timm's key names) and
``discriminator.*`` (positional encodings, post-norm transformer blocks, output layer). pgaudit's
PatchGuard uses the same module names, so once the config is known the weights load unchanged.

What the tensors tell (and what they cannot):

- ViT: width (``pos_embed``), patch size (``patch_embed.proj.weight`` kernel), depth (number of
  ``blocks.{i}``), MLP ratio (``fc1``), register tokens (``reg_token``), class token, layer scale,
  q/k norm. Heads are not stored: ``width // 64`` (every timm ViT/DINOv2 size uses 64-wide heads).
  The timm name is looked up from (width, patch size): 384 and 14 -> ``vit_small_patch14_dinov2``
  (``..._reg4_dinov2`` with register tokens); ``backbone=`` overrides it.
- Image size: the discriminator's positional encodings fix the patch grid the model ran on, so
  ``image_size = grid side x patch size``; a given ``image_size`` must agree. A ViT ``pos_embed``
  stored for another grid (e.g. DINOv2's 518 px) is resampled once (bicubic, as timm does for a
  dynamic image size).
- Feature blocks: the discriminator width is ``width x number of blocks``; one block -> the last
  block (the official default, block 12 of ViT-S), ``n`` blocks -> the last ``n`` (pass
  ``feature_blocks=`` when they were others).
- Regulariser blocks: the official default 6, 9, 12 scaled to the depth (``ceil(d/2), ceil(3d/4),
  d``), weights 0.005, 0.01, 0.05; they only matter for further hardening.
- Discriminator: layers, MLP hidden size and number of patches from the tensors; attention heads
  are not stored: the official default 4.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from pgaudit.errors import ParameterError, PgauditError
from pgaudit.models.detector import OFFICIAL_MAP_RULE, official_upsample
from pgaudit.models.patchguard import PatchGuard
from pgaudit.models.presets import PatchGuardConfig

VIT_PREFIX = "feature_extractor.pretrained_model."
DSC_PREFIX = "discriminator."
OFFICIAL_DSC_HEADS = 4
OFFICIAL_REG = ((0.5, 0.005), (0.75, 0.01), (1.0, 0.05))  # (fraction of depth, weight)
HEAD_WIDTH = 64

# (width, patch size) -> timm name; DINOv2 names have a register-token twin.
_TIMM_NAMES: dict[tuple[int, int], str] = {
    (192, 16): "vit_tiny_patch16_224",
    (384, 16): "vit_small_patch16_224",
    (768, 16): "vit_base_patch16_224",
    (1024, 16): "vit_large_patch16_224",
    (384, 8): "vit_small_patch8_224",
    (768, 8): "vit_base_patch8_224",
    (768, 32): "vit_base_patch32_224",
    (384, 14): "vit_small_patch14_dinov2",
    (768, 14): "vit_base_patch14_dinov2",
    (1024, 14): "vit_large_patch14_dinov2",
}
_GENERIC_VIT = "vit_base_patch16_224"  # any plain ViT, shaped entirely by the inferred kwargs
# Keys of the ViT that patch tokens never use (a classifier head left in by the official code).
_UNUSED = re.compile(r"^(head|fc_norm|head_drop)\.")


def unwrap_state_dict(payload: Any) -> Any:
    """The state_dict inside common wrappers (``{"state_dict": ...}``, ``{"model": ...}``,
    DistributedDataParallel's ``module.`` prefix); anything else is returned unchanged."""
    if isinstance(payload, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = payload.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, Tensor) for v in inner.values())
            ):
                payload = inner
                break
        keys = list(payload)
        if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys):
            payload = {k[len("module.") :]: v for k, v in payload.items()}
    return payload


def is_official_state_dict(payload: Any) -> bool:
    """True for a state_dict in the official PatchGuard layout (ViT + attention discriminator)."""
    if not isinstance(payload, Mapping) or not payload:
        return False
    return (
        f"{VIT_PREFIX}patch_embed.proj.weight" in payload
        and f"{DSC_PREFIX}positional_encodings" in payload
        and f"{DSC_PREFIX}output_layer.0.weight" in payload
    )


def _indices(keys: list[str], prefix: str) -> list[int]:
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def _vit_kwargs(vit: dict[str, Tensor], path: str) -> dict[str, Any]:
    """timm VisionTransformer arguments read from the ViT tensors (names without the prefix)."""
    proj = vit["patch_embed.proj.weight"]
    width, patch = int(proj.shape[0]), int(proj.shape[-1])
    blocks = _indices(list(vit), "blocks.")
    if not blocks or blocks != list(range(len(blocks))):
        raise PgauditError(f"{path}: the ViT has no consecutive blocks.N; the file is damaged.")
    if width % HEAD_WIDTH:
        raise PgauditError(
            f"{path}: ViT width {width} is not a multiple of {HEAD_WIDTH}, so its number of "
            "attention heads is unknown; save the model as a pgaudit checkpoint instead."
        )
    fc1 = vit.get("blocks.0.mlp.fc1.weight")
    if fc1 is None:
        raise ParameterError(
            f"{path}: the ViT blocks have no mlp.fc1 (a SwiGLU or other MLP); pass its timm name "
            "as backbone.",
            "backbone",
        )
    kwargs: dict[str, Any] = {
        "patch_size": patch,
        "embed_dim": width,
        "depth": len(blocks),
        "num_heads": width // HEAD_WIDTH,
        "mlp_ratio": fc1.shape[0] / width,
        "qkv_bias": "blocks.0.attn.qkv.bias" in vit,
        "class_token": "cls_token" in vit,
        "reg_tokens": int(vit["reg_token"].shape[1]) if "reg_token" in vit else 0,
        "init_values": 1e-5 if "blocks.0.ls1.gamma" in vit else None,
        "qk_norm": "blocks.0.attn.q_norm.weight" in vit,
        "pre_norm": "norm_pre.weight" in vit,
    }
    pos = vit.get("pos_embed")
    if pos is not None:
        length = int(pos.shape[1])
        kwargs["no_embed_class"] = math.isqrt(length) ** 2 == length and length > 1
    return kwargs


def _timm_name(kwargs: dict[str, Any]) -> str:
    name = _TIMM_NAMES.get((kwargs["embed_dim"], kwargs["patch_size"]), _GENERIC_VIT)
    if kwargs.get("reg_tokens") and name.endswith("_dinov2"):
        name = name.replace("_dinov2", f"_reg{kwargs['reg_tokens']}_dinov2")
    return name


def official_reg_blocks(depth: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The official regulariser blocks (6, 9, 12 of 12) and weights, scaled to ``depth``."""
    chosen: dict[int, float] = {}
    for fraction, weight in OFFICIAL_REG:
        chosen[max(1, math.ceil(depth * fraction))] = weight
    blocks = tuple(sorted(chosen))
    return blocks, tuple(chosen[b] for b in blocks)


def config_from_official(
    state_dict: Mapping[str, Tensor],
    *,
    path: str | Path = "<memory>",
    backbone: str | None = None,
    image_size: int | None = None,
    feature_blocks: tuple[int, ...] | None = None,
    dsc_heads: int = OFFICIAL_DSC_HEADS,
) -> PatchGuardConfig:
    """The PatchGuardConfig an official state_dict describes (see the module docstring)."""
    path = str(path)
    vit = {k[len(VIT_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(VIT_PREFIX)}
    kwargs = _vit_kwargs(vit, path)
    depth, width, patch = kwargs["depth"], kwargs["embed_dim"], kwargs["patch_size"]

    pos = state_dict[f"{DSC_PREFIX}positional_encodings"]
    num_patches, dsc_dim = int(pos.shape[-2]), int(pos.shape[-1])
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise PgauditError(
            f"{path}: the discriminator has {num_patches} positional encodings, not a square "
            "patch grid; only square inputs are supported."
        )
    inferred_size = side * patch
    if image_size is not None and image_size != inferred_size:
        raise ParameterError(
            f"image_size {image_size}: {path} was trained on a {side}x{side} grid of "
            f"{patch}-px patches, i.e. {inferred_size} px; drop image_size or pass "
            f"{inferred_size}.",
            "image_size",
            "image_size",
        )
    if dsc_dim % width:
        raise PgauditError(
            f"{path}: discriminator width {dsc_dim} is not a multiple of the ViT width {width}; "
            "the file mixes two models."
        )
    n_feat = dsc_dim // width
    if feature_blocks is None:
        feature_blocks = tuple(range(depth - n_feat + 1, depth + 1))
    elif len(feature_blocks) != n_feat:
        raise PgauditError(
            f"{path}: the discriminator reads {n_feat} block(s), but {len(feature_blocks)} "
            f"feature blocks were given ({list(feature_blocks)}); give {n_feat}."
        )
    layer_ids = _indices(list(state_dict), f"{DSC_PREFIX}transformer_encoder.")
    hidden_key = f"{DSC_PREFIX}transformer_encoder.0.linear.0.weight"
    hidden = int(state_dict[hidden_key].shape[0]) if hidden_key in state_dict else 2048
    if dsc_dim % dsc_heads:
        dsc_heads = 1
    reg_blocks, reg_weights = official_reg_blocks(depth)
    return PatchGuardConfig(
        name=f"official:{Path(path).stem}",
        backbone=backbone or _timm_name(kwargs),
        backbone_kwargs=kwargs,
        image_size=inferred_size,
        feature_blocks=tuple(feature_blocks),
        reg_blocks=reg_blocks,
        reg_weights=reg_weights,
        dsc_layers=len(layer_ids),
        dsc_heads=dsc_heads,
        dsc_hidden=hidden,
        pretrained_backbone=False,
    )


def _fit_pos_embed(
    state: dict[str, Tensor], model: PatchGuard, config: PatchGuardConfig
) -> str | None:
    """Resample a ViT ``pos_embed`` stored for another grid to the model's; returns a note."""
    key = f"{VIT_PREFIX}pos_embed"
    target = model.state_dict().get(key)
    if key not in state or target is None or state[key].shape == target.shape:
        return None
    from timm.layers import resample_abs_pos_embed

    kwargs = config.backbone_kwargs
    prefix = 0 if kwargs.get("no_embed_class") or not kwargs.get("class_token", True) else 1
    old = state[key]
    old_side = math.isqrt(old.shape[1] - prefix)
    new_side = model.grid[0]
    state[key] = resample_abs_pos_embed(
        old, new_size=[new_side, new_side], old_size=[old_side, old_side], num_prefix_tokens=prefix
    )
    return f"ViT pos_embed resampled from {old_side}x{old_side} to {new_side}x{new_side}"


class OfficialPatchGuard(PatchGuard):
    """A PatchGuard loaded from an official checkpoint, judged by the official code's own rule:
    pixel map :func:`~pgaudit.models.detector.official_upsample` (sigma 6, radius 7 px at any size,
    scipy's border), image score the top-3 mean of the patch logits — so pgaudit's numbers sit
    beside the official code's. Hardened by pgaudit, it is saved as a pgaudit PatchGuard and
    judged by pgaudit's rule from then on."""

    def anomaly_map(self, logits: Tensor, size: int) -> Tensor:
        return official_upsample(logits, size)

    def rules(self) -> tuple[str, str]:
        return f"top-{self.top_k} mean of the logit map", OFFICIAL_MAP_RULE


def load_official(
    state_dict: Mapping[str, Tensor],
    *,
    path: str | Path = "<memory>",
    backbone: str | None = None,
    image_size: int | None = None,
    feature_blocks: tuple[int, ...] | None = None,
) -> tuple[OfficialPatchGuard, dict[str, Any]]:
    """Build a PatchGuard from an official state_dict; returns (model in eval mode, notes)."""
    config = config_from_official(
        state_dict,
        path=path,
        backbone=backbone,
        image_size=image_size,
        feature_blocks=feature_blocks,
    )
    try:
        model = OfficialPatchGuard(config)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ParameterError(
            f"{path}: cannot build the ViT {config.backbone!r} ({str(exc).splitlines()[0]}); "
            "pass the timm name it was trained with as backbone.",
            "backbone",
        ) from None
    state = {
        k: v
        for k, v in state_dict.items()
        if not (k.startswith(VIT_PREFIX) and _UNUSED.match(k[len(VIT_PREFIX) :]))
    }
    notes: dict[str, Any] = {"inferred": _inferred_summary(config)}
    resampled = _fit_pos_embed(state, model, config)
    if resampled:
        notes["pos_embed"] = resampled
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ParameterError(
            f"{path}: the weights do not fit the ViT {config.backbone!r} (missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}); pass its timm name as backbone.",
            "backbone",
        )
    return model.eval(), notes


def _inferred_summary(config: PatchGuardConfig) -> dict[str, Any]:
    return {
        "backbone": config.backbone,
        "image_size": config.image_size,
        "depth": config.backbone_kwargs.get("depth"),
        "feature_blocks": list(config.feature_blocks),
        "reg_blocks": list(config.reg_blocks),
        "dsc_layers": config.dsc_layers,
        "dsc_hidden": config.dsc_hidden,
        "dsc_heads": config.dsc_heads,
    }
