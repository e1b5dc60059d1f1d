"""A-GEM (Chaudhry et al., ICLR 2019) from Avalanche."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from avalanche.models.utils import avalanche_forward
from avalanche.training.plugins import AGEMPlugin

from clbench.influence.functional import flat_gradient
from clbench.training.context import STRATEGIES, Recipe, StrategyContext


@dataclass(frozen=True)
class AGEMArgs:
    """Arguments of A-GEM."""

    sample_size: int | None = field(
        default=None, metadata={"help": "memory examples per reference gradient; default the replay batch size"}
    )


class AnyLayoutAGEM(AGEMPlugin):  # type: ignore[misc]
    """Avalanche 0.6.0's ``AGEMPlugin`` for any memory format (channels-last included).

    The reference gradient and the projection are Avalanche's, number for number; only the
    flattening of the gradients differs, so that channels-last weights do not crash it.
    With more past tasks than ``sample_size`` Avalanche's per-task draw
    (``sample_size // n_tasks`` a task) is empty and crashes; there each draw takes one
    example of each of ``sample_size`` random past tasks (see :meth:`sample_from_memory`).
    """

    def sample_from_memory(self) -> Any:
        """Avalanche's task-balanced draw, or one example of each of ``sample_size`` random past tasks.

        The second keeps the reference batch at ``sample_size`` examples and balanced over
        tasks in expectation; it is used only where Avalanche's draw would hold no example.
        """
        if len(self.buffers) <= self.sample_size:
            return super().sample_from_memory()
        tasks = torch.randperm(len(self.buffers))[: self.sample_size].tolist()
        items = [self.buffers[t][int(torch.randint(len(self.buffers[t]), ()))] for t in tasks]
        x = torch.stack([item[0] for item in items])
        y = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
        task = torch.as_tensor([int(item[-1]) for item in items], dtype=torch.long)
        return x, y, task

    def before_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        """The reference gradient on a memory sample."""
        if len(self.buffers) == 0:
            return
        strategy.model.train()
        strategy.optimizer.zero_grad()
        batch = self.sample_from_memory()
        x, y, task = batch[0].to(strategy.device), batch[1].to(strategy.device), batch[-1]
        # fp32, as Avalanche's plugin: the reference gradient of every earlier run stays as it was.
        out = avalanche_forward(strategy.model, x, task)
        strategy._criterion(out, y).backward()
        self.reference_gradients = flat_gradient(strategy.model.parameters(), strategy.device)
        strategy.optimizer.zero_grad()

    @torch.no_grad()  # type: ignore[untyped-decorator]
    def after_backward(self, strategy: Any, **kwargs: Any) -> None:
        """Project the gradient when it conflicts with the reference gradient."""
        if len(self.buffers) == 0:
            return
        current = flat_gradient(strategy.model.parameters(), strategy.device)
        dot = torch.dot(current, self.reference_gradients)
        if dot >= 0:
            return
        reference = self.reference_gradients
        projected = current - reference * (dot / torch.dot(reference, reference))
        start = 0
        for p in strategy.model.parameters():
            if p.grad is not None:
                p.grad.copy_(projected[start : start + p.numel()].view_as(p))
            start += p.numel()


@STRATEGIES.register(
    "agem",
    args=AGEMArgs,
    help="Averaged GEM: project onto one reference gradient from memory",
    uses_buffer=True,
)
def build_agem(ctx: StrategyContext, args: AGEMArgs) -> Recipe:
    """Avalanche's A-GEM rule on ``Naive`` (see :class:`AnyLayoutAGEM`).

    Memory budget: ``patterns_per_experience = buffer_size // n_tasks`` examples per task,
    so the memory holds at most ``buffer_size`` examples after the last task. Each step's
    reference gradient uses ``sample_size`` examples drawn from it.

    Same numbers as Avalanche's plugin wherever that one ran; it also runs with
    ``channels_last``, where Avalanche's crashed.
    """
    from avalanche.training.supervised import Naive

    per_task = max(1, ctx.buffer_size // ctx.benchmark.n_tasks)
    sample_size = args.sample_size or ctx.training.replay_batch_size
    return ctx.recipe(Naive, AnyLayoutAGEM(per_task, sample_size))
