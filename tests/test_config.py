import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from clbench.config import (
    ExperimentConfig,
    TrainingConfig,
    apply_overrides,
    experiment_from_mapping,
    from_mapping,
    load_experiment,
)
from clbench.errors import ConfigError

BASE = {
    "name": "t",
    "benchmarks": [{"name": "synthetic", "args": {"n_tasks": 2}}],
    "strategies": ["finetune", {"name": "er"}],
    "seeds": [1, 2],
}


def test_short_forms_and_defaults():
    config = experiment_from_mapping(BASE)
    assert isinstance(config, ExperimentConfig)
    assert [s.name for s in config.strategies] == ["finetune", "er"]
    assert config.seeds == (1, 2)
    assert config.training == TrainingConfig()
    assert config.training.lr == 0.1 and config.training.batch_size == 32 and config.training.epochs == 50


def test_default_seeds_are_the_papers():
    raw = {k: v for k, v in BASE.items() if k != "seeds"}
    assert experiment_from_mapping(raw).seeds == (1231, 1232, 1233, 1234, 1235)


def test_unknown_key_names_key_and_valid_keys():
    with pytest.raises(ConfigError) as info:
        experiment_from_mapping({**BASE, "training": {"epoch": 3}})
    message = str(info.value)
    assert "'epoch'" in message and "valid keys:" in message and "epochs" in message
    assert "\n" not in message


def test_wrong_type_is_reported_with_its_path():
    with pytest.raises(ConfigError, match=r"training\.lr: expected a number, got 'fast'"):
        experiment_from_mapping({**BASE, "training": {"lr": "fast"}})
    with pytest.raises(ConfigError, match=r"seeds\[1\]: expected an integer"):
        experiment_from_mapping({**BASE, "seeds": [1, 2.5]})


def test_int_is_accepted_for_float_but_bool_is_not_int():
    assert from_mapping(TrainingConfig, {"lr": 1}, "training").lr == 1.0
    with pytest.raises(ConfigError):
        from_mapping(TrainingConfig, {"epochs": True}, "training")


def test_missing_required_and_empty_lists():
    with pytest.raises(ConfigError, match="missing required key 'benchmarks'"):
        experiment_from_mapping({"name": "t", "strategies": ["er"]})
    with pytest.raises(ConfigError, match="at least one strategy"):
        experiment_from_mapping({**BASE, "strategies": []})


def test_overrides_reach_nested_keys_and_list_items():
    raw = apply_overrides(
        BASE, ["training.epochs=2", "seeds=[7]", "benchmarks.0.args.n_tasks=3", "strategies.1.args.task_balanced=true"]
    )
    config = experiment_from_mapping(raw)
    assert config.training.epochs == 2
    assert config.seeds == (7,)
    assert config.benchmarks[0].args == {"n_tasks": 3}
    assert config.strategies[1].args == {"task_balanced": True}
    assert BASE["seeds"] == [1, 2], "overrides must not mutate their input"


def test_exponent_floats_are_numbers_in_files_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "name: t\nbenchmarks: [synthetic]\nstrategies: [finetune]\ntraining: {lr: 1e-2, weight_decay: 5E-4}\n"
    )
    config = load_experiment(path, ["training.momentum=9e-1"])
    assert (config.training.lr, config.training.weight_decay, config.training.momentum) == (0.01, 0.0005, 0.9)
    assert apply_overrides(BASE, ["name=1e-6x"])["name"] == "1e-6x"  # not a number: stays a string


@pytest.mark.parametrize("override", ["training.epochs", "=3", "benchmarks.5.args.x=1"])
def test_bad_overrides_fail_with_one_line(override):
    with pytest.raises(ConfigError) as info:
        apply_overrides(BASE, [override])
    assert "\n" not in str(info.value)


def test_load_experiment_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_experiment(listy)


def test_shipped_experiment_files_validate():
    from pathlib import Path

    from clbench.grid import expand_grid

    root = Path(__file__).parent.parent / "experiments"
    experiments = sorted(p for folder in ("", "online", "offline", "cpu") for p in (root / folder).glob("*.yaml"))
    assert len(experiments) > 20
    for path in experiments:
        runs = expand_grid(load_experiment(path))
        assert runs, path


def test_strategy_revisions_enter_the_run_id_and_revision_one_ids_never_change():
    from clbench.grid import expand_grid

    runs = {run.strategy.name: run for run in expand_grid(experiment_from_mapping(BASE | {"seeds": [1]}))}
    er = runs["er"]
    assert er.strategy_revision == 1
    revised = dataclasses.replace(er, strategy_revision=2)
    assert revised.run_id != er.run_id
    assert er.to_dict()["strategy_revision"] == 1  # recorded in results files
    # Ids written before revisions existed: the hash of the config without the field.
    legacy = er.to_dict()
    for key in ("experiment", "device", "strategy_revision"):
        legacy.pop(key)
    digest = hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()[:10]
    assert er.run_id.endswith(digest)


