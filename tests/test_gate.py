"""The CI gate: API, JUnit output, config thresholds and `pgaudit gate` exit codes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from pgaudit.errors import PgauditError
from pgaudit.gate import GateCriteria, GateOutcome, write_junit
from pgaudit.gate import evaluate_gate as _evaluate
from pgaudit.metrics import METRIC_NAMES
from pgaudit.results import AuditResults, load_results

FIXTURE = Path(__file__).parent / "fixtures" / "results_example.json"
# In the fixture: clean image_auroc 0.99, robust image_auroc 0.775 (95% CI 0.644-0.890),
# robust aupro 0.486, over 2 attacks at 8/255.


@pytest.fixture
def results() -> dict:
    return load_results(FIXTURE)


@pytest.fixture
def audit(tmp_path, monkeypatch) -> Path:
    """An audit folder holding the example results.json; the working directory is tmp_path."""
    folder = tmp_path / "audit"
    folder.mkdir()
    (folder / "results.json").write_text(FIXTURE.read_text())
    monkeypatch.chdir(tmp_path)
    return folder


def evaluate_gate(results: dict, criteria) -> GateOutcome:
    """The gate on a (possibly edited) results.json dict, read as the CLI reads it."""
    return _evaluate(AuditResults.from_json(results), criteria)


def _flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def _write(path: Path, results: dict) -> Path:
    path.write_text(json.dumps(results))
    return path


# --------------------------------------------------------------------------------------------
# the fixture itself


def test_fixture_follows_the_results_schema(results):
    for scope in ("clean", "robust"):
        assert set(results[scope]["metrics"]) == set(METRIC_NAMES)
        for entry in results[scope]["metrics"].values():
            assert set(entry) == {"value", "ci", "reason"}
            assert entry["ci"][0] <= entry["value"] <= entry["ci"][1]
    assert 2 <= len(results["attacks"]) <= 3
    assert results["robust"]["attack_ids"] == [a["id"] for a in results["attacks"]]
    for name in METRIC_NAMES:  # the per-example worst case is at most every single attack
        worst = min(a["metrics"][name]["value"] for a in results["attacks"])
        assert results["robust"]["metrics"][name]["value"] <= worst + 1e-9
    assert results["gallery"] == [] and results["sanity"]
    assert {"pgaudit_version", "seed", "command"} <= set(results["meta"])


# --------------------------------------------------------------------------------------------
# API


def test_pass_and_fail_with_numbers_in_messages(results):
    outcome = evaluate_gate(results, GateCriteria(min_robust_auroc=0.6, min_clean_auroc=0.9))
    assert outcome.passed and not outcome.failures
    assert [c.name for c in outcome.criteria] == ["robust image_auroc", "clean image_auroc"]

    outcome = evaluate_gate(results, GateCriteria(min_robust_auroc=0.8, min_clean_auroc=0.9))
    assert not outcome.passed
    (failure,) = outcome.failures
    assert failure.value == pytest.approx(0.775) and failure.threshold == 0.8
    assert failure.message == (
        "FAIL robust image_auroc 0.775 < 0.800 (worst case over 2 attacks at eps 8/255)"
    )


def test_metric_choice_and_lower_bound(results):
    outcome = evaluate_gate(results, GateCriteria(metric="aupro", min_robust_auroc=0.5))
    assert not outcome.passed and "robust aupro 0.486 < 0.500" in outcome.criteria[0].message
    # The point value passes 0.7 but the CI lower bound (0.644) does not.
    assert evaluate_gate(results, GateCriteria(min_robust_auroc=0.7)).passed
    outcome = evaluate_gate(results, GateCriteria(min_robust_auroc=0.7, use_lower_bound=True))
    assert not outcome.passed
    assert outcome.criteria[0].value == pytest.approx(0.643908)
    assert "lower bound 0.644 < 0.700" in outcome.criteria[0].message


def test_close_values_are_shown_with_enough_digits(results):
    results["robust"]["metrics"]["image_auroc"]["value"] = 0.5999
    message = evaluate_gate(results, GateCriteria(min_robust_auroc=0.6)).criteria[0].message
    assert "0.599900 < 0.600000" in message


def test_unusable_results_raise_clear_errors(results):
    with pytest.raises(PgauditError) as info:
        evaluate_gate(results, GateCriteria())
    assert str(info.value).startswith(
        "no criterion given: pass min_robust_auroc or set [gate] in pgaudit.toml"
    )
    broken = copy.deepcopy(results)
    broken["robust"]["metrics"]["pixel_auroc"] = {
        "value": None,
        "ci": None,
        "reason": "no ground-truth masks",
    }
    with pytest.raises(PgauditError, match=r"robust pixel_auroc is undefined \(no ground-truth"):
        evaluate_gate(broken, GateCriteria(metric="pixel_auroc", min_robust_auroc=0.5))
    no_ci = copy.deepcopy(results)
    no_ci["robust"]["metrics"]["image_auroc"]["ci"] = None
    with pytest.raises(PgauditError, match="no confidence interval"):
        evaluate_gate(no_ci, GateCriteria(min_robust_auroc=0.5, use_lower_bound=True))
    del broken["robust"]["metrics"]
    with pytest.raises(PgauditError, match=r"results.json has no robust\.metrics: "):
        evaluate_gate(broken, GateCriteria(min_robust_auroc=0.5))
    with pytest.raises(PgauditError, match="between 0 and 1"):
        GateCriteria(min_robust_auroc=60)
    with pytest.raises(PgauditError, match="^metric f1: unknown gate metric"):
        GateCriteria(metric="f1")


def test_criteria_may_be_a_gate_table(results):
    outcome = evaluate_gate(results, {"min_robust_auroc": 0.8, "metric": "image_auroc"})
    assert not outcome.passed


def test_resolve_prefers_cli_over_config():
    config = {"gate": {"min_robust_auroc": 0.6, "metric": "aupro", "use_lower_bound": True}}
    criteria = GateCriteria.resolve(config, min_robust_auroc=0.7, use_lower_bound=False)
    assert criteria == GateCriteria(metric="aupro", min_robust_auroc=0.7, use_lower_bound=False)
    assert GateCriteria.resolve({}) == GateCriteria()


def test_junit_parses_with_right_counts(results, tmp_path):
    outcome = evaluate_gate(results, GateCriteria(min_robust_auroc=0.8, min_clean_auroc=0.9))
    path = write_junit(outcome, tmp_path / "reports" / "gate.xml")
    root = ET.parse(path).getroot()
    suites = root.findall("testsuite") if root.tag == "testsuites" else [root]
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == "pgaudit.gate"
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    assert len(cases) == 2
    failures = [c.find("failure") for c in cases if c.find("failure") is not None]
    assert len(failures) == 1
    assert failures[0].get("message").startswith("FAIL robust image_auroc 0.775 < 0.800")


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_pass_exit_0(run_cli, audit):
    result = run_cli("gate", audit, "--min-robust-auroc", "0.6", "--min-clean-auroc", "0.9")
    assert result.exit_code == 0, result.stderr
    assert "PASS robust image_auroc 0.775 >= 0.600" in result.stdout
    assert "PASS clean image_auroc" in result.stdout


def test_cli_fail_exit_1_with_junit(run_cli, audit, tmp_path):
    junit = tmp_path / "gate.xml"
    result = run_cli("gate", audit / "results.json", "--min-robust-auroc", "0.8", "--junit", junit)
    assert result.exit_code == 1
    assert (
        "FAIL robust image_auroc 0.775 < 0.800 (worst case over 2 attacks at eps 8/255)"
        in result.stdout
    )
    root = ET.parse(junit).getroot()
    assert len(list(root.iter("failure"))) == 1


def test_cli_thresholds_from_pgaudit_toml_and_override(run_cli, audit, tmp_path):
    (tmp_path / "pgaudit.toml").write_text(
        '[gate]\nmin_robust_auroc = 0.7\nmetric = "image_auroc"\nuse_lower_bound = true\n'
    )
    assert run_cli("gate", audit).exit_code == 1  # lower bound 0.644 < 0.7
    assert run_cli("gate", audit, "--no-use-lower-bound").exit_code == 0
    assert run_cli("gate", audit, "--min-robust-auroc", "0.6").exit_code == 0


def test_cli_thresholds_from_pyproject(run_cli, audit, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        "[tool.pgaudit.gate]\nmin_robust_auroc = 0.5\nmetric = 'aupro'\n"
    )
    result = run_cli("gate", audit)
    assert result.exit_code == 1 and "FAIL robust aupro 0.486 < 0.500" in result.stdout


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((), "no criterion given: pass --min-robust-auroc or set [gate] in pgaudit.toml"),
        (("--min-robust-auroc", "1.5"), "between 0 and 1"),
        (("--min-robust-auroc", "0.5", "--metric", "f1"), "unknown gate metric"),
    ],
)
def test_cli_bad_criteria_exit_2(run_cli, audit, args, match):
    result = run_cli("gate", audit, *args)
    assert result.exit_code == 2
    assert match in _flat(result.stderr)


def test_cli_unusable_input_exit_2(run_cli, audit, tmp_path, results):
    missing = run_cli("gate", tmp_path / "nowhere.json", "--min-robust-auroc", "0.5")
    assert missing.exit_code == 2 and "nowhere.json does not exist" in _flat(missing.stderr)
    wrong = _write(tmp_path / "other.json", {"schema": "something/else"})
    result = run_cli("gate", wrong, "--min-robust-auroc", "0.5")
    assert result.exit_code == 2 and "not a pgaudit results file" in _flat(result.stderr)
    results["robust"]["metrics"]["aupro"] = {"value": None, "ci": None, "reason": "no masks"}
    undefined = _write(tmp_path / "undefined.json", results)
    result = run_cli("gate", undefined, "--min-robust-auroc", "0.5", "--metric", "aupro")
    assert result.exit_code == 2
    assert "robust aupro is undefined (no masks)" in _flat(result.stderr)
    no_ci = run_cli("gate", undefined, "--min-robust-auroc", "0.5", "--use-lower-bound")
    assert no_ci.exit_code == 0  # image_auroc has a CI in the fixture


def _leaves(node, path=()):
    """The paths of the numbers in a JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield path


