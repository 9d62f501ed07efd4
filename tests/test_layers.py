"""The package's layers depend one way: each may import only the layers listed below it.

Bottom to top: errors; checks, devices, precision, config, results, dataset_summary; data, runtime, metrics, agreement; fapa, models; attacks;
training; regression, parity, gate, report; demo, cli, workers (nproc) and the top-level API. Auditing never needs training code,
pseudo-anomalies never need a model, and library code never needs the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pgaudit

ROOT = Path(pgaudit.__file__).parent

#: What each part of the package may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "checks": {"errors"},
    "devices": {"errors"},
    "precision": {"errors"},
    "config": {"errors"},
    "results": {"errors"},
    "data": {"errors", "checks"},
    "runtime": {"errors", "devices"},
    "metrics": {"errors", "results"},
    "agreement": {"errors", "results", "metrics"},
    "fapa": {"errors", "data"},
    "models": {"errors", "checks", "data", "precision"},
    "attacks": {
        "errors",
        "checks",
        "devices",
        "precision",
        "results",
        "data",
        "runtime",
        "metrics",
        "agreement",
        "models",
    },
    "training": {
        "errors",
        "checks",
        "devices",
        "precision",
        "results",
        "data",
        "runtime",
        "metrics",
        "fapa",
        "models",
        "attacks",
    },  # fmt: skip
    "dataset_summary": {"errors", "results"},
    "regression": {"errors", "results", "metrics"},
    "parity": {"errors", "checks", "metrics", "agreement", "models", "attacks"},
    "gate": {"errors", "config", "results", "regression", "dataset_summary"},
    "report": {"errors", "config", "results", "gate", "dataset_summary"},
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "pgaudit" and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    """The pgaudit parts a source file imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found |= {p for p in map(_part, names) if p is not None}
    return found


def _files(part: str) -> list[Path]:
    folder = ROOT / part
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [ROOT / f"{part}.py"]


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(part):
    for path in _files(part):
        extra = _imports(path) - ALLOWED[part] - {part}
        assert not extra, f"{path.relative_to(ROOT)} imports pgaudit.{sorted(extra)}"


def test_every_part_of_the_package_has_a_layer():
    tops = {
        "api",
        "cli",
        "cli_options",
        "cli_parity",
        "demo",
        "roots",
        "tracking",
        "workers",
        "__init__",
        "__main__",
    }
    parts = {p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.suffix == ".py" or (
        p.is_dir() and (p / "__init__.py").exists())}  # fmt: skip
    assert parts - tops == set(ALLOWED)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from pgaudit.training import loop\n    import pgaudit.cli\n")
    assert _imports(source) == {"training", "cli"}
