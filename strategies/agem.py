"""A-GEM (Chaudhry et al., ICLR 2019) from Avalanche."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clbench.strategies.base import STRATEGIES, StrategyContext


@dataclass(frozen=True)
class AGEMArgs:
    """Arguments of A-GEM."""

    sample_size: int | None = field(
        default=None, metadata={"help": "memory examples per reference gradient; default the replay batch size"}
    )


@STRATEGIES.register(
    "agem", args=AGEMArgs, help="Averaged GEM: project onto one reference gradient from memory", uses_buffer=True
)
def build_agem(ctx: StrategyContext, args: AGEMArgs) -> Any:
    """Avalanche's ``AGEMPlugin`` on ``Naive``.

    Memory budget: ``patterns_per_experience = buffer_size // n_tasks`` examples per task,
    so the memory holds at most ``buffer_size`` examples after the last task. Each step's
    reference gradient uses ``sample_size`` examples drawn from it.
    """
    from avalanche.training.plugins import AGEMPlugin
    from avalanche.training.supervised import Naive

    per_task = max(1, ctx.buffer_size // ctx.benchmark.n_tasks)
    sample_size = args.sample_size or ctx.training.replay_batch_size
    return ctx.strategy_class(Naive)(**ctx.template_kwargs(AGEMPlugin(per_task, sample_size)))
