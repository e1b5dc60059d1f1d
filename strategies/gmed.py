"""GMED: gradient-based memory editing (Jin et al., NeurIPS 2021), on top of ER.

Each step, before replaying a memory mini-batch, GMED

1. takes a *virtual* SGD step on the current batch alone: theta' = theta - lr * grad l(B_new);
2. measures each memory example's loss increase d(x_m) = l(x_m; theta') - l(x_m; theta);
3. moves each memory input a small step up the gradient of
   d(x_m) - reg * l(x_m; theta), so the example becomes one the coming update would
   forget more (the regulariser keeps it from simply becoming harder);
4. replays the edited examples with the current batch and writes them back to memory.

Choices (documented because the papers' hyper-parameters are per data set): the edit is
``stride * decay**k * g / ||g||`` per example (k = times the example was edited before),
so ``edit_stride`` is the L2 length of an edit in normalised-input space whatever the
gradient scale; one edit iteration per step (the paper's default); the regulariser 0.01
(the paper's range); BatchNorm statistics are frozen during the virtual step and the edit.
Memory: a reservoir buffer of exactly ``buffer_size`` examples, stored without
augmentation so edits persist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from clbench.influence.functional import batchnorm_stats_frozen, per_example_loss_fn, trainable_params, tree_axpy
from clbench.training.context import STRATEGIES, Recipe, StrategyContext
from clbench.training.step_template import StepTemplate
from clbench.training.tensor_buffer import TensorReservoirBuffer


@dataclass(frozen=True)
class GMEDArgs:
    """Arguments of GMED."""

    edit_stride: float = field(default=1.0, metadata={"help": "L2 length of one edit in normalised-input space"})
    edit_reg: float = field(default=0.01, metadata={"help": "weight of the memory loss subtracted from the edit goal"})
    edit_decay: float = field(default=1.0, metadata={"help": "stride multiplier per earlier edit of the same example"})


def interference(
    model: nn.Module,
    current: tuple[torch.Tensor, torch.Tensor],
    memory_x: torch.Tensor,
    memory_y: torch.Tensor,
    lr: float,
    reg: float = 0.0,
) -> torch.Tensor:
    """Per-memory-example edit goal d(x_m) - reg * l(x_m; theta) for a virtual step on ``current``."""
    loss_vec = per_example_loss_fn(model)
    params = trainable_params(model)
    with batchnorm_stats_frozen(model):
        step = grad(lambda p: loss_vec(p, *current).mean())(params)
        virtual = tree_axpy(-lr, step, params)
        before = loss_vec(params, memory_x, memory_y)
        after = F.cross_entropy(functional_call(model, virtual, (memory_x,)), memory_y, reduction="none")
    goal: torch.Tensor = after - before - reg * before
    return goal


def edit_memory(
    model: nn.Module,
    current: tuple[torch.Tensor, torch.Tensor],
    memory_x: torch.Tensor,
    memory_y: torch.Tensor,
    lr: float,
    strides: torch.Tensor,
    reg: float,
) -> torch.Tensor:
    """Memory inputs moved ``strides`` (per example, L2) up the gradient of the edit goal."""
    x = memory_x.detach().clone().requires_grad_(True)
    goal = interference(model, current, x, memory_y, lr, reg)
    (direction,) = torch.autograd.grad(goal.sum(), x)
    norms = direction.flatten(1).norm(dim=1).clamp_min(1e-12)
    scale = (strides.to(x.device) / norms).view(-1, *([1] * (x.dim() - 1)))
    edited: torch.Tensor = (x + scale * direction).detach()
    return edited


class GMED(StepTemplate):
    """ER whose replayed memory examples are edited first (all plugin hooks fire)."""

    def __init__(self, *, args: GMEDArgs, storage: TensorReservoirBuffer, replay_batch_size: int, **kwargs: Any):
        """Create the strategy."""
        super().__init__(**kwargs)
        self.args = args
        self.storage = storage
        self.replay_batch_size = replay_batch_size

    def prepare_batch(self) -> None:
        """Edit a memory mini-batch, write it back, and append it to the batch."""
        if len(self.storage) == 0:
            return None
        mem_x, mem_y, positions = self.storage.draw(self, self.replay_batch_size, augment=False)
        strides = self.args.edit_stride * self.args.edit_decay ** self.storage.edit_counts[positions].float()
        lr = float(self.optimizer.param_groups[0]["lr"])
        mem_x = edit_memory(self.model, (self.mb_x, self.mb_y), mem_x, mem_y, lr, strides, self.args.edit_reg)
        self.storage.write(positions, mem_x)
        self.append_to_batch(mem_x, mem_y)
        return None

    def _after_training_exp(self, **kwargs: Any) -> None:
        self.storage.update(self)
        super()._after_training_exp(**kwargs)

    def clbench_extras(self) -> dict[str, Any]:
        """How often memory examples were edited."""
        counts = self.storage.edit_counts
        return {
            "memory_size": len(self.storage),
            "edits_total": int(counts.sum()),
            "edited_examples": int((counts > 0).sum()),
        }


@STRATEGIES.register(
    "gmed", args=GMEDArgs, help="ER + gradient-based memory editing (Jin et al. 2021)", uses_buffer=True
)
def build_gmed(ctx: StrategyContext, args: GMEDArgs) -> Recipe:
    """GMED on ER with a reservoir buffer of ``buffer_size`` examples."""
    return ctx.recipe(
        GMED,
        args=args,
        storage=TensorReservoirBuffer(ctx.buffer_size),
        replay_batch_size=ctx.training.replay_batch_size,
    )
