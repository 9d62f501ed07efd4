"""Gallery thumbnails: read a PNG from the audit folder, shrink it, embed it as a data URI.

Paths come from results.json, which may have been edited: anything that is absolute or resolves
outside the audit folder (``..``, symlinks) is refused, never read.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image, UnidentifiedImageError

#: Longest side of an embedded thumbnail, in pixels.
THUMB_SIDE = 160
#: Files larger than this are not opened (a gallery PNG is a few hundred kB at most).
MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class Thumbnail:
    """An embedded image (``uri``) or the reason there is none (``problem``)."""

    uri: str | None
    problem: str | None = None


def resolve_inside(audit_dir: Path, rel: str) -> Path | None:
    """``audit_dir / rel`` if it stays inside ``audit_dir`` after resolving links, else None."""
    if not rel or PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute():
        return None
    if PureWindowsPath(rel).drive:
        return None
    root = audit_dir.resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(root):
        return None
    return target


def _encode(img: Image.Image) -> tuple[str, bytes]:
    """Encode as PNG and (for colour/grey images) JPEG; keep the smaller."""
    png = io.BytesIO()
    img.save(png, format="PNG", optimize=True)
    best = ("image/png", png.getvalue())
    if img.mode in ("RGB", "L"):
        jpg = io.BytesIO()
        img.save(jpg, format="JPEG", quality=85, optimize=True)
        if len(jpg.getvalue()) < 0.8 * len(best[1]):
            best = ("image/jpeg", jpg.getvalue())
    return best


def thumbnail(audit_dir: Path, rel: str | None, side: int = THUMB_SIDE) -> Thumbnail:
    """Load ``audit_dir/rel`` as a thumbnail data URI of at most ``side`` pixels."""
    if not rel:
        return Thumbnail(None, "not recorded")
    path = resolve_inside(audit_dir, str(rel))
    if path is None:
        return Thumbnail(None, "refused: the path leaves the audit folder")
    if not path.is_file():
        return Thumbnail(None, "missing file")
    if path.stat().st_size > MAX_FILE_BYTES:
        return Thumbnail(None, "file too large to embed")
    try:
        with Image.open(path) as im:
            im.draft("RGB", (side, side))
            if im.mode in ("1", "L", "I", "I;16", "F"):
                img = im.convert("L")
            elif im.mode in ("RGBA", "LA", "P"):
                rgba = im.convert("RGBA")
                img = Image.new("RGB", rgba.size, (255, 255, 255))
                img.paste(rgba, mask=rgba.getchannel("A"))
            else:
                img = im.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError):
        return Thumbnail(None, "not a readable image")
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    mime, data = _encode(img)
    return Thumbnail(f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}")
