"""ER: experience replay with a reservoir buffer.

Revision 2 (``memory_update: every_batch`` with ``augment: true`` only; every other run keeps
revision 1 and its id): the stream reservoir stores each incoming batch un-augmented and
replay augments every draw afresh, as the dataset memory of ``after_task`` always did.
Revision 1 stored the augmented batch and replayed that one crop a slot for the whole run
(``tests/strategies/test_replay_augmentation.py`` fails on it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.storage_policy import ReservoirSamplingBuffer

from clbench.config import OMIT_AT_DEFAULT
from clbench.data_path import strategy_autocast
from clbench.errors import ConfigError
from clbench.training.context import STRATEGIES, AugmentedRunsRevision, Recipe, StrategyContext
from clbench.training.memory import DatasetMemory, ReplayMemory
from clbench.training.purify import Purifier, PurifyArgs
from clbench.training.tensor_buffer import StreamReservoir


@dataclass(frozen=True)
class ERArgs:
    """Arguments of ER (the buffer size and replay batch come from the run)."""

    task_balanced: bool = field(default=False, metadata={"help": "draw the replay mini-batch balanced over past tasks"})
    replay_forward: Literal["joint", "separate"] = field(
        default="joint",
        metadata={
            "help": "joint: memory examples concatenated to the batch, one forward, one mean loss (Avalanche); "
            "separate: their own forward, loss = stream mean + memory mean (the online replay literature's code)",
            OMIT_AT_DEFAULT: True,
        },
    )
    memory_update: Literal["after_task", "every_batch"] = field(
        default="after_task",
        metadata={
            "help": "after_task: the reservoir takes each task once it is learned, so replay draws earlier tasks "
            "only (MIR's reference code); every_batch: it takes every incoming batch after its step and replay "
            "draws from all it holds, the current task included (the online survey's code); separate forward only",
            OMIT_AT_DEFAULT: True,
        },
    )
    purify: PurifyArgs | None = field(
        default=None,
        metadata={
            "help": "evict the memory's most harmful examples: {score: small_loss | <estimator>, every: 0 | n, "
            "drop: f} (clbench.training.purify); memory_update after_task only",
            OMIT_AT_DEFAULT: True,
        },
    )

    def __post_init__(self) -> None:
        """Raises: ConfigError: options that need another forward or memory (checked with the grid)."""
        if self.purify is not None and self.memory_update != "after_task":
            raise ConfigError(
                "er: purify needs memory_update=after_task (a reservoir of the dataset); valid: after_task"
            )
        if self.memory_update == "every_batch" and self.replay_forward != "separate":
            raise ConfigError("er: memory_update=every_batch needs replay_forward=separate; valid choices: separate")
        if self.replay_forward == "separate" and self.task_balanced:
            raise ConfigError("er: task_balanced=true needs replay_forward=joint; valid choices: joint")


class Reservoir(DatasetMemory, ReservoirSamplingBuffer):  # type: ignore[misc]
    """Avalanche's reservoir buffer as a :class:`ReplayMemory`, without the deprecation warning of ``update``.

    0.6.0's ``ReplayPlugin`` still calls the deprecated ``update``; :class:`DatasetMemory`'s is its body
    without the wrapper, which warned three times a run.
    """

    def evict(self, positions: list[int]) -> None:
        """Remove the examples at ``positions``; the next update refills their slots (the purifier's eviction)."""
        dropped = set(positions)
        keep = [p for p in range(len(self.buffer)) if p not in dropped]
        self.buffer = self.buffer.subset(keep)
        weights: torch.Tensor = self._buffer_weights  # type: ignore[has-type]
        self._buffer_weights = weights[keep]  # still sorted: a subset in order


class SeparateForwardReplay(SupervisedPlugin):  # type: ignore[misc]
    """Replay as the reference code of the online replay literature runs it (MIR's ``er_main.py``).

    The stream mini-batch and ``batch_size_mem`` distinct memory examples go through the
    network in two forward passes, so BatchNorm normalises each by its own statistics, and
    the update follows the sum of the two mean losses (not the mean over their union, which
    halves both parts' step). Replay starts with the second task and draws only earlier
    tasks: the reservoir is updated after each experience, which gives the same memory at
    every task boundary as updating it after every incoming batch, in distribution. With a
    :class:`StreamReservoir` (``memory_update: every_batch``) the memory takes every
    incoming batch and replay draws the current task too, as the online survey's code does.
    """

    def __init__(self, memory: ReplayMemory, batch_size_mem: int) -> None:
        """Replay ``batch_size_mem`` examples a step from ``memory``.

        A :class:`StreamReservoir` is offered every incoming batch after its step (once per
        batch when ``training.iterations`` repeats it); any other memory takes each
        experience after it is learned.
        """
        super().__init__()
        self.memory = memory
        self.batch_size_mem = batch_size_mem

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        """Add the mean loss of a random memory batch, forwarded on its own."""
        if len(self.memory) == 0:
            return
        x, y, _ = self.memory.draw(strategy, self.batch_size_mem, augment=True)
        with strategy_autocast(strategy):
            logits = strategy.model(x)
        strategy.loss += strategy._criterion(logits.float(), y)

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        """Offer the incoming batch to a stream reservoir (the first time the batch is used)."""
        if isinstance(self.memory, StreamReservoir) and getattr(strategy, "batch_repetition", 0) == 0:
            self.memory.offer(strategy.unaugmented_inputs(strategy.mb_x), strategy.mb_y)

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        """Offer the experience just learned to the reservoir."""
        self.memory.update(strategy)


@STRATEGIES.register(
    "er",
    args=ERArgs,
    help="experience replay: reservoir buffer, replay mini-batch beside each batch (Avalanche Replay)",
    uses_buffer=True,
    revision=AugmentedRunsRevision(2, applies=lambda args: args.memory_update == "every_batch"),
)
def build_er(ctx: StrategyContext, args: ERArgs) -> Recipe:
    """Avalanche's ``Naive`` with a ``ReplayPlugin`` over a ``ReservoirSamplingBuffer``.

    Each step trains on ``training.batch_size`` current examples concatenated with
    ``training.replay_batch_size`` buffer examples (``replay_forward: separate``: forwarded
    apart, see :class:`SeparateForwardReplay`). The reservoir buffer holds exactly
    ``buffer_size`` examples: a uniform sample of everything seen so far.
    """
    from avalanche.training.plugins import ReplayPlugin
    from avalanche.training.supervised import Naive

    storage = Reservoir(ctx.buffer_size)
    purifier = [Purifier(storage, args.purify)] if args.purify else []  # after the plugin that updates it
    if args.replay_forward == "separate":
        memory = StreamReservoir(ctx.buffer_size) if args.memory_update == "every_batch" else storage
        return ctx.recipe(Naive, SeparateForwardReplay(memory, ctx.training.replay_batch_size), *purifier)
    replay = ReplayPlugin(
        mem_size=ctx.buffer_size,
        batch_size=ctx.training.batch_size,
        batch_size_mem=ctx.training.replay_batch_size,
        task_balanced_dataloader=args.task_balanced,
        storage_policy=storage,
    )
    return ctx.recipe(Naive, replay, *purifier)
