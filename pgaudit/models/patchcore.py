"""A PatchCore-style baseline: nearest-neighbour distance to a memory bank of normal patch features.

Features: the offline-pretrained EfficientNet-Lite0 (frozen), its stride-8 map (``blocks[:3]``, 40
channels) and its stride-16 map (``blocks[:5]``, 112 channels) bilinearly upsampled to stride 8,
concatenated (152 channels) and averaged over each 3x3 neighbourhood, as PatchCore aggregates
local context. The memory bank holds such features of the normal training images, subsampled to a
coreset (greedy k-center on a random projection, or random). Anomaly logits are the Euclidean
distance of every stride-8 feature to its nearest bank entry: ``[B, S/8, S/8]``, differentiable
w.r.t. the input (the neighbour is searched without gradients in bounded chunks with
``torch.cdist``; the distance to it is then computed with gradients), so every white-box attack
applies. Image score: the largest patch distance (``top_k = 1``), as in PatchCore.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgaudit.models.backbones import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0
from pgaudit.models.detector import Detector, DetectorCard

FEATURE_DIM = 40 + 112
STRIDE = 8
SAMPLERS = ("greedy", "random")
# Upper bound on query x bank distances held at once by the neighbour search (floats).
_SEARCH_BUDGET = 1 << 24


@dataclass(frozen=True)
class PatchCoreConfig:
    """Settings of a PatchCore baseline (stored in its checkpoint)."""

    image_size: int = 128
    coreset: float = 0.1  # fraction of the training patch features kept in the memory bank
    sampler: str = "greedy"  # "greedy" (k-center) or "random"
    projection_dim: int = 128  # random projection used by the greedy sampler
    top_k: int = 1  # image score = mean of the k largest patch distances
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PatchCoreConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class LiteFeatures(nn.Module):
    """Frozen EfficientNet-Lite0 patch features: ``[B, 3, S, S]`` in [0, 1] -> ``[B, 152, S/8, S/8]``."""

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        cnn = efficientnet_lite0(pretrained)
        self.stem = nn.Sequential(cnn.conv_stem, cnn.bn1)
        self.blocks = cnn.blocks[:5]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LiteFeatures:
        """Always in eval mode: the batch-norm statistics stay those of ImageNet pre-training."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        x = self.stem((images - self.mean) / self.std)
        stride8 = x
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index == 2:
                stride8 = x
        upsampled = F.interpolate(x, size=stride8.shape[-2:], mode="bilinear", align_corners=False)
        features = torch.cat([stride8, upsampled], dim=1)
        return F.avg_pool2d(features, 3, stride=1, padding=1, count_include_pad=False)


