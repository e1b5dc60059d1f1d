"""The typed run record: it holds every key of every committed result file, and rejects partial files."""

import json
from pathlib import Path

import pytest

from clbench.errors import ResultsError
from clbench.results import RunResult, read_result, write_json_atomic

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted((REPO / "results").glob("*/runs/*.json"))


def test_there_are_committed_results_to_check():
    assert len(COMMITTED) > 50


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_a_committed_result_reads_and_writes_back_unchanged(path):
    assert read_result(path).to_json() == json.loads(path.read_text())


def test_a_record_round_trips_through_its_file(tmp_path):
    record = RunResult(
        run_id="x",
        config={"strategy": {"name": "er", "args": {"task_balanced": False}}},
        accuracy={"class_il": [[50.0]], "task_il": [[90.0]]},
        metrics={"class_il": {"A1": 50.0}, "task_il": {"A1": 90.0}},
        evaluated_after_task=[0],
        strategy_defaults={"task_balanced": False},
    )
    write_json_atomic(tmp_path / "x.json", record.to_json())
    again = read_result(tmp_path / "x.json")
    assert again == record
    assert (again.strategy_name, again.strategy_revision, again.strategy_args) == ("er", 1, {"task_balanced": False})
    assert "started_at" not in again.to_json()  # absent optional keys stay absent


def test_a_result_without_its_task_il_part_is_refused(tmp_path):
    data = RunResult(
        run_id="x",
        config={},
        accuracy={"class_il": [[50.0]], "task_il": [[90.0]]},
        metrics={"class_il": {"A1": 50.0}, "task_il": {"A1": 90.0}},
        evaluated_after_task=[0],
    ).to_json()
    del data["accuracy"]["task_il"]
    write_json_atomic(tmp_path / "x.json", data)
    with pytest.raises(ResultsError, match="accuracy lacks one of class_il, task_il"):
        read_result(tmp_path / "x.json")


def test_a_result_with_a_metric_that_is_not_a_number_is_skipped_by_name(tmp_path, capsys):
    from clbench.cli import main

    data = RunResult(
        run_id="x",
        config={},
        accuracy={"class_il": [[50.0]], "task_il": [[90.0]]},
        metrics={"class_il": {"A1": 50.0, "Ainf": "abc"}, "task_il": {"A1": 90.0}},
        evaluated_after_task=[0],
    ).to_json()
    write_json_atomic(tmp_path / "runs" / "x.json", data)
    with pytest.raises(ResultsError, match=r"metrics.class_il.Ainf is 'abc', not a number or null"):
        read_result(tmp_path / "runs" / "x.json")
    # the report names the file in one line instead of a traceback
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 2
    assert "metrics.class_il.Ainf is 'abc'" in capsys.readouterr().err
