"""GDumb (Prabhu et al., ECCV 2020) from Avalanche."""

from __future__ import annotations

from typing import Any

from clbench.registry import NoArgs
from clbench.strategies.base import STRATEGIES, StrategyContext


@STRATEGIES.register(
    "gdumb", args=NoArgs, help="GDumb: greedy class-balanced memory, retrain from scratch on it", uses_buffer=True
)
def build_gdumb(ctx: StrategyContext, args: NoArgs) -> Any:
    """Avalanche's ``GDumbPlugin`` on ``Naive``.

    Memory budget: a class-balanced buffer of exactly ``buffer_size`` examples. Before each
    task the model is reset to its initial weights and trained only on the buffer (the
    current task's data included), for the run's epochs per task.
    """
    from avalanche.training.plugins import GDumbPlugin
    from avalanche.training.supervised import Naive

    return ctx.strategy_class(Naive)(**ctx.template_kwargs(GDumbPlugin(mem_size=ctx.buffer_size)))