def nearest_distance(queries: Tensor, bank: Tensor) -> Tensor:
    """Euclidean distance of each query ``[N, C]`` to its nearest bank row ``[M, C]`` -> ``[N]``.

    The search runs without gradients in chunks (at most ``_SEARCH_BUDGET`` distances at once);
    the returned distance to the found neighbour carries the gradient w.r.t. ``queries``.
    """
    n, m = queries.shape[0], bank.shape[0]
    with torch.no_grad():
        q = queries.detach()
        q_rows = max(1, min(n, _SEARCH_BUDGET // max(1, min(m, 4096))))
        b_rows = max(1, min(m, _SEARCH_BUDGET // q_rows))
        index = torch.empty(n, dtype=torch.long, device=queries.device)
        for qs in range(0, n, q_rows):
            chunk = q[qs : qs + q_rows]
            best = torch.full((chunk.shape[0],), float("inf"), device=q.device, dtype=q.dtype)
            best_index = torch.zeros(chunk.shape[0], dtype=torch.long, device=q.device)
            for bs in range(0, m, b_rows):
                values, where = torch.cdist(chunk, bank[bs : bs + b_rows]).min(dim=1)
                better = values < best
                best = torch.where(better, values, best)
                best_index = torch.where(better, where + bs, best_index)
            index[qs : qs + q_rows] = best_index
    return torch.linalg.vector_norm(queries - bank[index], dim=1)


def greedy_coreset(features: Tensor, n: int, projection_dim: int, seed: int) -> Tensor:
    """Indices of ``n`` rows chosen by greedy k-center (farthest-point) selection.

    Distances are computed on a Gaussian random projection to ``projection_dim`` dimensions
    (Johnson-Lindenstrauss) for speed.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = features.float()
        if projection_dim and x.shape[1] > projection_dim:
            proj = torch.randn(x.shape[1], projection_dim, generator=generator)
            x = x @ (proj / projection_dim**0.5).to(x.device)
        squared = (x * x).sum(dim=1)
        chosen = [int(torch.randint(x.shape[0], (1,), generator=generator))]
        # Squared distance to the nearest chosen row, via |x|^2 - 2 x.c + |c|^2 (one mat-vec).
        min_dist = squared - 2 * (x @ x[chosen[0]]) + squared[chosen[0]]
        for _ in range(n - 1):
            nxt = int(min_dist.argmax())
            chosen.append(nxt)
            torch.minimum(min_dist, squared - 2 * (x @ x[nxt]) + squared[nxt], out=min_dist)
    return torch.tensor(chosen, dtype=torch.long)


def select_coreset(features: Tensor, config: PatchCoreConfig) -> Tensor:
    """The memory bank: ``config.coreset`` of the rows of ``features`` (``[N, C]``)."""
    if not 0 < config.coreset <= 1:
        raise ValueError(f"coreset fraction {config.coreset} outside (0, 1]")
    n = max(1, round(features.shape[0] * config.coreset))
    if n >= features.shape[0]:
        return features.clone()
    if config.sampler == "greedy":
        index = greedy_coreset(features, n, config.projection_dim, config.seed)
    elif config.sampler == "random":
        generator = torch.Generator().manual_seed(config.seed)
        index = torch.randperm(features.shape[0], generator=generator)[:n]
    else:
        raise ValueError(f"unknown sampler {config.sampler!r}; expected one of {SAMPLERS}")
    return features[index.to(features.device)].clone()


class PatchCore(Detector):
    """Images in [0, 1] ``[B, 3, S, S]`` -> nearest-neighbour distance logits ``[B, S/8, S/8]``."""

    def __init__(self, config: PatchCoreConfig, pretrained: bool = False) -> None:
        super().__init__()
        if config.image_size % STRIDE:
            raise ValueError(f"image size {config.image_size} is not a multiple of {STRIDE}")
        self.config = config
        self.image_size = config.image_size
        self.top_k = config.top_k
        self.grid = (config.image_size // STRIDE,) * 2
        self.features = LiteFeatures(pretrained)
        self.register_buffer("memory_bank", torch.zeros(0, FEATURE_DIM))

    def embed(self, images: Tensor) -> Tensor:
        """Patch features ``[B, h*w, 152]``."""
        return self.features(images).flatten(2).transpose(1, 2)

    def forward(self, images: Tensor) -> Tensor:
        if self.memory_bank.shape[0] == 0:
            raise RuntimeError("the PatchCore memory bank is empty: fit it first")
        feats = self.embed(images)
        b, n, c = feats.shape
        distances = nearest_distance(feats.reshape(b * n, c), self.memory_bank)
        return distances.view(b, *self.grid)

    def card(self) -> DetectorCard:
        """A short model card and the config it was built from."""
        info: dict[str, Any] = {
            "architecture": "PatchCore (baseline)",
            "backbone": "efficientnet_lite0 (ImageNet, frozen), stride 8 + 16",
            "image_size": self.image_size,
            "patch_grid": list(self.grid),
            "memory_bank": int(self.memory_bank.shape[0]),
            "coreset": self.config.coreset,
            "sampler": self.config.sampler,
            "image_score": f"top-{self.top_k} mean of nearest-neighbour distances",
        }
        return DetectorCard(info, config=self.config.to_dict())


def fit_patchcore(
    batches: Iterable[Tensor],
    config: PatchCoreConfig,
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> PatchCore:
    """Build the memory bank from batches of normal images ``[B, 3, S, S]`` (pretrained backbone)."""
    model = PatchCore(config, pretrained=True).to(device).eval()
    collected: list[Tensor] = []
    with torch.no_grad():
        for images in batches:
            feats = model.embed(images.to(device))
            collected.append(feats.reshape(-1, feats.shape[-1]))
            if progress is not None:
                progress(images.shape[0])
    if not collected:
        raise ValueError("no training images")
    model.memory_bank = select_coreset(torch.cat(collected), config)
    return model
