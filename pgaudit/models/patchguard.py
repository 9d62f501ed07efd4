"""PatchGuard (CVPR 2025): a ViT token backbone + an attention discriminator, one logit per patch.

Module names follow the official code's state_dict layout (``feature_extractor.pretrained_model.*``
for the timm ViT, ``discriminator.*`` for the head), so its checkpoints load without renaming.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pgaudit.models.backbones import HybridTokens, ViTTokens
from pgaudit.models.detector import Detector, DetectorCard
from pgaudit.models.presets import PatchGuardConfig
from pgaudit.precision import explicit_attention_preferred


class DiscriminatorBlock(nn.Module):
    """Post-norm transformer block: x = LN(x + MHA(x)); x = x + MLP(x)."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.layer_norm_1 = nn.LayerNorm(dim)
        self.linear = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        # need_weights=True takes the explicit (bmm) path: faster than the fused one under CPU bf16
        attended = self.attn(x, x, x, need_weights=explicit_attention_preferred())[0]
        x = self.layer_norm_1(x + attended)
        return x + self.linear(x)


class AttentionDiscriminator(nn.Module):
    """Learned positional encodings + post-norm transformer blocks + Linear(embed -> 1) per patch."""

    def __init__(
        self, num_patches: int, dim: int, layers: int, heads: int, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        self.positional_encodings = nn.Parameter(torch.randn(num_patches, dim) * 0.02)
        self.transformer_encoder = nn.ModuleList(
            [DiscriminatorBlock(dim, heads, hidden, dropout) for _ in range(layers)]
        )
        self.output_layer = nn.Sequential(nn.Linear(dim, 1))

    def forward(self, tokens: Tensor) -> Tensor:
        x = tokens + self.positional_encodings
        for block in self.transformer_encoder:
            x = block(x)
        return self.output_layer(x).squeeze(-1)


def build_backbone(config: PatchGuardConfig) -> nn.Module:
    """The token backbone a config names."""
    if config.backbone == "efficientnet_lite0_hybrid":
        return HybridTokens(
            config.image_size,
            config.feature_blocks,
            pretrained=config.pretrained_backbone,
            **config.backbone_kwargs,
        )
    return ViTTokens(
        config.backbone, config.image_size, config.feature_blocks, **config.backbone_kwargs
    )


class PatchGuard(Detector):
    """Images in [0, 1] ``[B, 3, S, S]`` -> patch anomaly logits ``[B, h, w]``.

    ``model(images, return_attention=True)`` also returns the attention matrices among patch tokens
    of ``config.reg_blocks`` (for the regulariser); without it the fused attention path runs.
    """

    def __init__(self, config: PatchGuardConfig) -> None:
        super().__init__()
        self.config = config
        self.image_size = config.image_size
        self.top_k = config.top_k
        self.feature_extractor = build_backbone(config)
        bad = [b for b in config.reg_blocks if not 1 <= b <= self.feature_extractor.depth]
        if bad:
            raise ValueError(f"regulariser blocks {bad} outside 1..{self.feature_extractor.depth}")
        self.grid: tuple[int, int] = self.feature_extractor.grid
        self.patch_size: int = self.feature_extractor.patch_size
        self.discriminator = AttentionDiscriminator(
            num_patches=self.grid[0] * self.grid[1],
            dim=self.feature_extractor.out_dim,
            layers=config.dsc_layers,
            heads=config.dsc_heads,
            hidden=config.dsc_hidden,
            dropout=config.dsc_dropout,
        )

    def forward(
        self, images: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        capture = self.config.reg_blocks if return_attention else ()
        tokens, attentions = self.feature_extractor(images, capture)
        logits = self.discriminator(tokens).view(-1, *self.grid)
        return (logits, attentions) if return_attention else logits

    def card(self) -> DetectorCard:
        """A short model card and the config it was built from."""
        n_params = sum(p.numel() for p in self.parameters())
        info: dict[str, Any] = {
            "architecture": "PatchGuard",
            "preset": self.config.name,
            "backbone": self.config.backbone,
            "image_size": self.image_size,
            "patch_grid": list(self.grid),
            "feature_blocks": list(self.config.feature_blocks),
            "reg_blocks": list(self.config.reg_blocks),
            "parameters": n_params,
        }
        return DetectorCard(info, config=self.config.to_dict())