@pytest.mark.parametrize(("setting", "value"), [("eval_tasks", "seen"), ("eval_chunk", 100)])
def test_measurement_only_settings_keep_the_run_id_and_the_report_protocol(setting, value):
    from clbench.grid import expand_grid
    from clbench.report.collect import protocol_id, protocol_of

    (run,) = expand_grid(experiment_from_mapping(BASE | {"seeds": [1], "strategies": ["er"]}))
    seen = dataclasses.replace(run, training=dataclasses.replace(run.training, **{setting: value}))
    assert seen.run_id == run.run_id
    assert seen.to_dict()["training"][setting] == value  # the result file says how it was evaluated
    assert setting not in run.to_dict()["training"]  # files written before the setting keep their ids
    assert protocol_id(protocol_of(seen.to_dict())) == protocol_id(protocol_of(run.to_dict()))
    longer = dataclasses.replace(run, training=dataclasses.replace(run.training, epochs=2))
    assert protocol_id(protocol_of(longer.to_dict())) != protocol_id(protocol_of(run.to_dict()))


def test_committed_baseline_results_are_runs_of_the_current_implementations():
    """A fix that raised a strategy's revision needs its committed result re-run."""
    from clbench.grid import expand_grid

    root = Path(__file__).resolve().parents[1]
    experiment = load_experiment(root / "experiments" / "cpu" / "cifar10_baselines.yaml")
    committed = {p.stem for p in (root / "results" / "cifar10_baselines_cpu" / "runs").glob("*.json")}
    missing = [run.run_id for run in expand_grid(experiment) if run.run_id not in committed]
    assert not missing


def test_fast_settings_follow_the_data_path():
    from clbench.config import TrainingConfig

    fast = TrainingConfig()
    assert (fast.data_path, fast.precision, fast.channels_last) == ("device", "bf16", True)
    plain = TrainingConfig(data_path="avalanche")
    assert (plain.precision, plain.channels_last) == ("fp32", False)  # what the avalanche path always ran
    assert TrainingConfig(precision="fp32", channels_last=False).precision == "fp32"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.batch_size=0", "training.batch_size: must be at least 1, got 0"),
        ("training.replay_batch_size=0", "training.replay_batch_size: must be at least 1, got 0"),
        ("training.eval_batch_size=-3", "training.eval_batch_size: must be at least 1, got -3"),
        ("training.lr=-0.1", "training.lr: must be positive and finite, got -0.1"),
        ("training.momentum=1.5", "training.momentum: must be in [0, 1), got 1.5"),
        ("training.epochs=0", "training.epochs: must be at least 1, got 0"),
        (
            "training.eval_tasks=seen",
            "training.eval_tasks: 'seen' needs data_path 'device'; valid with 'avalanche': 'all'",
        ),
        ("training.eval_tasks=some", "'some'"),
        ("training.eval_chunk=0", "training.eval_chunk: must be at least 1, got 0"),
    ],
)
def test_training_values_are_range_checked_before_any_run(tmp_path, capsys, override, message):
    from clbench.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("name: c\nbenchmarks: [synthetic]\nstrategies: [er]\ndevice: cpu\n")
    path = ["--set", "training.data_path=avalanche"] if override.startswith("training.eval_tasks") else []
    assert main(["run", str(config), "--dry-run", *path, "--set", override, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1


def test_runs_carry_typed_arguments_validated_once_and_plain_only_at_the_edges():
    from clbench.backbones import BACKBONES
    from clbench.datasets.base import BENCHMARKS
    from clbench.grid import expand_grid, run_from_dict
    from clbench.training.context import STRATEGIES

    raw = BASE | {"strategies": [{"name": "er", "args": {"replay_forward": "separate"}}, "er"], "seeds": [1]}
    separate, joint = expand_grid(experiment_from_mapping(raw))
    assert isinstance(separate.strategy.args, STRATEGIES.get("er").args)
    assert isinstance(separate.benchmark.args, BENCHMARKS.get("synthetic").args)
    assert isinstance(separate.backbone.args, BACKBONES.get(separate.backbone.name).args)
    assert separate.strategy.args.replay_forward == "separate"
    # The plain form leaves an argument added after runs were published out while it has its
    # default, so the ids of those runs stand; a worker's hand-off rebuilds the same run.
    assert "replay_forward" not in joint.to_dict()["strategy"]["args"]
    assert separate.to_dict()["strategy"]["args"]["replay_forward"] == "separate"
    for run in (separate, joint):
        rebuilt = run_from_dict(json.loads(json.dumps(run.to_dict())))
        assert rebuilt == run
        assert rebuilt.run_id == run.run_id


def test_a_worker_hand_off_with_a_bad_argument_names_it():
    from clbench.grid import expand_grid, run_from_dict

    (run,) = expand_grid(experiment_from_mapping(BASE | {"strategies": ["er"], "seeds": [1]}))
    raw = run.to_dict()
    raw["strategy"]["args"]["alpha"] = 1
    with pytest.raises(ConfigError, match="'alpha'"):
        run_from_dict(raw)


def test_a_device_torch_cannot_parse_fails_at_grid_expansion():
    from clbench.grid import expand_grid

    with pytest.raises(ConfigError, match="device: invalid device 'gpu0'; valid choices: auto, cpu, cuda, cuda:N"):
        expand_grid(experiment_from_mapping(BASE | {"device": "gpu0"}))


def test_a_config_that_is_a_folder_or_not_utf8_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="is a folder; valid choices: a YAML file"):
        load_experiment(tmp_path)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 9\); save it as UTF-8"):
        load_experiment(latin)


@pytest.mark.parametrize("fast", [{"precision": "bf16"}, {"channels_last": True}])
def test_device_path_settings_on_the_avalanche_path_fail_where_training_is_resolved(fast):
    with pytest.raises(ConfigError, match=r"need training\.data_path=device"):
        TrainingConfig(data_path="avalanche", **fast)
