"""GEM (Lopez-Paz & Ranzato, NeurIPS 2017) from Avalanche, with a clear error if the QP fails."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

from clbench.config import OMIT_AT_DEFAULT
from clbench.data_path import strategy_autocast
from clbench.errors import ClbenchError
from clbench.influence.functional import batchnorm_stats_frozen
from clbench.training.context import STRATEGIES, Recipe, StrategyContext


@dataclass(frozen=True)
class GEMArgs:
    """Arguments of GEM."""

    memory_strength: float = field(
        default=0.5, metadata={"help": "offset gamma added to the projected gradient's constraints (GEM paper: 0.5)"}
    )
    reference_bn_stats: Literal["update", "frozen"] = field(
        default="update",
        metadata={
            "help": "update: the train-mode passes over each past task's memory move BatchNorm's running "
            "statistics (GEM's code and Avalanche's plugin); frozen: they normalise by their batch but leave "
            "the running statistics, which evaluation uses, to the stream batches",
            OMIT_AT_DEFAULT: True,
        },
    )


class GEMQuadProgError(ClbenchError):
    """GEM's quadratic program could not be solved."""


@STRATEGIES.register(
    "gem",
    args=GEMArgs,
    help="Gradient Episodic Memory: project gradients so no past task's loss rises",
    uses_buffer=True,
    revision=2,
)
def build_gem(ctx: StrategyContext, args: GEMArgs) -> Recipe:
    """Avalanche's ``GEMPlugin`` on ``Naive``.

    Memory budget: GEM stores ``patterns_per_experience`` examples of every task;
    clbench sets it to ``buffer_size // n_tasks`` so the memory holds at most
    ``buffer_size`` examples after the last task (the GEM paper's way of splitting a budget).
    The reference gradients use every stored example of each past task, at the run's
    precision (revision 2; revision 1 ran these passes in fp32 on a bf16 run, as Avalanche's
    plugin does not know the run's autocast: they were most of GEM's cost). Those passes run
    in train mode, so by default they move BatchNorm's running statistics toward the
    memory, as in GEM's code; ``reference_bn_stats: frozen`` measures what that is worth.
    """
    from avalanche.training.plugins import GEMPlugin
    from avalanche.training.supervised import Naive

    frozen = args.reference_bn_stats == "frozen"

    class CheckedGEMPlugin(GEMPlugin):  # type: ignore[misc]
        def before_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
            with strategy_autocast(strategy), batchnorm_stats_frozen(strategy.model) if frozen else nullcontext():
                super().before_training_iteration(strategy, **kwargs)

        def solve_quadprog(self, g: Any) -> Any:
            try:
                return super().solve_quadprog(g)
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise GEMQuadProgError(f"GEM's quadratic program failed ({exc}); try another memory_strength") from exc

    per_task = max(1, ctx.buffer_size // ctx.benchmark.n_tasks)
    return ctx.recipe(Naive, CheckedGEMPlugin(per_task, args.memory_strength))