def _refused_naming(result, path: Path) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one sentence
    assert str(path) in result.stderr


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a": ' * 100_000 + "1" + "}" * 100_000,
        FIXTURE.read_text()[:700],
        FIXTURE.read_text().replace('"value": 0.775', '"value": NaN'),
        "[]",
        '"results"',
        "0.9",
        "null",
        "",
    ],
    ids=[
        "deep-list",
        "deep-object",
        "truncated",
        "nan",
        "list",
        "string",
        "number",
        "null",
        "empty",
    ],
)
def test_cli_hand_edited_results_exit_2_naming_the_file(run_cli, tmp_path, text):
    edited = tmp_path / "results.json"
    edited.write_text(text)
    _refused_naming(run_cli("gate", edited, "--min-robust-auroc", "0.5"), edited)


def test_cli_a_string_in_place_of_any_number_exits_2_naming_the_file(run_cli, tmp_path, results):
    edited = tmp_path / "results.json"
    for path in _leaves(results):
        changed = copy.deepcopy(results)
        node = changed
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = "high"
        edited.write_text(json.dumps(changed))
        result = run_cli("gate", edited, "--min-robust-auroc", "0.5", "--min-clean-auroc", "0.5")
        if result.exit_code != 0:  # a number the gate never reads may be anything
            _refused_naming(result, edited)


