"""ER: experience replay with a reservoir buffer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clbench.strategies.base import STRATEGIES, StrategyContext


@dataclass(frozen=True)
class ERArgs:
    """Arguments of ER (the buffer size and replay batch come from the run)."""

    task_balanced: bool = field(default=False, metadata={"help": "draw the replay mini-batch balanced over past tasks"})


@STRATEGIES.register(
    "er",
    args=ERArgs,
    help="experience replay: reservoir buffer, replay mini-batch beside each batch (Avalanche Replay)",
    uses_buffer=True,
)
def build_er(ctx: StrategyContext, args: ERArgs) -> Any:
    """Avalanche's ``Naive`` with a ``ReplayPlugin`` over a ``ReservoirSamplingBuffer``.

    Each step trains on ``training.batch_size`` current examples concatenated with
    ``training.replay_batch_size`` buffer examples. The reservoir buffer holds exactly
    ``buffer_size`` examples: a uniform sample of everything seen so far.
    """
    from avalanche.training.plugins import ReplayPlugin
    from avalanche.training.storage_policy import ReservoirSamplingBuffer
    from avalanche.training.supervised import Naive

    replay = ReplayPlugin(
        mem_size=ctx.buffer_size,
        batch_size=ctx.training.batch_size,
        batch_size_mem=ctx.training.replay_batch_size,
        task_balanced_dataloader=args.task_balanced,
        storage_policy=ReservoirSamplingBuffer(ctx.buffer_size),
    )
    return ctx.strategy_class(Naive)(**ctx.template_kwargs(replay))
