"""GDumb (Prabhu et al., ECCV 2020) from Avalanche."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from avalanche.training.supervised import Naive

from clbench.config import OMIT_AT_DEFAULT
from clbench.strategies.base import STRATEGIES, Recipe, StrategyContext


@dataclass(frozen=True)
class GDumbArgs:
    """Arguments of GDumb."""

    buffer_epochs: int | None = field(
        default=None,
        metadata={"help": "epochs of each from-scratch training on the buffer; default the run's epochs per task"},
    )
    train_at: Literal["every_task", "last_task"] = field(
        default="every_task",
        metadata={
            "help": "every_task: train on the buffer after every task and evaluate after each (A1, Am, BWT); "
            "last_task: fill the buffer over the stream and train on it once, after the last task, as GDumb "
            "itself learns at inference time (final accuracy only, at 1/n_tasks of the cost)",
            OMIT_AT_DEFAULT: True,
        },
    )


class GDumb(Naive):  # type: ignore[misc]
    """Naive over GDumb's memory; with ``train_at="last_task"`` only the last task trains.

    GDumb's model after a task depends only on its buffer (each training starts from the
    initial weights), so the final model of a run that trains once at the end is a final
    model of one that trains after every task: the buffer still takes every task's data.
    """

    def __init__(self, *, train_at: str, n_tasks: int, **kwargs: Any) -> None:
        """Create the strategy."""
        super().__init__(**kwargs)
        self.train_at = train_at
        self.n_tasks = n_tasks

    def clbench_evaluates_after(self, task: int) -> bool:
        """Whether the runner evaluates after ``task`` (a trained model exists only after those)."""
        return self.train_at == "every_task" or task == self.n_tasks - 1

    def _train_exp(self, experience: Any, eval_streams: Any = None, **kwargs: Any) -> None:
        # The buffer is updated before this (dataset adaptation); only the epochs are skipped.
        if self.clbench_evaluates_after(self.clock.train_exp_counter):
            super()._train_exp(experience, eval_streams, **kwargs)


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

    plugin = GDumbPlugin(mem_size=ctx.buffer_size)
    return ctx.recipe(
        GDumb, plugin, train_epochs=args.buffer_epochs, train_at=args.train_at, n_tasks=ctx.benchmark.n_tasks
    )
