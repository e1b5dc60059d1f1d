"""MetaSP and MetaSP+RehSel end to end through the CLI, and their training schedule."""

import numpy as np
import pytest
import torch
import yaml

from clbench.cli import main
from clbench.results import load_result

TRAIN_PER_CLASS = 24
BATCH = 8
BUFFER = 12


@pytest.fixture(scope="module")
def metasp_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metasp")
    config = {
        "name": "metasp",
        "benchmarks": [
            {
                "name": "synthetic",
                "args": {"n_tasks": 3, "n_classes": 6, "train_per_class": TRAIN_PER_CLASS, "test_per_class": 8},
            }
        ],
        "strategies": [
            {"name": "metasp", "args": {"meta_epochs": 1}},
            {"name": "metasp", "args": {"meta_epochs": 1, "influence": "neumann", "influence_args": {"terms": 3}}},
            {"name": "metasp_rehsel", "args": {"meta_epochs": 1, "warmup": "replay"}},
            {
                "name": "metasp_rehsel",
                "args": {
                    "meta_epochs": 2,
                    "selection": "cluster",
                    "features": "penultimate",
                    "new_validation": "heldout",
                    "pseudo_steps": 2,
                },
            },
        ],
        "buffer_sizes": [BUFFER],
        "seeds": [1231],
        "backbone": {"name": "mlp", "args": {"hidden": [16]}},
        "training": {"epochs": 2, "batch_size": BATCH, "replay_batch_size": 4},
        "device": "cpu",
    }
    path = folder / "metasp.yaml"
    path.write_text(yaml.safe_dump(config))
    out = folder / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    return [load_result(p) for p in sorted(out.glob("*.json"))]


def test_both_strategies_produce_full_results(metasp_runs):
    assert len(metasp_runs) == 4
    assert {r["config"]["strategy"]["name"] for r in metasp_runs} == {"metasp", "metasp_rehsel"}
    for result in metasp_runs:
        for setting in ("class_il", "task_il"):
            matrix = np.asarray(result["accuracy"][setting])
            assert matrix.shape == (3, 3)
            assert result["metrics"][setting]["BWT"] is not None


def test_other_influence_estimators_drive_metasp(metasp_runs):
    by_estimator = {
        r["config"]["strategy"]["args"]["influence"]: r
        for r in metasp_runs
        if r["config"]["strategy"]["name"] == "metasp"
    }
    assert set(by_estimator) == {"meta", "neumann"}
    meta, neumann = by_estimator["meta"], by_estimator["neumann"]
    assert neumann["extras"]["influence"][1]["meta_steps"] == meta["extras"]["influence"][1]["meta_steps"] > 0
    assert neumann["extras"]["influence"][1]["SP"] != meta["extras"]["influence"][1]["SP"]


def test_unknown_estimator_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "bad",
                "benchmarks": [{"name": "synthetic", "args": {"n_tasks": 2, "n_classes": 4, "train_per_class": 4}}],
                "strategies": [{"name": "metasp", "args": {"influence": "oracle"}}],
                "buffer_sizes": [4],
                "seeds": [1],
                "training": {"epochs": 1},
                "device": "cpu",
            }
        )
    )
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "unknown influence estimator 'oracle'; valid choices: cg, exact" in capsys.readouterr().err


def test_meta_steps_follow_the_schedule(metasp_runs):
    batches_per_epoch = -(-2 * TRAIN_PER_CLASS // BATCH)
    for result in metasp_runs:
        args = result["config"]["strategy"]["args"]
        log = result["extras"]["influence"]
        assert [entry["task"] for entry in log] == [0, 1, 2]
        assert log[0]["meta_steps"] == 0  # task 1 is plain training
        if args["new_validation"] == "heldout":
            continue  # fewer training batches; checked below through the counts
        for entry in log[1:]:
            assert entry["meta_steps"] == batches_per_epoch * args["meta_epochs"]


def test_influence_statistics_are_recorded_for_every_example(metasp_runs):
    for result in metasp_runs:
        for entry in result["extras"]["influence"][1:]:
            assert 0.0 < entry["gamma_mean"] < 1.0
            for objective in ("S", "P", "SP"):
                stats = entry[objective]
                total = stats["positive"] + stats["negative"]
                assert total > 0
                assert sum(stats["histogram"]["counts"]) >= total
                assert len(stats["histogram"]["edges"]) == 6


def test_final_buffer_is_full_and_class_balanced(metasp_runs):
    for result in metasp_runs:
        counts = list(result["extras"]["buffer_class_counts"].values())
        assert sum(counts) == BUFFER
        assert len(counts) == 6 and max(counts) - min(counts) <= 1


def test_metasp_rehsel_is_deterministic(tmp_path):
    config = {
        "name": "again",
        "benchmarks": [{"name": "synthetic", "args": {"n_tasks": 2, "n_classes": 4, "train_per_class": 16}}],
        "strategies": [{"name": "metasp_rehsel", "args": {"meta_epochs": 1}}],
        "buffer_sizes": [8],
        "seeds": [7],
        "backbone": {"name": "mlp", "args": {"hidden": [8]}},
        "training": {"epochs": 2, "batch_size": 8, "replay_batch_size": 4},
        "device": "cpu",
    }
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(config))
    results = []
    for out in ("a", "b"):
        assert main(["run", str(path), "--out", str(tmp_path / out), "--no-progress"]) == 0
        (file,) = (tmp_path / out).glob("*.json")
        results.append(load_result(file))
    assert results[0]["accuracy"] == results[1]["accuracy"]
    assert results[0]["extras"] == results[1]["extras"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"pseudo_steps": 2, "influence_args": {"steps": 3}}, "influence_args.steps=3 disagrees with pseudo_steps=2"),
        ({"pseudo_steps": 2, "influence": "neumann"}, "pseudo_steps=2 applies to influence=meta only"),
    ],
)
def test_pseudo_steps_has_one_source_of_truth(args, message):
    from clbench.config import from_mapping
    from clbench.errors import ConfigError
    from clbench.strategies.metasp import MetaSPArgs

    with pytest.raises(ConfigError, match=message):
        from_mapping(MetaSPArgs, args, "strategy metasp")


