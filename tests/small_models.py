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
