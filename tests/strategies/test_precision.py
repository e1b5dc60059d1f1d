"""Every forward pass of a strategy runs at the run's precision, its plugins' extra passes included."""

import numpy as np
import pytest
import torch
from torch import nn

from clbench.config import TrainingConfig
from clbench.data_path import DevicePathOptions
from clbench.datasets.base import build_benchmark
from clbench.datasets.synthetic import SyntheticArgs, make_synthetic
from clbench.strategies import STRATEGIES, StrategyContext, build_strategy


def _train_recording_autocast(name):
    """Train ``name`` on two synthetic tasks with bf16; each training forward's autocast state."""
    data = make_synthetic(SyntheticArgs(n_tasks=2, n_classes=4, train_per_class=10))
    bench = build_benchmark("synthetic", data, 2, "fixed", 0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(bench.input_shape)), bench.n_classes))
    states = []
    model.register_forward_hook(lambda module, inputs, output: states.append(torch.is_autocast_enabled("cpu")))
    training = TrainingConfig(epochs=1, batch_size=4, replay_batch_size=4)
    ctx = StrategyContext.for_training(
        model, training, benchmark=bench, device=torch.device("cpu"), seed=0, buffer_size=8
    )
    ctx.device_path = DevicePathOptions(precision="bf16")
    entry = STRATEGIES.get(name)
    strategy = build_strategy(entry, ctx, entry.args())
    for experience in bench.scenario.train_stream:
        strategy.train(experience)
    return states


@pytest.mark.parametrize("name", ["gem"])
def test_memory_passes_run_at_the_runs_precision(name):
    states = _train_recording_autocast(name)
    assert len(states) > 10  # task 2's memory passes are among them
    assert all(states), f"{states.count(False)} of {len(states)} forwards of {name} ran in fp32 on a bf16 run"
