"""pgaudit.toml / [tool.pgaudit] loading, validation and CLI > file > default precedence."""

from __future__ import annotations

import pytest

from pgaudit.config import config_value, find_project_config, load_project_config
from pgaudit.errors import PgauditError

PGAUDIT_TOML = """
model = "hardened.pt"
data = "data/mvtec"
category = "bottle"
suite = "quick"
out = "audit"

[gate]
min_robust_auroc = 0.6
metric = "image_auroc"
min_clean_auroc = 0.9
use_lower_bound = false
"""


def test_reads_pgaudit_toml(tmp_path):
    (tmp_path / "pgaudit.toml").write_text(PGAUDIT_TOML)
    config = load_project_config(tmp_path)
    assert config["model"] == "hardened.pt" and config["suite"] == "quick"
    assert config["gate"] == {
        "min_robust_auroc": 0.6,
        "metric": "image_auroc",
        "min_clean_auroc": 0.9,
        "use_lower_bound": False,
    }


def test_reads_tool_pgaudit_from_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.pgaudit]\nsuite = "full"\n\n'
        "[tool.pgaudit.gate]\nmin_robust_auroc = 0.5\n"
    )
    assert load_project_config(tmp_path) == {"suite": "full", "gate": {"min_robust_auroc": 0.5}}


def test_pgaudit_toml_wins_over_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.pgaudit]\nsuite = "full"\n')
    (tmp_path / "pgaudit.toml").write_text('suite = "quick"\n')
    assert load_project_config(tmp_path) == {"suite": "quick"}
    assert find_project_config(tmp_path) == tmp_path / "pgaudit.toml"


def test_no_config_gives_empty_dict(tmp_path, monkeypatch):
    assert load_project_config(tmp_path) == {}
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    monkeypatch.chdir(tmp_path)
    assert load_project_config() == {}


def test_invalid_toml_names_the_file(tmp_path):
    (tmp_path / "pgaudit.toml").write_text("suite = quick\n")  # unquoted string
    with pytest.raises(PgauditError, match=r"pgaudit\.toml is not valid TOML"):
        load_project_config(tmp_path)
    (tmp_path / "pgaudit.toml").unlink()
    (tmp_path / "pyproject.toml").write_text("[tool.pgaudit\n")
    with pytest.raises(PgauditError, match=r"pyproject\.toml is not valid TOML"):
        load_project_config(tmp_path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[gate]\nmin_robust_aurco = 0.6\n", "unknown key.*min_robust_aurco"),
        ("[gate]\nmin_robust_auroc = 1.5\n", r"min_robust_auroc must be a number in \[0, 1\]"),
        ('[gate]\nmin_clean_auroc = "high"\n', "min_clean_auroc must be a number"),
        ('[gate]\nmetric = "accuracy"\n', "metric must be one of image_auroc"),
        ('[gate]\nuse_lower_bound = "yes"\n', "use_lower_bound must be true or false"),
        ('gate = "strict"\n', "must be a table"),
        ("suite = 3\n", "suite must be a string"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, text, match):
    (tmp_path / "pgaudit.toml").write_text(text)
    with pytest.raises(PgauditError, match=match) as info:
        load_project_config(tmp_path)
    assert "pgaudit.toml" in str(info.value)


def test_pyproject_errors_name_the_tool_table(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.pgaudit.gate]\nmetric = 'f1'\n")
    with pytest.raises(PgauditError, match=r"pyproject\.toml \[tool\.pgaudit\.gate\]"):
        load_project_config(tmp_path)


def test_config_value_precedence():
    config = {"suite": "full", "gate": {"metric": "aupro"}}
    assert config_value(config, "suite", "quick", "standard") == "quick"  # CLI
    assert config_value(config, "suite", None, "standard") == "full"  # file
    assert config_value({}, "suite", None, "standard") == "standard"  # default
    assert config_value(config, "gate.metric", None, "image_auroc") == "aupro"
    assert config_value(config, "gate.min_robust_auroc", None) is None
    assert config_value(config, "suite.x", None, 1) == 1  # not a table
    assert config_value(config, "gate.use_lower_bound", False, True) is False  # falsy CLI wins


def test_a_misspelt_key_is_an_error_not_a_default(tmp_path):
    """`sutie = "full"` used to run the quick suite without a word."""
    (tmp_path / "pgaudit.toml").write_text('sutie = "full"\n')
    with pytest.raises(PgauditError, match=r"unknown key\(s\) sutie; the keys are model, data"):
        load_project_config(tmp_path)
    (tmp_path / "pgaudit.toml").unlink()
    (tmp_path / "pyproject.toml").write_text('[tool.pgaudit]\nsuite = "full"\nmodle = "m.pt"\n')
    with pytest.raises(PgauditError, match=r"unknown key\(s\) tool.pgaudit.modle"):
        load_project_config(tmp_path)
