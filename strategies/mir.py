"""MIR (Aljundi et al., NeurIPS 2019) from Avalanche."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clbench.strategies.base import STRATEGIES, StrategyContext


@dataclass(frozen=True)
class MIRArgs:
    """Arguments of MIR."""

    subsample: int = field(
        default=50, metadata={"help": "memory candidates scored per step; the replay batch takes the most interfered"}
    )


@STRATEGIES.register(
    "mir",
    args=MIRArgs,
    help="Maximally Interfered Retrieval: replay the memory examples a virtual step hurts most",
    uses_buffer=True,
)
def build_mir(ctx: StrategyContext, args: MIRArgs) -> Any:
    """Avalanche's ``MIRPlugin`` on ``Naive``.

    Memory budget: the plugin's reservoir buffer of exactly ``buffer_size`` examples. Each
    step scores ``subsample`` random memory examples by their loss increase under a virtual
    SGD step on the current batch and replays the ``replay_batch_size`` largest.
    """
    from avalanche.training.plugins import MIRPlugin
    from avalanche.training.supervised import Naive

    plugin = MIRPlugin(
        batch_size_mem=ctx.training.replay_batch_size, mem_size=ctx.buffer_size, subsample=args.subsample
    )
    return ctx.strategy_class(Naive)(**ctx.template_kwargs(plugin))