def test_pseudo_steps_reach_the_estimator_when_influence_args_are_set(monkeypatch):
    import clbench.influence.estimators as estimators
    from clbench.strategies.metasp import MetaSPArgs, influence_function

    seen = {}
    real = estimators.meta_influence

    def spy(model, batch, measurements, lr, steps):
        seen["steps"] = steps
        return real(model, batch, measurements, lr=lr, steps=steps)

    monkeypatch.setattr(estimators, "meta_influence", spy)
    compute = influence_function(MetaSPArgs(pseudo_steps=3, influence_args={"lr": 0.05}))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    batch = (torch.randn(5, 4), torch.randint(0, 3, (5,)))
    compute(model, batch, [batch, batch], 0.1)
    assert seen["steps"] == 3  # the old adapter dropped it and ran one step


def test_metasp_runs_with_the_last_layer_estimator_on_the_fast_path(tmp_path):
    config = {
        "name": "lastlayer",
        "benchmarks": [
            {"name": "synthetic", "args": {"n_tasks": 2, "n_classes": 4, "train_per_class": 16, "test_per_class": 4}}
        ],
        "strategies": [{"name": "metasp", "args": {"meta_epochs": 1, "influence": "meta_lastlayer"}}],
        "buffer_sizes": [8],
        "seeds": [1231],
        "backbone": {"name": "mlp", "args": {"hidden": [16]}},
        "training": {"epochs": 1, "batch_size": 8, "replay_batch_size": 4, "data_path": "device", "precision": "bf16"},
        "device": "cpu",
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    (result,) = [load_result(p) for p in (tmp_path / "out").glob("*.json")]
    assert result["extras"]["influence"][1]["meta_steps"] > 0


def test_separate_forward_needs_the_exact_fused_step():
    from clbench.config import from_mapping
    from clbench.errors import ConfigError
    from clbench.strategies.metasp import MetaSPArgs

    with pytest.raises(ConfigError, match="replay_forward=separate needs the exact fused step"):
        from_mapping(MetaSPArgs, {"replay_forward": "separate", "influence": "meta_lastlayer"}, "strategy metasp")


@pytest.mark.parametrize("warmup", ["replay", "meta"])
def test_separate_forward_passes_each_part_alone_and_weighs_each_part_to_one(warmup):
    from tiny_strategies import tiny_strategy, two_tasks

    from clbench.backbones import MLP
    from clbench.strategies.metasp import MetaSPArgs

    bench = two_tasks()
    torch.manual_seed(0)
    model = MLP(int(np.prod(bench.input_shape)), bench.n_classes, hidden=(16,))
    sizes = []
    model.register_forward_hook(
        lambda module, inputs, output: sizes.append(inputs[0].shape[0]) if module.training else None
    )
    # one epoch a task: meta_epochs 1 makes every step of task 2 a MetaSP step, 0 a replay step
    args = MetaSPArgs(meta_epochs=1 if warmup == "meta" else 0, warmup="replay", replay_forward="separate")
    strategy = tiny_strategy("metasp", bench, model, args=args)
    weights = []
    original = strategy.loss_weights
    strategy.loss_weights = lambda w: weights.append(original(w)) or weights[-1]
    strategy.train(bench.scenario.train_stream[0])
    sizes.clear()
    strategy.train(bench.scenario.train_stream[1])
    assert sizes[:2] == [4, 4]  # B_new (batch 4) and B_old (replay 4) through the network apart
    step_weights = [w for w in weights if w is not None]
    assert step_weights
    for w in step_weights:
        torch.testing.assert_close(w[:4].sum(), torch.tensor(1.0))
        torch.testing.assert_close(w[4:].sum(), torch.tensor(1.0))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"influence": "metta"}, "metta"),
        ({"influence": "lissa", "influence_args": {"dampin": 1}}, "dampin"),
        ({"pseudo_steps": 0}, "pseudo_steps must be at least 1, got 0"),
    ],
)
def test_metasp_s_estimator_and_its_arguments_fail_at_grid_expansion(args, message):
    from clbench.config import experiment_from_mapping
    from clbench.errors import ClbenchError
    from clbench.grid import expand_grid

    config = {"name": "t", "benchmarks": [{"name": "synthetic"}], "strategies": [{"name": "metasp", "args": args}]}
    with pytest.raises(ClbenchError, match=message):
        expand_grid(experiment_from_mapping(config))


def test_metasp_resolves_its_estimator_s_typed_arguments_once():
    from clbench.influence.estimators import CGArgs, MetaArgs, MetaLastLayerArgs
    from clbench.strategies.metasp import MetaSPArgs

    assert MetaSPArgs(influence="cg", influence_args={"damping": 0.5}).estimator_args == CGArgs(damping=0.5)
    assert MetaSPArgs(pseudo_steps=3).estimator_args == MetaArgs(steps=3)
    last = MetaSPArgs(influence="meta_lastlayer", influence_args={"lr": 0.2})
    assert last.estimator_args == MetaLastLayerArgs(lr=0.2)
    assert (last.fused_step, last.influence_lr) == ("lastlayer", 0.2)
    assert MetaSPArgs().fused_step == "graph"
    assert MetaSPArgs(pseudo_steps=2).fused_step is None
