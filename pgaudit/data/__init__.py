"""pgaudit.data: dataset layouts, records, image loading, the torch Dataset and synthetic data.

``open_category(path, category=None)`` auto-detects the layout (MVTec AD, MPDD, VisA, BTAD, plain
folders) and returns a :class:`Category` of :class:`Sample` records; :class:`AnomalyDataset` turns
samples into tensors at the model's input size. Torch is imported only when a tensor is made, so
the layout readers, checks and the synthetic generator stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgaudit.data.images import image_size_of, load_image, load_mask
from pgaudit.data.layouts import detect_layout, open_categories, open_category
from pgaudit.data.records import Category, Sample

if TYPE_CHECKING:
    from pgaudit.data.dataset import AnomalyDataset

__all__ = [
    "AnomalyDataset",
    "Category",
    "Sample",
    "detect_layout",
    "image_size_of",
    "load_image",
    "load_mask",
    "open_categories",
    "open_category",
]


def __getattr__(name: str) -> Any:
    if name == "AnomalyDataset":  # imports torch
        from pgaudit.data.dataset import AnomalyDataset

        return AnomalyDataset
    raise AttributeError(f"module 'pgaudit.data' has no attribute {name!r}")
