"""Strategies on two tiny synthetic tasks, for tests that look inside the training steps."""

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from clbench.config import TrainingConfig
from clbench.data_path import DevicePathOptions
from clbench.datasets.base import Benchmark, build_benchmark
from clbench.datasets.synthetic import SyntheticArgs, make_synthetic
from clbench.training import STRATEGIES, StrategyContext, build_strategy


def two_tasks() -> Benchmark:
    """Two tasks of two classes, ten training examples a class."""
    data = make_synthetic(SyntheticArgs(n_tasks=2, n_classes=4, train_per_class=10))
    return build_benchmark("synthetic", data, 2, "fixed", 0)


def tiny_strategy(
    name: str,
    bench: Benchmark,
    model: nn.Module,
    *,
    options: DevicePathOptions | None = None,
    iterations: int = 1,
    plugins: Sequence[Any] = (),
    args: Any = None,
) -> Any:
    """``name`` (registered arguments unless ``args``) on ``model``: batch 4 + replay 4, memory 8, one epoch."""
    training = TrainingConfig(epochs=1, batch_size=4, replay_batch_size=4, iterations=iterations)
    ctx = StrategyContext.for_training(
        model, training, benchmark=bench, device=torch.device("cpu"), seed=0, buffer_size=8, plugins=list(plugins)
    )
    ctx.device_path = options
    entry = STRATEGIES.get(name)
    return build_strategy(entry, ctx, entry.args() if args is None else args)
