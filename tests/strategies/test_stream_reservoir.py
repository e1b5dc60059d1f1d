"""The stream reservoir (Vitter's algorithm R) and ER replaying from it during the task that fills it."""

import pytest
import torch
from torch import nn

from clbench.config import TrainingConfig
from clbench.datasets.base import build_benchmark
from clbench.datasets.synthetic import SyntheticArgs, make_synthetic
from clbench.errors import ConfigError
from clbench.strategies.er import ERArgs
from clbench.training import STRATEGIES, StrategyContext, build_strategy
from clbench.training.tensor_buffer import StreamReservoir


def test_every_example_of_the_stream_is_kept_with_the_same_probability():
    # 100 examples offered in batches of 10 to a 10-slot reservoir, 2000 seeded trials:
    # each is kept with probability 0.1 (200 expected; binomial std 13.4, tolerance 5 std).
    torch.manual_seed(0)
    kept = torch.zeros(100)
    for _ in range(2000):
        reservoir = StreamReservoir(10)
        for start in range(0, 100, 10):
            labels = torch.arange(start, start + 10)
            reservoir.offer(labels.float().view(10, 1), labels)
        assert len(reservoir) == 10 and reservoir.seen == 100
        kept[reservoir.y] += 1
    assert (kept - 200).abs().max() < 5 * 13.4
    # the first and the last batch alike: no bias toward either end of the stream
    assert abs(kept[:10].mean() - kept[-10:].mean()) < 15


def test_the_first_examples_fill_the_buffer_in_order():
    reservoir = StreamReservoir(5)
    reservoir.offer(torch.arange(3.0).view(3, 1), torch.arange(3))
    assert len(reservoir) == 3 and reservoir.y[:3].tolist() == [0, 1, 2]
    assert reservoir.x[:3].flatten().tolist() == [0.0, 1.0, 2.0]


def _er(memory_update):
    bench = build_benchmark(
        "synthetic", make_synthetic(SyntheticArgs(n_tasks=2, n_classes=4, train_per_class=10)), 2, "fixed", 0
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, bench.n_classes))
    training = TrainingConfig(epochs=1, batch_size=4, replay_batch_size=4)
    ctx = StrategyContext.for_training(
        model, training, benchmark=bench, device=torch.device("cpu"), seed=0, buffer_size=8
    )
    strategy = build_strategy(STRATEGIES.get("er"), ctx, ERArgs(replay_forward="separate", memory_update=memory_update))
    return bench, strategy


@pytest.mark.parametrize(("memory_update", "draws_in_task_1"), [("after_task", 0), ("every_batch", 4)])
def test_replay_draws_the_current_task_only_with_the_stream_reservoir(monkeypatch, memory_update, draws_in_task_1):
    bench, strategy = _er(memory_update)
    plugin = next(p for p in strategy.plugins if type(p).__name__ == "SeparateForwardReplay")
    drawn = []
    original = plugin.memory.draw
    monkeypatch.setattr(plugin.memory, "draw", lambda *a, **k: (drawn.append(1), original(*a, **k))[1])
    strategy.train(bench.scenario.train_stream[0])
    # every_batch: the memory holds the first batch once it is learned, so batches 2-5 replay task 1
    assert len(drawn) == draws_in_task_1
    if memory_update == "every_batch":
        assert set(plugin.memory.y[: len(plugin.memory)].tolist()) <= {0, 1}  # task 1's classes


def test_every_batch_needs_separate_forwards_and_says_so_at_grid_expansion():
    from clbench.config import experiment_from_mapping
    from clbench.grid import expand_grid

    bad = {"name": "er", "args": {"memory_update": "every_batch"}}
    config = {"name": "t", "benchmarks": [{"name": "synthetic"}], "strategies": ["finetune", bad]}
    with pytest.raises(ConfigError, match="memory_update=every_batch needs replay_forward=separate"):
        expand_grid(experiment_from_mapping(config))  # before any run of the grid trains
