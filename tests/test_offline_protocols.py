"""The offline protocol configs at tiny size, and a strategy's own training settings."""

import json
from pathlib import Path

import pytest

from clbench.cli import main
from clbench.config import experiment_from_mapping, load_experiment
from clbench.errors import ConfigError
from clbench.grid import expand_grid, run_from_dict
from clbench.report.collect import protocol_of

EXPERIMENTS = Path(__file__).parent.parent / "experiments"
TINY = [
    "benchmarks=[{name: synthetic, args: {n_tasks: 2, n_classes: 4, train_per_class: 8, test_per_class: 4}}]",
    "backbone={name: mlp, args: {hidden: [8]}}",
    "seeds=[1231]",
    "training.epochs=1",
    "training.batch_size=8",
    "training.replay_batch_size=8",
    "device=cpu",
]


@pytest.mark.parametrize("name", ["cifar10_der", "cifar10_metasp"])
def test_an_offline_protocol_runs_at_tiny_size_with_each_method_s_own_lr(tmp_path, name):
    config = EXPERIMENTS / "offline" / f"{name}.yaml"
    out = tmp_path / "out"
    overrides = [flag for setting in TINY for flag in ("--set", setting)]
    assert main(["run", str(config), "--out", str(out), "--no-progress", *overrides]) == 0
    results = [json.loads(p.read_text()) for p in out.glob("*.json")]
    expected = len(expand_grid(load_experiment(config, TINY)))
    assert len(results) == expected
    lrs = {r["config"]["strategy"]["name"]: r["config"]["strategy"].get("training", {}).get("lr") for r in results}
    if name == "cifar10_der":
        assert lrs["der"] == 0.03 and lrs["er"] == 0.1
    protocols = {json.dumps(protocol_of(r["config"]), sort_keys=True) for r in results}
    assert len(protocols) == 1  # the methods' own lrs are part of the strategy, not of the protocol


BASE = {
    "name": "t",
    "benchmarks": [{"name": "synthetic"}],
    "strategies": ["er", {"name": "er", "args": {"task_balanced": True}, "training": {"lr": 0.03}}],
    "seeds": [1],
}


def test_a_strategy_s_own_training_settings_enter_its_run_id_and_train_it():
    plain, own = expand_grid(experiment_from_mapping(BASE))
    assert own.trained_with.lr == 0.03 and plain.trained_with.lr == plain.training.lr == own.training.lr
    assert "training" not in plain.to_dict()["strategy"]  # ids of runs without any are unchanged
    assert own.to_dict()["strategy"]["training"] == {"lr": 0.03}
    assert run_from_dict(own.to_dict()) == own  # a worker's hand-off keeps them


def test_a_bad_strategy_training_setting_fails_before_any_run():
    bad = BASE | {"strategies": [{"name": "er", "training": {"lr": -1}}]}
    with pytest.raises(ConfigError, match="lr"):
        expand_grid(experiment_from_mapping(bad))
    unknown = BASE | {"strategies": [{"name": "er", "training": {"learning_rate": 0.1}}]}
    with pytest.raises(ConfigError, match="learning_rate"):
        expand_grid(experiment_from_mapping(unknown))
