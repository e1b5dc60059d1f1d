"""GSS-Greedy (Aljundi et al., NeurIPS 2019): Avalanche's greedy memory, replayed like ER.

The memory and its scoring are Avalanche 0.6.0's ``GSS_greedyPlugin``: a new example
replaces a stored one with a probability given by the maximal cosine similarity of its
gradient to the gradients of ``mem_strength`` random memory subsets (gradient-diverse
memories survive). The strategy around it is clbench's, because Avalanche's ``GSS_greedy``
wrapper has three defects that stop it from learning on real data:

* its plugin scores examples in ``after_forward`` with ``zero_grad`` + ``backward`` and
  leaves the last scored example's gradient in ``.grad``; the strategy's own backward then
  adds to it, so every update is contaminated (on real Split CIFAR-10 the wrapper
  predicted one class from the first task on: revision 1, the first report of
  ``results/cifar10_baselines_cpu``, in the repository's history);
* it scores, and stores, the whole training batch, replayed memory examples included, so
  memories are re-inserted as duplicates; the GSS paper scores the incoming stream only;
* it replays from all ``mem_size`` memory rows, unfilled (all-zero, label 0) ones included.

Here the memory is updated in :meth:`GSS.prepare_batch` from the current examples only,
before the template zeroes the gradients, and each step replays ``replay_batch_size``
random filled memory rows, as ER does. Memory budget: exactly ``buffer_size`` examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from avalanche.training.plugins import GSS_greedyPlugin

from clbench.errors import ClbenchError
from clbench.influence.functional import flat_gradient
from clbench.training.context import STRATEGIES, Recipe, StrategyContext
from clbench.training.step_template import StepTemplate


@dataclass(frozen=True)
class GSSArgs:
    """Arguments of GSS-Greedy."""

    mem_strength: int = field(
        default=10, metadata={"help": "memory subsets whose gradients score a new example (GSS paper: n = 10)"}
    )


class GSSGreedyMemory(GSS_greedyPlugin):  # type: ignore[misc]
    """Avalanche's greedy GSS memory, used as a buffer rather than as a plugin."""

    def __init__(self, mem_size: int, mem_strength: int, input_size: list[int], device: torch.device) -> None:
        """An empty memory of ``mem_size`` examples on ``device``."""
        super().__init__(mem_size=mem_size, mem_strength=mem_strength, input_size=input_size)
        self.before_training(SimpleNamespace(device=device))  # moves the memory to the device

    def __len__(self) -> int:
        return int(self.ext_mem_list_current_index)

    def get_grad_vector(self, pp: Any, grad_dims: list[int]) -> torch.Tensor:
        """Avalanche's gradient vector, flattened with ``reshape`` so channels-last weights work.

        Avalanche's ``param.grad.data.view(-1)`` fails on a non-contiguous gradient; the
        values (parameter order, zeros where there is no gradient) are the same; ``grad_dims``
        (each parameter's size) is implied by the parameters.
        """
        return flat_gradient(pp(), self.device)

    def update(self, strategy: Any, x: torch.Tensor, y: torch.Tensor) -> None:
        """Score the examples ``(x, y)`` and store or swap them in (Avalanche's greedy rule).

        Leaves per-example gradients in the parameters' ``.grad``: call it before the
        training step zeroes them.
        """
        view = SimpleNamespace(
            model=strategy.model, _criterion=strategy._criterion, device=strategy.device, mb_x=x, mb_y=y
        )
        self.after_forward(view)

    def sample(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` random stored examples (without replacement)."""
        positions = torch.randperm(len(self), device=self.device)[:count]
        return self.ext_mem_list_x[positions], self.ext_mem_list_y[positions]


class GSS(StepTemplate):
    """ER over a GSS-greedy memory (all plugin hooks fire)."""

    def __init__(self, *, memory: GSSGreedyMemory, replay_batch_size: int, **kwargs: Any) -> None:
        """Create the strategy."""
        super().__init__(**kwargs)
        self.memory = memory
        self.replay_batch_size = replay_batch_size

    def prepare_batch(self) -> None:
        """Offer the current examples to the memory, then append a replayed memory batch."""
        x, y = self.mb_x, self.mb_y
        replay = self.memory.sample(self.replay_batch_size) if len(self.memory) > 0 else None
        if getattr(self, "batch_repetition", 0) == 0:  # with training.iterations > 1, offered once
            self.memory.update(self, x, y)
        if replay is not None:
            self.append_to_batch(*replay)
        return None

    def clbench_extras(self) -> dict[str, Any]:
        """The number of stored examples."""
        return {"memory_size": len(self.memory)}


@STRATEGIES.register(
    "gss",
    args=GSSArgs,
    help="Gradient-based Sample Selection (greedy): keep gradient-diverse examples",
    uses_buffer=True,
    revision=2,
)
def build_gss(ctx: StrategyContext, args: GSSArgs) -> Recipe:
    """GSS-greedy with a memory of exactly ``buffer_size`` examples."""
    if ctx.buffer_size < ctx.training.batch_size:
        # Each new batch is scored against random memory subsets of its own size; a
        # smaller memory has none and Avalanche's scoring fails obscurely.
        raise ClbenchError(
            f"gss needs buffer_size >= batch_size = {ctx.training.batch_size}, got buffer_size {ctx.buffer_size}"
        )
    memory = GSSGreedyMemory(ctx.buffer_size, args.mem_strength, list(ctx.benchmark.input_shape), ctx.device)
    return ctx.recipe(GSS, memory=memory, replay_batch_size=ctx.training.replay_batch_size)
