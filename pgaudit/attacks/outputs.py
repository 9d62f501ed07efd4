"""An audit folder changes all at once, or not at all.

:func:`staged_folder` gives the audit a fresh staging folder beside ``out_dir``
(``.<name>.partial-<pid>-<random>``) to write every artefact into. When the audit finishes, the
previous run's artefacts (:data:`ARTEFACTS`: results.json, scores.npz, maps.npz, the gallery, a
report) leave ``out_dir`` and the new ones move in, so no stale ``maps.npz`` or ``report.html``
of an earlier run sits beside new results; other files in ``out_dir`` are left alone. When the
audit fails (an error, Ctrl-C), the staging folder is removed and ``out_dir`` is byte-identical
to before. A staging folder left by a killed process (its pid no longer runs) is removed by the
next audit into the same folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from pgaudit.errors import PgauditError

#: What an audit writes into its folder (and so replaces on the next run).
ARTEFACTS = ("results.json", "scores.npz", "maps.npz", "gallery", "report.html")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_abandoned(out_dir: Path) -> None:
    """Staging folders of ``out_dir`` whose process is gone (killed mid-audit)."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        try:
            pid = int(stale.name.rsplit(".partial-", 1)[1].split("-")[0])
        except ValueError:
            continue
        if not _alive(pid):
            shutil.rmtree(stale, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _commit(stage: Path, out_dir: Path) -> None:
    """Replace the previous run's artefacts in ``out_dir`` by the staged ones."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ARTEFACTS:
        _remove(out_dir / name)
    for item in sorted(stage.iterdir()):
        os.replace(item, out_dir / item.name)
    stage.rmdir()


@contextlib.contextmanager
def staged_folder(out_dir: str | Path, *, active: bool = True) -> Iterator[Path]:
    """The folder to write an audit into; moved into ``out_dir`` when the block succeeds.

    ``active`` False (a worker other than rank 0, which writes nothing): ``out_dir`` itself,
    untouched.
    """
    out_dir = Path(out_dir)
    if not active:
        yield out_dir
        return
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out_dir)
    stage = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        stage.mkdir()
    except OSError as exc:
        raise PgauditError(
            f"{out_dir.parent}: cannot write the audit there ({exc.strerror}); choose another "
            "out folder."
        ) from None
    try:
        yield stage
        _commit(stage, out_dir)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
