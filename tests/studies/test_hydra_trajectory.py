"""HYDRA's fidelity study at toy size: the schedule, the checkpoints, the scores."""

import json

import pytest
from test_data_debugging import _toy_data

from clbench.cli import main
from clbench.studies.hydra_trajectory import PlateauHalving, TrajectoryConfig


def test_plateau_halving_waits_for_two_epochs_without_progress():
    values = iter([1.0, 0.5, 0.49999, 0.5, 0.6, 0.4, 0.41, 0.42, 0.43])
    schedule = PlateauHalving(TrajectoryConfig(lr=0.01), lambda params: next(values))
    rates = [schedule(epoch, {}) for epoch in range(10)]
    # progress at epochs 1, 2 and 6; epoch 3 falls by less than 0.01 % of the best; the third
    # epoch without progress (5) halves the rate and so does the third after 6 (9).
    assert rates == [0.01] * 5 + [0.005] * 4 + [0.0025]


def test_influence_trajectory_scores_fast_and_influence_functions_at_each_checkpoint(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: toy\ndata_path: {_toy_data(tmp_path)}\nn_train: 200\nn_val: 100\nn_test: 100\ntracked: 50\n"
        "epochs: 4\nevery: 2\nbatch_size: 32\nlr: 0.01\ncg_iterations: 5\n"
    )
    assert main(["influence-trajectory", str(config), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert [row["epoch"] for row in result["rows"]] == [2, 4]
    for row in result["rows"]:
        assert 0 <= row["hydra_fast_sign_error_rate"] <= 1 and 0 <= row["if_sign_error_rate"] <= 1
        # dropping the curvature keeps the ranking of a short run (HYDRA's claim, loosely)
        assert row["hydra_fast_spearman"] > 0.5
        # on the loss's initial plateau the Hessian's negative curvature along the shared
        # gradient flips the influence functions' signs; Gauss-Newton keeps them
        assert row["if_gn_sign_error_rate"] < 0.5 < row["if_sign_error_rate"]
    assert result["rows"][1]["train_loss"] < result["rows"][0]["train_loss"]
    assert "hydra_fast_spearman" in (tmp_path / "out" / "report.md").read_text()


def test_the_recurrences_weight_decay_is_its_own_option_and_the_training_stays(tmp_path):
    data = _toy_data(tmp_path)

    def study(extra):
        config = tmp_path / "c.yaml"
        config.write_text(
            f"name: toy\ndata_path: {data}\nn_train: 200\nn_val: 100\nn_test: 100\ntracked: 50\n"
            f"epochs: 2\nevery: 2\nbatch_size: 32\nlr: 0.05\ncg_iterations: 1\nweight_decay: 0.001\n{extra}"
        )
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        assert main(["influence-trajectory", str(config), "--out", str(out)]) == 0
        return json.loads((out / "result.json").read_text())["rows"][0]

    default, same, hydra_code = (
        study(""),
        study("hypergradient_weight_decay: 0.001"),
        study("hypergradient_weight_decay: 1.0\n"),
    )
    assert same["hydra_aware_std"] == default["hydra_aware_std"]  # null = the training's decay
    assert hydra_code["train_loss"] == default["train_loss"]  # the same run is trained
    # lam = 1 forgets at 1 - lr * lam = 0.95 a step: both hypergradients shrink
    assert hydra_code["hydra_aware_std"] < 0.9 * default["hydra_aware_std"]
    assert hydra_code["hydra_fast_std"] < 0.9 * default["hydra_fast_std"]


@pytest.mark.parametrize(
    ("key", "value"), [("every", 3), ("tracked", 55), ("tracked", 2010), ("hypergradient_weight_decay", -1.0)]
)
def test_bad_trajectory_configs_are_one_line(tmp_path, capsys, key, value):
    config = tmp_path / "c.yaml"
    config.write_text(f"epochs: 10\n{key}: {value}\n")
    assert main(["influence-trajectory", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{key}={value}" in err and len(err.splitlines()) == 1


def test_shipped_trajectory_config_validates():
    from pathlib import Path

    from clbench.studies.hydra_trajectory import load_trajectory_config

    path = Path(__file__).parents[2] / "experiments" / "influence" / "trajectory" / "fmnist_lenet5.yaml"
    assert load_trajectory_config(str(path), []).tracked == 500
