"""Project defaults for the CLI: ``pgaudit.toml``, or ``[tool.pgaudit]`` in ``pyproject.toml``.

Only the working directory is searched. When ``pgaudit.toml`` exists it is used alone (its
top-level keys); otherwise the ``[tool.pgaudit]`` table of ``pyproject.toml``, if any. Options
given on the command line always win (:func:`config_value`). Documented keys::

    model = "hardened.pt"        # the detector to audit (checkpoint, preset or adapter)
    data = "data/mvtec"          # the dataset folder
    category = "bottle"          # the category inside it
    suite = "quick"              # the attack suite
    out = "audit"                # the output folder

    [gate]                       # `pgaudit gate` criteria ([tool.pgaudit.gate] in pyproject.toml)
    min_robust_auroc = 0.6       # fail when the robust (worst-case) metric is below this
    metric = "image_auroc"       # image_auroc | pixel_auroc | aupro
    min_clean_auroc = 0.9        # fail when the clean metric is below this
    use_lower_bound = false      # compare the lower bound of the bootstrap CI
    max_drop = 0.02              # with `gate --baseline`: the largest robust drop allowed
    significant_only = false     # ... and only a drop a paired bootstrap confirms fails
    max_parity_gap = 0.001       # an export audited with --surrogate: its largest clean gap

    [mlflow]                     # experiment tracking (pgaudit.tracking; pip install 'pgaudit[mlflow]')
    enabled = true               # log train / harden / attack runs without --mlflow
    experiment = "pgaudit"       # the MLflow experiment
    tracking_uri = "http://mlflow.internal:5000"   # default: MLflow's own (./mlflow.db)

Every key is checked (unknown keys, types, and for ``[gate]`` value ranges), so a typo fails
loudly instead of silently dropping a CI criterion or choosing the default suite.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pgaudit.errors import PgauditError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_FILE = "pgaudit.toml"
PYPROJECT_FILE = "pyproject.toml"
STRING_KEYS = ("model", "data", "category", "suite", "out")
GATE_METRICS = ("image_auroc", "pixel_auroc", "aupro")
GATE_KEYS = (
    "min_robust_auroc", "metric", "min_clean_auroc", "use_lower_bound", "max_drop",
    "max_parity_gap",
    "significant_only",
)  # fmt: skip


def find_project_config(cwd: Path | None = None) -> Path | None:
    """The file :func:`load_project_config` reads in ``cwd``, or None."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    for name in (CONFIG_FILE, PYPROJECT_FILE):
        if (cwd / name).is_file():
            return cwd / name
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise PgauditError(f"{path} is not valid TOML ({exc}): fix its syntax.") from None
    except UnicodeDecodeError:
        raise PgauditError(f"{path} is not UTF-8 text: save it as UTF-8 TOML.") from None
    except OSError as exc:
        raise PgauditError(
            f"{path} cannot be read ({exc.strerror}): check its permissions."
        ) from None


def load_project_config(cwd: Path | None = None) -> dict[str, Any]:
    """The project's pgaudit settings from ``cwd`` (default: the working directory), or ``{}``."""
    path = find_project_config(cwd)
    if path is None:
        return {}
    data = _read_toml(path)
    prefix = ""
    if path.name == PYPROJECT_FILE:
        prefix = "tool.pgaudit."
        tool = data.get("tool", {})
        data = tool.get("pgaudit", {}) if isinstance(tool, dict) else {}
        if not isinstance(data, dict):
            raise PgauditError(f"{path}: tool.pgaudit must be a table; write it as [tool.pgaudit].")
    _check(data, path, prefix)
    return data


#: The keys the file may hold: the strings above and the [gate] and [mlflow] tables.
KNOWN_KEYS = (*STRING_KEYS, "gate", "mlflow")


def _check(config: dict[str, Any], path: Path, prefix: str) -> None:
    unknown = sorted(set(config) - set(KNOWN_KEYS))
    if unknown:
        raise PgauditError(
            f"{path}: unknown key(s) {', '.join(prefix + k for k in unknown)}; the keys are "
            f"{', '.join(prefix + k for k in KNOWN_KEYS)} (a misspelt key would be ignored)."
        )
    for key in STRING_KEYS:
        if key in config and not isinstance(config[key], str):
            raise PgauditError(
                f"{path}: {prefix}{key} must be a string (got {config[key]!r}); quote the value."
            )
    if "gate" not in config:
        return
    gate = config["gate"]
    table = f"{path} [{prefix}gate]"
    if not isinstance(gate, dict):
        raise PgauditError(f"{table} must be a table: write the criteria under a [gate] header.")
    unknown = sorted(set(gate) - set(GATE_KEYS))
    if unknown:
        raise PgauditError(
            f"{table} has unknown key(s) {', '.join(unknown)}: the keys are {', '.join(GATE_KEYS)}."
        )
    for key in ("min_robust_auroc", "min_clean_auroc", "max_drop", "max_parity_gap"):
        if key in gate:
            value = gate[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value <= 1
            ):
                raise PgauditError(f"{table}: {key} must be a number in [0, 1] (got {value!r}).")
    if "metric" in gate and gate["metric"] not in GATE_METRICS:
        raise PgauditError(
            f"{table}: metric must be one of {', '.join(GATE_METRICS)} (got {gate['metric']!r})."
        )
    for key in ("use_lower_bound", "significant_only"):
        if key in gate and not isinstance(gate[key], bool):
            raise PgauditError(f"{table}: {key} must be true or false (got {gate[key]!r}).")


def config_value(config: dict[str, Any], key: str, cli_value: Any, default: Any = None) -> Any:
    """Precedence: the CLI value unless None, else the file's value, else ``default``.

    ``key`` may be dotted to reach into a table, e.g. ``"gate.metric"``.
    """
    if cli_value is not None:
        return cli_value
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def attack_defaults(
    config: dict[str, Any],
    *,
    model: str | None,
    data: Path | None,
    suite: str | None,
    out: Path | None,
    category: str | None,
) -> dict[str, Any]:
    """``pgaudit attack``'s MODEL, DATA, suite, out and category: given, else from ``config``."""
    chosen = {
        "model": config_value(config, "model", model),
        "data": config_value(config, "data", data),
        "suite": config_value(config, "suite", suite, "quick"),
        "out": Path(config_value(config, "out", out, "audit")),
        "category": config_value(config, "category", category),
    }
    for name in ("model", "data"):
        if chosen[name] is None:
            raise PgauditError(
                f"{name.upper()} is missing: pass it (pgaudit attack MODEL DATA) or set "
                f"`{name}` in pgaudit.toml."
            )
    chosen["data"] = Path(chosen["data"])
    chosen["model"] = str(chosen["model"])
    return chosen
