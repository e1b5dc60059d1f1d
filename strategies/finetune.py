"""Fine-tune: plain sequential training, the lower bound."""

from __future__ import annotations

from typing import Any

from clbench.registry import NoArgs
from clbench.strategies.base import STRATEGIES, StrategyContext


@STRATEGIES.register("finetune", args=NoArgs, help="plain sequential SGD (Avalanche Naive), the lower bound")
def build_finetune(ctx: StrategyContext, args: NoArgs) -> Any:
    """Avalanche's ``Naive`` strategy: no buffer, no regularisation."""
    from avalanche.training.supervised import Naive

    return ctx.strategy_class(Naive)(**ctx.template_kwargs())
