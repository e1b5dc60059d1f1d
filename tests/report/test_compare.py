"""`clbench compare`: runs that differ in one setting, paired by seed."""

import json

import pytest

from clbench.cli import main
from clbench.report.compare import compare_setting
from clbench.results import RunResult, write_json_atomic


def _run(folder, seed, precision, ainf, first, buffer_size=None, eval_tasks=None, stem=""):
    config = {"seed": seed, "strategy": {"name": "er", "args": {}}, "training": {"precision": precision, "lr": 0.1}}
    if buffer_size is not None:
        config["buffer_size"] = buffer_size
    if eval_tasks is not None:
        config["training"]["eval_tasks"] = eval_tasks
    matrix = [[first, None], [40.0, 50.0]]
    metrics = {"A1": 50.0, "Ainf": ainf, "Am": 45.0, "BWT": -5.0}
    name = "-".join(str(part) for part in ("run", seed, precision, buffer_size, stem) if part)
    record = RunResult(
        run_id=name,
        config=config,
        accuracy={"class_il": matrix, "task_il": matrix},
        metrics={"class_il": metrics, "task_il": metrics},
        evaluated_after_task=[0, 1],
    )
    write_json_atomic(folder / f"{name}.json", record.to_json())


def test_pairs_by_seed_and_tests_the_difference(tmp_path):
    for seed, (a, b) in zip((1, 2, 3), ((30.0, 31.0), (32.0, 34.5), (29.0, 30.5)), strict=True):
        _run(tmp_path, seed, "fp32", a, 60.0 + seed)
        _run(tmp_path, seed, "bf16", b, 60.0 + seed)
    table = compare_setting(tmp_path, "training.precision").set_index("metric")
    row = table.loc["class_il Ainf"]
    assert row["n"] == 3
    assert row["mean A-B"] == pytest.approx(((31 - 30) + (34.5 - 32) + (30.5 - 29)) / 3)  # A = bf16 (sorted)
    assert 0 < row["p"] < 1
    assert table.loc["class_il task-1 after task 1"]["mean A-B"] == 0


def test_runs_in_subfolders_are_paired_and_other_json_files_ignored(tmp_path):
    (tmp_path / "more").mkdir()
    for seed, (a, b) in zip((1, 2), ((30.0, 31.0), (32.0, 34.5)), strict=True):
        _run(tmp_path, seed, "fp32", a, 60.0)
        _run(tmp_path / "more", seed, "bf16", b, 60.0)
    (tmp_path / "run-3-fp32.error.json").write_text(json.dumps({"error": "out of memory"}))
    (tmp_path / "broken.json").write_text("{")
    row = compare_setting(tmp_path, "training.precision").set_index("metric").loc["class_il Ainf"]
    assert (row["n"], row["mean A-B"]) == (2, pytest.approx(((31 - 30) + (34.5 - 32)) / 2))


def test_no_pairs_is_a_one_line_error(tmp_path, capsys):
    _run(tmp_path, 1, "fp32", 30.0, 60.0)
    assert main(["compare", str(tmp_path), "--by", "training.precision"]) == 2
    assert "differ only in 'training.precision'" in capsys.readouterr().err


def test_no_key_is_a_one_line_error(tmp_path, capsys):
    _run(tmp_path, 1, "fp32", 30.0, 60.0)
    assert main(["compare", str(tmp_path), "--by", " , "]) == 2
    assert "--by ' , '" in capsys.readouterr().err


def test_a_key_left_at_its_omitted_default_is_shown_as_the_default(tmp_path):
    for seed, (a, b) in zip((1, 2), ((30.0, 31.0), (32.0, 34.5)), strict=True):
        _run(tmp_path, seed, "fp32", a, 60.0)
        path = tmp_path / f"run-{seed}-fp32.json"
        result = json.loads(path.read_text())
        del result["config"]["training"]["precision"]  # as a run file omits an option at its default
        (tmp_path / f"run-{seed}-default.json").write_text(json.dumps(result))
        _run(tmp_path, seed, "bf16", b, 60.0)
        path.unlink()
    table = compare_setting(tmp_path, "training.precision")
    assert set(table["training.precision=A"]) | set(table["training.precision=B"]) == {"(default)", "bf16"}


def test_runs_apart_only_in_a_measurement_only_setting_pair_and_rows_name_the_memory_size(tmp_path):
    # Runs from before training.eval_tasks existed omit it; later ones record "seen": the same
    # training (the run ids agree), so they must pair, and each memory size is its own row.
    for seed, (a, b) in zip((1, 2), ((30.0, 31.0), (32.0, 34.5)), strict=True):
        for size in (200, 500):
            _run(tmp_path, seed, "fp32", a + size, 60.0, buffer_size=size)
            _run(tmp_path, seed, "bf16", b + size, 60.0, buffer_size=size, eval_tasks="seen")
    table = compare_setting(tmp_path, "training.precision")
    rows = table[table["metric"] == "class_il Ainf"].set_index("M")
    assert sorted(rows.index) == [200, 500]
    assert rows.loc[500, "A mean±std"] == "532.75±2.47" and rows.loc[500, "n"] == 2


def test_a_measurement_only_setting_can_itself_be_compared(tmp_path):
    for seed in (1, 2):
        _run(tmp_path, seed, "fp32", 30.0 + seed, 60.0, eval_tasks="seen")
        _run(tmp_path, seed, "fp32", 30.0 + seed, 60.0, eval_tasks="all", stem="all")
    row = compare_setting(tmp_path, "training.eval_tasks").set_index("metric").loc["class_il Ainf"]
    assert (row["n"], row["mean A-B"]) == (2, 0.0)
