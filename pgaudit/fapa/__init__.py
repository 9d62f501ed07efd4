"""Foreground-aware pseudo-anomalies (FAPA): the training signal of PatchGuard hardening.

``make_pseudo_anomalies(images, foreground, rng, config)`` pastes one corrupted, rotated patch
inside each image's foreground and returns the images with their pixel masks;
``patch_labels(masks, patch_size)`` turns masks into patch labels (any-pixel rule).
"""

from pgaudit.fapa.corruptions import CORRUPTIONS, LEVELS, CorruptionLevel, corrupt_patch
from pgaudit.fapa.generator import FapaConfig, make_pseudo_anomalies, patch_labels
from pgaudit.fapa.perlin import fractal_noise, perlin_noise

__all__ = [
    "CORRUPTIONS",
    "LEVELS",
    "CorruptionLevel",
    "FapaConfig",
    "corrupt_patch",
    "fractal_noise",
    "make_pseudo_anomalies",
    "patch_labels",
    "perlin_noise",
]
