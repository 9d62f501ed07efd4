"""A reconstruction baseline: a small convolutional autoencoder trained on the normal images.

Anomaly logits are the per-patch reconstruction error: the squared error, averaged over colour
channels and over each ``patch x patch`` cell (default 8x8), ``[B, S/8, S/8]``. Trained from
scratch with the mean squared error in seconds to a minute on a CPU; the map is differentiable
w.r.t. the input, so every white-box attack applies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgaudit.models.detector import Detector, DetectorCard


@dataclass(frozen=True)
class AutoencoderConfig:
    """Settings of the autoencoder baseline (stored in its checkpoint)."""

    image_size: int = 128
    width: int = 32  # channels of the first encoder stage (doubled per stage)
    latent: int = 32  # channels of the bottleneck at stride 16
    patch: int = 8  # side of the cells the reconstruction error is averaged over
    epochs: int = 40
    batch_size: int = 16
    lr: float = 2e-3
    top_k: int = 3
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoencoderConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2))


class Autoencoder(Detector):
    """Images in [0, 1] ``[B, 3, S, S]`` -> per-patch reconstruction error ``[B, S/p, S/p]``."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        if config.image_size % 16 or config.image_size % config.patch:
            raise ValueError(
                f"image size {config.image_size} must be a multiple of 16 and of {config.patch}"
            )
        self.config = config
        self.image_size = config.image_size
        self.top_k = config.top_k
        self.grid = (config.image_size // config.patch,) * 2
        w = config.width
        self.encoder = nn.Sequential(
            _down(3, w),
            _down(w, 2 * w),
            _down(2 * w, 4 * w),
            nn.Conv2d(4 * w, config.latent, 4, 2, 1),
        )
        self.decoder = nn.Sequential(
            _up(config.latent, 4 * w),
            _up(4 * w, 2 * w),
            _up(2 * w, w),
            nn.ConvTranspose2d(w, 3, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def reconstruct(self, images: Tensor) -> Tensor:
        """The reconstruction ``[B, 3, S, S]`` in [0, 1]."""
        return self.decoder(self.encoder(images))

    def forward(self, images: Tensor) -> Tensor:
        error = (self.reconstruct(images) - images).pow(2).mean(dim=1, keepdim=True)
        return F.avg_pool2d(error, self.config.patch).squeeze(1)

    def card(self) -> DetectorCard:
        """A short model card and the config it was built from."""
        info: dict[str, Any] = {
            "architecture": "convolutional autoencoder (baseline)",
            "image_size": self.image_size,
            "patch_grid": list(self.grid),
            "bottleneck": f"{self.config.latent} x {self.image_size // 16}^2",
            "parameters": sum(p.numel() for p in self.parameters()),
            "image_score": f"top-{self.top_k} mean of per-patch squared reconstruction error",
        }
        return DetectorCard(info, config=self.config.to_dict())


def fit_autoencoder(
    images: Tensor,
    config: AutoencoderConfig,
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> tuple[Autoencoder, list[float]]:
    """Train on normal images ``[N, 3, S, S]`` with the MSE; returns (model in eval mode, losses).

    Light augmentation (random flips) stretches small training sets; ``progress(epoch)`` is called
    after each epoch.
    """
    torch.manual_seed(config.seed)
    model = Autoencoder(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, config.epochs))
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    for epoch in range(config.epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = images[order[start : start + config.batch_size]].to(device)
            if torch.rand(1, generator=generator) < 0.5:
                batch = batch.flip(-1)
            loss = F.mse_loss(model.reconstruct(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.shape[0]
        scheduler.step()
        losses.append(total / images.shape[0])
        if progress is not None:
            progress(epoch + 1)
    return model.eval(), losses
