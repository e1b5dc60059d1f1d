"""A diverged run fails in one line instead of recording chance-level accuracies; the loss is recorded."""

import json

import pytest
from tiny_configs import TWO_SEED_GRID

from clbench.cli import main
from clbench.loss_trace import CURVE_POINTS, loss_summary

GRID = TWO_SEED_GRID.replace("train_per_class: 8", "train_per_class: 40").replace("seeds: [1, 2]", "seeds: [1]")


def _run(tmp_path, *overrides):
    config = tmp_path / "grid.yaml"
    config.write_text(GRID)
    out = tmp_path / "out"
    flags = [flag for setting in overrides for flag in ("--set", setting)]
    return main(["run", str(config), "--out", str(out), "--no-progress", *flags]), out


def test_a_run_whose_loss_turns_non_finite_fails_without_a_result(tmp_path, capsys):
    status, out = _run(tmp_path, "training.lr=1e30", "training.batch_size=4")
    assert status == 1
    assert not list(out.glob("*.json"))
    error = next(out.glob("*.error.txt")).read_text()
    assert "training diverged: task 0, iteration" in error and "lower training.lr (now 1e+30)" in error


def test_an_infinite_lr_is_a_config_error(tmp_path, capsys):
    status, _ = _run(tmp_path, "training.lr=.inf")
    assert status == 2
    assert "training.lr: must be positive and finite, got inf" in capsys.readouterr().err


def test_a_finished_run_records_each_task_s_training_loss(tmp_path):
    status, out = _run(tmp_path, "training.batch_size=4")
    assert status == 0
    result = json.loads(next(out.glob("*.json")).read_text())
    tasks = result["training_loss"]
    assert [t["task"] for t in tasks] == [0, 1]
    for task in tasks:
        assert len(task["curve"]) == CURVE_POINTS  # 80 examples / batch 4 = 20 iterations a task
        assert task["mean"] == pytest.approx(sum(task["curve"]) / len(task["curve"]))
        assert task["last"] == pytest.approx(task["curve"][-1])


def test_loss_summary_means_equal_intervals():
    values = [float(v) for v in range(1, 101)]
    summary = loss_summary(values)
    assert summary["mean"] == pytest.approx(50.5) and summary["last"] == 100.0
    assert summary["curve"][:2] == [3.0, 8.0]  # means of 1..5 and 6..10
    assert loss_summary([2.0, 4.0])["curve"] == [2.0, 4.0]