def test_a_value_exactly_at_a_threshold_passes(results):
    """The rule is ``value >= threshold`` for both criteria: equal passes, the next float up fails."""
    import math

    robust = results["robust"]["metrics"]["image_auroc"]["value"]
    clean = results["clean"]["metrics"]["image_auroc"]["value"]
    at = evaluate_gate(results, GateCriteria(min_robust_auroc=robust, min_clean_auroc=clean))
    assert [c.passed for c in at.criteria] == [True, True] and at.passed
    assert at.criteria[0].message.startswith("PASS robust image_auroc 0.775 >= 0.775 ")
    assert at.criteria[1].message == "PASS clean image_auroc 0.990 >= 0.990 (no attack)"
    above = GateCriteria(
        min_robust_auroc=math.nextafter(robust, 1), min_clean_auroc=math.nextafter(clean, 1)
    )
    assert [c.passed for c in evaluate_gate(results, above).criteria] == [False, False]
    lower = results["robust"]["metrics"]["image_auroc"]["ci"][0]
    bound = GateCriteria(min_robust_auroc=lower, use_lower_bound=True)
    assert evaluate_gate(results, bound).passed  # the CI lower bound, equal to the bar, passes


def test_cli_clean_auroc_below_its_threshold_fails_and_says_why(run_cli, audit, tmp_path):
    junit = tmp_path / "clean.xml"
    args = ("gate", audit, "--min-robust-auroc", "0.6", "--min-clean-auroc")
    result = run_cli(*args, "0.995", "--junit", junit)
    assert result.exit_code == 1
    out = _flat(result.stdout)
    assert "PASS robust image_auroc 0.775 >= 0.600" in out
    assert "FAIL clean image_auroc 0.990 < 0.995 (no attack)" in out
    (failure,) = ET.parse(junit).getroot().iter("failure")
    assert failure.get("message").startswith("FAIL clean image_auroc 0.990 < 0.995")
    at = run_cli("gate", audit, "--min-robust-auroc", "0.775", "--min-clean-auroc", "0.99")
    assert at.exit_code == 0, at.stdout  # both exactly at their threshold: pass
    assert "PASS clean image_auroc 0.990 >= 0.990" in _flat(at.stdout)
