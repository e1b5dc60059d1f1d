"""ER-ACE: experience replay with asymmetric cross-entropy (Caccia et al., ICLR 2022).

The incoming mini-batch's cross-entropy is taken over the logits of the classes present
in that batch and of every class not seen yet (from the largest class id seen so far up:
the reference's ``mask[:, seen_so_far.max():] = 1``); the logits of the other, earlier
seen classes are masked out, so the new data does not push the old classes' logits down.
A replayed memory batch, forwarded on its own, gets the plain cross-entropy over every
class; the update follows the sum of the two mean losses. The memory is a reservoir over
the stream, offered every incoming batch after its step, and replayed from the first step
on (the current task included), as ER-ACE's reference runs it (``pclucas14/AML``,
``methods/er_ace.py``: task-free, ``exclude_task=None``).

Where this differs from Avalanche 0.6.0's ``ER_ACE`` (``training/supervised/er_ace.py``),
each a change of results held by ``tests/strategies/test_modern_baselines.py``:

- Avalanche masks the incoming loss to the batch's present classes only (its
  ``ACECriterion``), so unseen classes are not in the softmax: the reference keeps them;
- Avalanche averages the stream and memory losses, which halves the step of both; the
  reference sums them;
- Avalanche concatenates the memory batch to the stream batch (one forward, BatchNorm
  over the union); the reference forwards them apart;
- Avalanche's class-balanced buffer takes the whole experience *before* training on it
  (replay draws examples of the current task before the stream has shown them) and replay
  starts with the second task; the reference's reservoir takes each incoming batch after
  its step and replays from the first.

The reference (and Mammoth's port) also replaces the network's linear classifier by a
bias-free cosine head, 10 x cos(features, class weight) (``classifier: cosine``, the
default; :class:`clbench.backbones.CosineClassifier`); ``classifier: linear`` keeps the
backbone's, for a reading beside ER at the same network.

Memory budget: the reservoir holds exactly ``buffer_size`` examples.

Revision 2 (runs with ``augment: true`` only; the others keep revision 1 and their ids): the
memory stores the stream batch un-augmented and replay augments every draw afresh, as the
reference does (``pclucas14/AML`` stores the raw batch and augments each replayed one).
Revision 1 stored the augmented batch and replayed that one crop a slot for the whole run
(``tests/strategies/test_replay_augmentation.py`` fails on it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from clbench.backbones import CosineClassifier
from clbench.data_path import strategy_autocast
from clbench.training.context import STRATEGIES, AugmentedRunsRevision, Recipe, StrategyContext
from clbench.training.step_template import StepTemplate
from clbench.training.tensor_buffer import StreamReservoir

MASKED_LOGIT = -1e9
"""What a masked-out logit becomes (the reference's value): far below any real logit."""


@dataclass(frozen=True)
class ERACEArgs:
    """Arguments of ER-ACE (buffer size and replay batch come from the run)."""

    classifier: Literal["cosine", "linear"] = field(
        default="cosine",
        metadata={
            "help": "cosine: the reference's bias-free 10 x cosine head in place of the backbone's "
            "classifier; linear: the backbone's own (as ER)"
        },
    )


def asymmetric_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, seen_max: int) -> torch.Tensor:
    """Mean cross-entropy over the batch's present classes and every class id >= ``seen_max``."""
    keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    keep[labels.unique()] = True
    keep[seen_max:] = True
    return F.cross_entropy(logits.masked_fill(~keep, MASKED_LOGIT), labels)


class ERACE(StepTemplate):
    """ER-ACE's step: asymmetric loss on the stream batch, plain loss on a memory batch (all hooks fire)."""

    def __init__(self, *, memory: StreamReservoir, replay_batch_size: int, **kwargs: Any) -> None:
        """Create the strategy over ``memory``."""
        super().__init__(**kwargs)
        self.memory = memory
        self.replay_batch_size = replay_batch_size
        self.seen_max = -1

    def criterion(self) -> torch.Tensor:
        """Training: the asymmetric stream loss plus the memory batch's loss; evaluation: cross-entropy."""
        if not self.is_training:
            return super().criterion()  # type: ignore[no-any-return]
        self.seen_max = max(self.seen_max, int(self.mb_y.max()))
        loss = asymmetric_cross_entropy(self.mb_output.float(), self.mb_y, self.seen_max)
        if len(self.memory) > 0:
            x, y, _ = self.memory.draw(self, self.replay_batch_size, augment=True)
            with strategy_autocast(self):
                replay_logits = self.model(x)
            loss = loss + F.cross_entropy(replay_logits.float(), y)
        return loss

    def after_step(self) -> None:
        """Offer the incoming batch to the reservoir (the first time the batch is used)."""
        if getattr(self, "batch_repetition", 0) == 0:
            self.memory.offer(self.unaugmented_inputs(self.mb_x), self.mb_y)


@STRATEGIES.register(
    "er_ace",
    args=ERACEArgs,
    help="ER-ACE: asymmetric cross-entropy on the stream, replay from a stream reservoir (pclucas14/AML)",
    uses_buffer=True,
    revision=AugmentedRunsRevision(2),
)
def build_er_ace(ctx: StrategyContext, args: ERACEArgs) -> Recipe:
    """:class:`ERACE` over a stream reservoir of ``buffer_size`` examples."""
    if args.classifier == "cosine":
        linear = ctx.classifier_of("er_ace")
        model = copy.deepcopy(ctx.model)
        model.classifier = CosineClassifier(linear.in_features, linear.out_features).to(ctx.device)
        ctx = ctx.with_model(model)
    memory = StreamReservoir(ctx.buffer_size)
    return ctx.recipe(ERACE, memory=memory, replay_batch_size=ctx.training.replay_batch_size)
