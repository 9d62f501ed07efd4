"""results.json as typed objects: one read that checks, one write that round-trips."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from report_fixtures import build_results

from pgaudit.errors import PgauditError
from pgaudit.results import (
    AttackResult,
    AuditResults,
    MetricValue,
    SanityCheck,
    read_results,
    write_results,
)

FIXTURE = Path(__file__).parent / "fixtures" / "results_example.json"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """results.json as `run_audit` writes it (quick suite on a toy detector)."""
    from test_attacks import ToyDetector, ToySet

    from pgaudit.attacks.runner import run_audit

    out = tmp_path_factory.mktemp("audit")
    run_audit(ToyDetector(), ToySet(8), "quick", out_dir=out, progress=False, bootstrap=5)
    return out / "results.json"


def test_written_results_round_trip_byte_for_byte(written, tmp_path):
    text = written.read_text(encoding="utf-8")
    results = AuditResults.from_json(json.loads(text))
    assert json.dumps(results.to_json(), indent=2) + "\n" == text
    again = write_results(read_results(written), tmp_path / "results.json")
    assert again.read_text(encoding="utf-8") == text


def test_readers_get_typed_objects(written):
    results = read_results(written.parent)  # the folder works too
    assert all(isinstance(a, AttackResult) for a in results.attacks)
    assert all(isinstance(s, SanityCheck) for s in results.sanity)
    entry = results.robust.metric("image_auroc")
    assert isinstance(entry, MetricValue) and entry.ci is not None
    assert results.attacks[0].eps_label == "8/255" and results.attacks[0].budget
    assert results.adaptive is not None and "differentiated" in results.adaptive


@pytest.mark.parametrize("make", [lambda: json.loads(FIXTURE.read_text()), build_results])
def test_hand_made_files_round_trip_as_dicts(make):
    data = make()
    assert AuditResults.from_json(copy.deepcopy(data)).to_json() == data


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.update(schema="pgaudit.results/0"), "is not a pgaudit results file"),
        (lambda r: r.pop("robust"), "lacks the section(s) robust"),
        (lambda r: r["clean"].pop("metrics"), "has no clean.metrics: "),
        (
            lambda r: r["attacks"][1]["metrics"]["aupro"].update(value="high"),
            "attacks[1].metrics.aupro.value should be a number, not a string",
        ),
        (
            lambda r: r["sanity"][0].update(status="ok"),
            "sanity[0].status 'ok' should be one of pass, warn, fail, skip",
        ),
        (lambda r: r["attacks"][0].update(eps=None), "attacks[0].eps should be a number, not null"),
        (lambda r: r["robust"].update(metrics=[]), "robust.metrics should be an object"),
    ],
)
def test_malformed_results_name_the_file_and_field(tmp_path, edit, message):
    data = json.loads(FIXTURE.read_text())
    edit(data)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PgauditError) as info:
        read_results(path)
    text = str(info.value)
    assert text.startswith(str(path)) and message in text
    assert text.count(". ") == 0 and text.endswith(".")  # one sentence


def test_a_malformed_file_is_exit_2_in_the_cli(run_cli, tmp_path):
    data = json.loads(FIXTURE.read_text())
    data["robust"]["metrics"]["image_auroc"]["ci"] = [0.1]
    (tmp_path / "results.json").write_text(json.dumps(data))
    for args in (("gate", tmp_path, "--min-robust-auroc", "0.5"), ("report", tmp_path)):
        result = run_cli(*args)
        assert result.exit_code == 2, args
        flat = " ".join(result.stderr.split())
        assert "robust.metrics.image_auroc.ci should be [low, high]" in flat
        assert "Traceback" not in result.stderr


def test_an_undefined_metric_needs_a_reason():
    with pytest.raises(ValueError, match="reason"):
        MetricValue.of(None)
    assert MetricValue.of(1, ci=(0, 1)) == MetricValue(1.0, (0.0, 1.0), None)
