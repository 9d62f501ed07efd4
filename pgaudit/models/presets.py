"""Named PatchGuard configurations (model + training recipe), all in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pgaudit.checks import check_at_least, check_finite, check_linf_eps, check_positive
from pgaudit.errors import ParameterError, PgauditError
from pgaudit.precision import check_precision

#: Geometric train-time augmentations: for images without a preferred orientation (textures,
#: micrographs, surfaces); leave "none" where orientation matters (a part flipped is a defect).
AUGMENTATIONS = ("none", "flips", "dihedral")


def check_train_values(values: Mapping[str, Any]) -> None:
    """Check each :class:`TrainConfig` field given in ``values`` on its own (the combinations are
    checked when the config is made): callers check options before building anything."""
    for name in ("epochs", "batch_size"):
        if name in values:
            check_at_least(name, values[name])
    if "lr" in values:
        check_positive("lr", values["lr"], "5e-4")
    if "eps" in values:
        check_linf_eps("eps", values["eps"])
    for name, value in values.items():
        if isinstance(value, float):
            check_finite(name, value)
    if "clean_epochs" in values:
        check_at_least("clean_epochs", values["clean_epochs"], 0)
    if not 0 <= values.get("val_fraction", 0) < 1:
        raise ParameterError(
            f"val_fraction {values['val_fraction']:g}: use a number in [0, 1).", "val_fraction"
        )
    if not 0 <= values.get("ema_decay", 0) < 1:
        raise ParameterError(
            f"ema_decay {values['ema_decay']:g}: use 0 (off) or a number below 1.", "ema_decay"
        )
    if values.get("augment", "none") not in AUGMENTATIONS:
        raise ParameterError(
            f"augment {values['augment']!r}: use one of {', '.join(AUGMENTATIONS)}.", "augment"
        )
    if "precision" in values:
        check_precision(values["precision"])
    if values.get("trades_beta", 0) < 0:
        raise ParameterError(
            f"trades_beta {values['trades_beta']:g} must be 0 or more.", "trades_beta"
        )


@dataclass(frozen=True)
class TrainConfig:
    """The hardening recipe (DESIGN.md §2): FAPA + PGD adversarial training + attention regulariser."""

    epochs: int = 1000
    batch_size: int = 16
    lr: float = 8e-4
    lr_min_factor: float = 0.0125  # cosine annealing down to lr * this
    weight_decay: float = 0.01
    eps: float = 8 / 255
    steps: int = 10  # PGD steps of the training attack
    step_size_factor: float = 2.5  # step size = factor * eps / steps
    eps_warmup_epochs: int = 0  # linear ramp of eps over the first adversarial epochs (0: none)
    clean_epochs: int = 0  # adversarial runs: train this many epochs clean first (a clean start)
    adversarial: bool = True  # False: the clean baseline (no PGD terms)
    regularise: bool = True  # False: no attention regulariser
    fapa_min_side: int = 14  # pseudo-anomaly side bounds, in pixels at 224 px
    fapa_max_side: int = 86
    jitter: float = 0.05  # light train-time colour jitter
    augment: str = "none"  # "flips" / "dihedral": random flips (and 90° turns) of each image
    attack_topk_weight: float = 0.0  # the training attack also raises normal images' top-k score
    carry_perturbations: bool = False  # start each image's attack from its last one (epochs)
    grad_clip: float = 1.0
    # Keeping clean accuracy (pgaudit.training.ema / .validation; 0 / False: off, the paper's recipe)
    ema_decay: float = 0.0  # exponential moving average of the weights; the checkpoint holds it
    val_fraction: float = 0.0  # normal training images held out for validation (never trained on)
    val_steps: int = 5  # PGD steps of the validation attack (full eps)
    select: bool = False  # keep the epoch the selection rule picks (needs val_fraction > 0)
    select_margin: float = 0.02  # ... the best robust score within this of the best clean score
    trades_beta: float = 0.0  # > 0: adversarial terms = beta * KL(clean || adversarial) (TRADES)
    # Of the attack passes and the training forward/backward (pgaudit.precision); the losses,
    # the optimizer and every validation score stay fp32. "auto" is decided when training starts.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_train_values({f.name: getattr(self, f.name) for f in fields(self)})
        if self.adversarial:
            check_at_least("steps", self.steps)
        if self.select and self.val_fraction <= 0:
            raise ParameterError(
                "select needs held-out images: set val_fraction above 0.", "select", "val_fraction"
            )
        if self.adversarial and not 0 <= self.clean_epochs < self.epochs:
            raise ParameterError(
                f"clean_epochs {self.clean_epochs} leaves no adversarial epoch of epochs "
                f"{self.epochs}; use a value from 0 to {self.epochs - 1}.",
                "clean_epochs",
                "epochs",
            )


@dataclass(frozen=True)
class PatchGuardConfig:
    """Everything needed to rebuild a PatchGuard model (stored in every checkpoint)."""

    name: str = "custom"
    backbone: str = "vit_small_patch14_dinov2"  # a timm ViT name, or "efficientnet_lite0_hybrid"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    image_size: int = 224
    feature_blocks: tuple[int, ...] = (12,)  # 1-based blocks whose patch tokens feed the head
    reg_blocks: tuple[int, ...] = (6, 9, 12)  # 1-based blocks whose attention is regularised
    reg_weights: tuple[float, ...] = (0.005, 0.01, 0.05)
    dsc_layers: int = 1
    dsc_heads: int = 4
    dsc_hidden: int = 2048
    dsc_dropout: float = 0.2
    top_k: int = 3
    pretrained_backbone: bool = False  # the CNN of the hybrid preset loads offline weights
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["feature_blocks"] = list(self.feature_blocks)
        data["reg_blocks"] = list(self.reg_blocks)
        data["reg_weights"] = list(self.reg_weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PatchGuardConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        train_known = {f.name for f in fields(TrainConfig)}
        values["train"] = TrainConfig(
            **{k: v for k, v in dict(data.get("train", {})).items() if k in train_known}
        )
        for key in ("feature_blocks", "reg_blocks", "reg_weights"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


_TINY_VIT = dict(patch_size=16, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0)

PRESETS: dict[str, PatchGuardConfig] = {
    # The paper's model and the official code's hyper-parameters.
    "paper": PatchGuardConfig(name="paper"),
    # ViT-S/16 at 224 px, for GPUs without DINOv2 weights.
    "small": PatchGuardConfig(name="small", backbone="vit_small_patch16_224"),
    # A ViT trained from scratch that hardens on 2 CPU cores in minutes (128 px, 8x8 patches).
    "tiny": PatchGuardConfig(
        name="tiny",
        backbone="vit_tiny_patch16_224",
        backbone_kwargs=_TINY_VIT,
        image_size=128,
        feature_blocks=(6,),
        reg_blocks=(2, 4, 6),
        dsc_hidden=512,
        dsc_dropout=0.1,
        # The recommended CPU preset: ~7 min of hardening on 2 idle cores. PGD-3 whose
        # perturbations carry across epochs, aimed at the top-k score of normal images as well
        # (benchmarks/robustness.py: robust image AUROC at 8/255 0.38 widget, 0.47 fabric).
        train=TrainConfig(
            epochs=50,
            batch_size=16,
            lr=5e-4,
            steps=3,
            eps_warmup_epochs=3,
            fapa_max_side=60,
            attack_topk_weight=3.0,
            carry_perturbations=True,
            # benchmarks/real_photos.py (tuning split, 20 epochs): robust image AUROC on moon
            # 0.58 -> 0.66 at equal clean AUROC; the checkpoint holds the selected EMA weights.
            ema_decay=0.98,
            val_fraction=0.15,
            select=True,
        ),
    ),
    # Hybrid: pretrained EfficientNet-Lite0 stride-16 tokens -> 2 ViT blocks -> discriminator.
    "lite": PatchGuardConfig(
        name="lite",
        backbone="efficientnet_lite0_hybrid",
        backbone_kwargs=dict(embed_dim=192, depth=2, num_heads=3, mlp_ratio=2.0),
        image_size=128,
        feature_blocks=(2,),
        reg_blocks=(1, 2),
        reg_weights=(0.01, 0.05),
        dsc_hidden=512,
        dsc_dropout=0.1,
        pretrained_backbone=True,
        # 15 epochs of PGD-3, carried perturbations, top-k weight 1: ~5 min on 2 idle cores.
        train=TrainConfig(
            epochs=15,
            batch_size=16,
            lr=3e-4,
            steps=3,
            eps_warmup_epochs=3,
            fapa_max_side=60,
            attack_topk_weight=1.0,
            carry_perturbations=True,
        ),
    ),
}


def get_preset(name: str) -> PatchGuardConfig:
    """The named preset, or a clear error listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise PgauditError(f"unknown preset {name!r}: choose one of {known}.") from None
