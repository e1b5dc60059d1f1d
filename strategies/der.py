"""DER and DER++: dark experience replay (Buzzega et al., NeurIPS 2020), as Mammoth runs it.

Each step trains on the stream mini-batch's cross-entropy plus, from a memory of past
examples stored with the logits the network gave them,

    alpha * MSE(f(x'), z')  +  beta * CE(f(x''), y'')

where (x', z') and (x'', y'') are two independent draws of ``replay_batch_size`` stored
examples, each forwarded on its own (``beta: 0`` is DER, any other value DER++). After the
step the incoming batch is offered to a reservoir over the whole stream (Vitter's
algorithm R, :class:`~clbench.training.tensor_buffer.StreamReservoir`) together with the
logits of *this step's forward*, so replay draws the current task too from the first step
on. This is Mammoth's ``models/der.py`` / ``derpp.py`` (``buffer.add_data(...,
logits=outputs.data)`` after ``opt.step()``).

Where this differs from Avalanche 0.6.0's ``DER`` (``training/supervised/der.py``), each a
change of results, held by ``tests/strategies/test_modern_baselines.py``:

- Avalanche fills a class-balanced buffer only after each experience and stores the logits
  that the *end-of-task* network gives; the method's point is the logits along the
  optimisation trajectory, so they are stored when the example is seen;
- Avalanche concatenates one memory draw to the stream batch (one forward, BatchNorm over
  the union, one draw for both terms); DER++'s two terms use independent draws;
- Avalanche's replay waits for the second experience; DER's buffer is replayed from the start.

Memory budget: the reservoir holds ``buffer_size`` examples with their logits (the logits
are not counted as examples, as in the paper). Under bf16 the stored logits are fp32.
Defaults alpha = 0.1, beta = 0.5: Mammoth's best arguments for DER++ on Seq-CIFAR-10 at
M = 200 (its DER row uses alpha 0.3).

Revision 2 (runs with ``augment: true`` only; the others keep revision 1 and their ids): the
memory stores the stream batch un-augmented and replay augments every draw afresh, as
Mammoth's DER does (it stores ``not_aug_inputs``). Revision 1 stored the augmented batch and
replayed that one crop a slot for the whole run
(``tests/strategies/test_replay_augmentation.py`` fails on it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin

from clbench.data_path import strategy_autocast
from clbench.errors import ConfigError
from clbench.training.context import STRATEGIES, AugmentedRunsRevision, Recipe, StrategyContext
from clbench.training.tensor_buffer import StreamReservoir


@dataclass(frozen=True)
class DERArgs:
    """Arguments of DER / DER++ (the buffer size and replay batch come from the run)."""

    alpha: float = field(default=0.1, metadata={"help": "weight of the logit-matching (MSE) term"})
    beta: float = field(default=0.5, metadata={"help": "weight of the replayed labels' cross-entropy; 0 = DER"})

    def __post_init__(self) -> None:
        """Raises: ConfigError: a negative weight."""
        for name, value in (("alpha", self.alpha), ("beta", self.beta)):
            if not value >= 0:
                raise ConfigError(f"der: {name} must be at least 0, got {value}")


class DarkReplay(SupervisedPlugin):  # type: ignore[misc]
    """Adds DER's logit matching and DER++'s label replay to the loss; stores each batch's logits."""

    def __init__(self, memory: StreamReservoir, batch_size_mem: int, args: DERArgs) -> None:
        """Replay ``batch_size_mem`` examples a term from ``memory``."""
        super().__init__()
        self.memory = memory
        self.batch_size_mem = batch_size_mem
        self.args = args

    def _replay_forward(self, strategy: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A fresh memory draw's outputs (fp32), labels and stored logits."""
        x, y, positions = self.memory.draw(strategy, self.batch_size_mem, augment=True)
        with strategy_autocast(strategy):
            outputs = strategy.model(x)
        return outputs.float(), y, self.memory.extra["logits"][positions].to(outputs.device)

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        """Add alpha * MSE on one draw and beta * CE on another."""
        if len(self.memory) == 0:
            return
        outputs, _, stored_logits = self._replay_forward(strategy)
        strategy.loss += self.args.alpha * F.mse_loss(outputs, stored_logits)
        if self.args.beta != 0:
            outputs, labels, _ = self._replay_forward(strategy)
            strategy.loss += self.args.beta * F.cross_entropy(outputs, labels)

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        """Offer the incoming batch with the logits of its step's forward (first use of the batch only)."""
        if getattr(strategy, "batch_repetition", 0) == 0:
            logits = strategy.mb_output.detach().float()
            self.memory.offer(strategy.unaugmented_inputs(strategy.mb_x), strategy.mb_y, logits=logits)


@STRATEGIES.register(
    "der",
    args=DERArgs,
    help="DER / DER++ (beta=0: DER): logits stored along the stream, MSE + label replay (Mammoth)",
    uses_buffer=True,
    revision=AugmentedRunsRevision(2),
)
def build_der(ctx: StrategyContext, args: DERArgs) -> Recipe:
    """Avalanche's ``Naive`` with :class:`DarkReplay` over a stream reservoir of ``buffer_size`` examples."""
    from avalanche.training.supervised import Naive

    memory = StreamReservoir(ctx.buffer_size)
    return ctx.recipe(Naive, DarkReplay(memory, ctx.training.replay_batch_size, args))
