"""Fine-tune: plain sequential training, the lower bound."""

from __future__ import annotations

from clbench.registry import NoArgs
from clbench.training.context import STRATEGIES, Recipe, StrategyContext


@STRATEGIES.register("finetune", args=NoArgs, help="plain sequential SGD (Avalanche Naive), the lower bound")
def build_finetune(ctx: StrategyContext, args: NoArgs) -> Recipe:
    """Avalanche's ``Naive`` strategy: no buffer, no regularisation."""
    from avalanche.training.supervised import Naive

    return ctx.recipe(Naive)
