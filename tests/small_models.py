"""Model configs shared by tests: the real PatchGuard, at sizes that train in seconds on 2 cores."""

from __future__ import annotations

from pgaudit.models.presets import PatchGuardConfig

# A reduced PatchGuard (64 px, 8x8 patches of 8 px, 3 blocks): the real pipeline, small sizes.
SMALL = PatchGuardConfig(
    name="test-small",
    backbone="vit_tiny_patch16_224",
    backbone_kwargs=dict(patch_size=8, embed_dim=64, depth=3, num_heads=2, mlp_ratio=2.0),
    image_size=64,
    feature_blocks=(3,),
    reg_blocks=(1, 2, 3),
    dsc_heads=2,
    dsc_hidden=128,
    dsc_dropout=0.0,
)


def micro(**train_changes) -> PatchGuardConfig:
    """A micro PatchGuard (32 px, 4x4 patches of 8 px, 2 blocks, width 32); ``train_changes``
    to its recipe (default: 2 epochs, batch 4, PGD-2)."""
    from dataclasses import replace

    from pgaudit.models.presets import TrainConfig

    recipe = {"epochs": 2, "batch_size": 4, "steps": 2, "fapa_max_side": 60, **train_changes}
    return PatchGuardConfig(
        name="micro",
        backbone="vit_tiny_patch16_224",
        backbone_kwargs=dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
        image_size=32,
        feature_blocks=(2,),
        reg_blocks=(1, 2),
        reg_weights=(0.01, 0.05),
        dsc_hidden=64,
        dsc_dropout=0.0,
        train=replace(TrainConfig(), **recipe),
    )
