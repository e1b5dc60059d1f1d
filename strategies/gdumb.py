"""GDumb (Prabhu et al., ECCV 2020) from Avalanche."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.supervised import Naive

from clbench.config import OMIT_AT_DEFAULT
from clbench.errors import ConfigError
from clbench.strategies.base import STRATEGIES, Recipe, StrategyContext


@dataclass(frozen=True)
class GDumbArgs:
    """Arguments of GDumb."""

    buffer_epochs: int | None = field(
        default=None,
        metadata={"help": "epochs of each from-scratch training on the buffer; default the run's epochs per task"},
    )
    clip_grad_norm: float | None = field(
        default=None,
        metadata={
            "help": "clip the gradient's norm to this before each step of the buffer training "
            "(the online survey's GDumb code: 10); None: no clipping",
            OMIT_AT_DEFAULT: True,
        },
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


class ClipGradNorm(SupervisedPlugin):  # type: ignore[misc]
    """Clips the gradient's norm before every update (a gradient edit, so a plugin)."""

    def __init__(self, max_norm: float) -> None:
        """Clip to ``max_norm``."""
        super().__init__()
        self.max_norm = max_norm

    def before_update(self, strategy: Any, **kwargs: Any) -> None:
        """Scale the gradient down to ``max_norm`` if it is longer."""
        torch.nn.utils.clip_grad_norm_(strategy.model.parameters(), self.max_norm)


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

    if args.clip_grad_norm is not None and args.clip_grad_norm <= 0:
        raise ConfigError(
            f"gdumb: clip_grad_norm must be > 0, got {args.clip_grad_norm}; valid choices: a positive number or null"
        )
    plugins = [GDumbPlugin(mem_size=ctx.buffer_size)]
    if args.clip_grad_norm is not None:
        plugins.append(ClipGradNorm(args.clip_grad_norm))
    return ctx.recipe(
        GDumb, *plugins, train_epochs=args.buffer_epochs, train_at=args.train_at, n_tasks=ctx.benchmark.n_tasks
    )
