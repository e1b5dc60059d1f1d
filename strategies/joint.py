"""Joint: one model trained on every task's data at once, the upper bound."""

from __future__ import annotations

from dataclasses import dataclass, field

from clbench.training.context import STRATEGIES, Recipe, StrategyContext


@dataclass(frozen=True)
class JointArgs:
    """Arguments of Joint."""

    epochs: int | None = field(
        default=None,
        metadata={"help": "epochs over the union of all tasks; default the run's epochs per task"},
    )


@STRATEGIES.register(
    "joint",
    args=JointArgs,
    help="offline training on all tasks' data at once (Avalanche JointTraining), the upper bound",
    trains_jointly=True,
)
def build_joint(ctx: StrategyContext, args: JointArgs) -> Recipe:
    """Avalanche's ``JointTraining``: the runner trains it once on the whole stream.

    By default it gets the same number of epochs as a sequential run gets per task, over
    the union of all tasks' training data, and is evaluated once, so only A-infinity is
    defined. Reduced protocols whose epochs per task do not bring the network near
    convergence set ``epochs`` so that Joint stays an upper bound.
    """
    from avalanche.training.supervised import JointTraining

    return ctx.recipe(JointTraining, train_epochs=args.epochs)
