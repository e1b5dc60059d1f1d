"""Joint: one model trained on every task's data at once, the upper bound."""

from __future__ import annotations

from typing import Any

from clbench.registry import NoArgs
from clbench.strategies.base import STRATEGIES, StrategyContext


@STRATEGIES.register(
    "joint",
    args=NoArgs,
    help="offline training on all tasks' data at once (Avalanche JointTraining), the upper bound",
    trains_jointly=True,
)
def build_joint(ctx: StrategyContext, args: NoArgs) -> Any:
    """Avalanche's ``JointTraining``: the runner trains it once on the whole stream.

    It gets the same number of epochs as a sequential run gets per task, over the union
    of all tasks' training data, and is evaluated once, so only A-infinity is defined.
    """
    from avalanche.training.supervised import JointTraining

    return ctx.strategy_class(JointTraining)(**ctx.template_kwargs())
