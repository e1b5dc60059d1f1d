"""``training.iterations``: several updates on every incoming mini-batch (the online literature's n_iters)."""

import numpy as np
import pytest
import torch
import yaml
from avalanche.core import SupervisedPlugin
from tiny_strategies import tiny_strategy, two_tasks
from torch import nn

from clbench.cli import main
from clbench.config import experiment_from_mapping
from clbench.data_path import DevicePathOptions
from clbench.grid import expand_grid

PATHS = pytest.mark.parametrize("options", [None, DevicePathOptions()], ids=["avalanche", "device"])


class StepRecorder(SupervisedPlugin):  # type: ignore[misc]
    """Keeps each training step's stream labels and inputs."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def after_training_iteration(self, strategy, **kwargs):
        self.steps.append((strategy.mb_x[:4].detach().clone(), strategy.mb_y[:4].clone()))


def _strategy(name, bench, options, iterations, recorder, args=None):
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(bench.input_shape)), bench.n_classes))
    return tiny_strategy(name, bench, model, options=options, iterations=iterations, plugins=[recorder], args=args)


@PATHS
def test_each_incoming_batch_is_trained_on_iterations_times_in_a_row(options):
    bench = two_tasks()
    once, thrice = StepRecorder(), StepRecorder()
    for recorder, iterations in ((once, 1), (thrice, 3)):
        torch.manual_seed(0)
        _strategy("finetune", bench, options, iterations, recorder).train(bench.scenario.train_stream[0])
    assert len(once.steps) == 5 and len(thrice.steps) == 15  # 20 examples, batch 4
    for step in range(15):
        x, y = thrice.steps[step]
        first_x, first_y = thrice.steps[step - step % 3]
        assert torch.equal(y, first_y) and torch.equal(x, first_x)  # the same incoming batch
    assert [y.tolist() for _, y in thrice.steps[::3]] == [y.tolist() for _, y in once.steps]


def test_every_repetition_draws_its_own_memory_batch(monkeypatch):
    from clbench.strategies.er import ERArgs
    from clbench.training.memory import DatasetMemory

    draws = []
    original = DatasetMemory.draw

    def recording_draw(self, strategy, count, augment):
        x, y, t = original(self, strategy, count, augment)
        draws.append(x.flatten(1).sum(1))
        return x, y, t

    monkeypatch.setattr(DatasetMemory, "draw", recording_draw)
    bench = two_tasks()
    strategy = _strategy("er", bench, DevicePathOptions(), 2, StepRecorder(), ERArgs(replay_forward="separate"))
    for experience in bench.scenario.train_stream:
        strategy.train(experience)
    assert len(draws) == 2 * 5  # task 2 only: 5 incoming batches, two steps each
    pairs = [(draws[k], draws[k + 1]) for k in range(0, 10, 2)]
    assert any(not torch.equal(a.sort().values, b.sort().values) for a, b in pairs)


def test_er_stream_reservoir_takes_each_incoming_batch_once():
    from clbench.strategies.er import ERArgs

    bench = two_tasks()
    args = ERArgs(replay_forward="separate", memory_update="every_batch")
    strategy = _strategy("er", bench, DevicePathOptions(), 3, StepRecorder(), args)
    strategy.train(bench.scenario.train_stream[0])
    memory = next(p for p in strategy.plugins if type(p).__name__ == "SeparateForwardReplay").memory
    assert memory.seen == 20 and len(memory) == 8  # 5 batches of 4, each offered once; buffer_size 8


def test_gss_offers_each_incoming_batch_to_its_memory_once(monkeypatch):
    from clbench.strategies.gss import GSSGreedyMemory

    offered = []
    original = GSSGreedyMemory.update
    monkeypatch.setattr(
        GSSGreedyMemory, "update", lambda self, strategy, x, y: (offered.append(len(y)), original(self, strategy, x, y))
    )
    bench = two_tasks()
    strategy = _strategy("gss", bench, DevicePathOptions(), 3, StepRecorder())
    strategy.train(bench.scenario.train_stream[0])
    assert offered == [4] * 5
    assert strategy.batch_repetition == 0  # reset after the epoch


def _run_config(training):
    return {
        "name": "iterations",
        "benchmarks": [{"name": "synthetic", "args": {"n_tasks": 2, "n_classes": 4, "train_per_class": 10}}],
        "strategies": ["finetune"],
        "seeds": [1231],
        "backbone": {"name": "mlp", "args": {"hidden": [8]}},
        "training": {"epochs": 1, "batch_size": 4, **training},
        "device": "cpu",
    }


def test_one_iteration_leaves_run_ids_and_results_as_before():
    (default,) = expand_grid(experiment_from_mapping(_run_config({})))
    (explicit,) = expand_grid(experiment_from_mapping(_run_config({"iterations": 1})))
    (more,) = expand_grid(experiment_from_mapping(_run_config({"iterations": 5})))
    assert "iterations" not in default.to_dict()["training"]
    assert default.run_id == explicit.run_id != more.run_id
    assert more.to_dict()["training"]["iterations"] == 5


def test_zero_iterations_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_run_config({"iterations": 0})))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    message = capsys.readouterr().err.strip()
    assert "training.iterations" in message and "0" in message and "\n" not in message
