"""GDumb (Prabhu et al., ECCV 2020) from Avalanche."""

from __future__ import annotations

from dataclasses import dataclass, field

from clbench.strategies.base import STRATEGIES, Recipe, StrategyContext


@dataclass(frozen=True)
class GDumbArgs:
    """Arguments of GDumb."""

    buffer_epochs: int | None = field(
        default=None,
        metadata={"help": "epochs of each from-scratch training on the buffer; default the run's epochs per task"},
    )


@STRATEGIES.register(
    "gdumb", args=GDumbArgs, help="GDumb: greedy class-balanced memory, retrain from scratch on it", uses_buffer=True
)
def build_gdumb(ctx: StrategyContext, args: GDumbArgs) -> Recipe:
    """Avalanche's ``GDumbPlugin`` on ``Naive``.

    Memory budget: a class-balanced buffer of exactly ``buffer_size`` examples. Before each
    task the model is reset to its initial weights and trained only on the buffer (the
    current task's data included). GDumb's own protocol trains the small buffer for many
    more epochs than a sequential learner spends on a task, hence ``buffer_epochs``.
    """
    from avalanche.training.plugins import GDumbPlugin
    from avalanche.training.supervised import Naive

    plugin = GDumbPlugin(mem_size=ctx.buffer_size)
    return ctx.recipe(Naive, plugin, train_epochs=args.buffer_epochs)
