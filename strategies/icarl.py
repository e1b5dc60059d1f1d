"""iCaRL: incremental classifier and representation learning (Rebuffi et al., CVPR 2017).

Training: each stream mini-batch is joined by ``replay_batch_size`` exemplars and the
network is trained with the sigmoid binary cross-entropy over every class seen so far,
whose targets are the one-hot labels for the current task's classes and, for the earlier
classes, the sigmoid outputs of the network as it was at the end of the previous task
(distillation). Evaluation: the nearest-mean-of-exemplars classifier
(:mod:`clbench.training.ncm`; task-IL restricts the nearest mean to the task's classes).

Exemplars (``memory``):

- ``herding`` (the paper): after each task every seen class keeps ``buffer_size // seen
  classes`` exemplars; a new class's are chosen by herding on its normalised features (in
  evaluation mode, without augmentation), an old class keeps the first ones of its
  herding order. Replay draws earlier tasks only, as the exemplar set of a task is built
  when the task ends.
- ``reservoir``: the online survey's iCaRL (RaptorMai/online-continual-learning,
  ``agents/icarl.py``, which produced SCR's and the survey's iCaRL rows): a reservoir over
  the stream, offered every incoming batch after its step, replayed from the start.

Memory budget: at most ``buffer_size`` stored examples in either case (herding leaves the
remainder of ``buffer_size // classes`` unused). Avalanche 0.6.0's ``ICaRL`` needs its own
model split (feature extractor + classifier) and its herding storage policy; this is the
same method on clbench's backbones (``model.features`` / ``model.classifier``), with the
replay and NCM evaluation through clbench's data path.

Revision 2 (runs with ``augment: true`` only; the others keep revision 1 and their ids): the
memory stores the stream batch un-augmented and replay augments every draw afresh, as the
reference implementations do (exemplars are stored as images and augmented when replayed).
Revision 1 stored the augmented batch and replayed that one crop a slot for the whole run
(``tests/strategies/test_replay_augmentation.py`` fails on it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from clbench.data_path import strategy_autocast
from clbench.training.context import STRATEGIES, AugmentedRunsRevision, Recipe, StrategyContext
from clbench.training.memory import fetch_all
from clbench.training.modes import evaluation_mode
from clbench.training.ncm import NearestMeanReplay, features_of
from clbench.training.tensor_buffer import StreamReservoir, TensorStore


@dataclass(frozen=True)
class ICaRLArgs:
    """Arguments of iCaRL (buffer size and replay batch come from the run)."""

    memory: Literal["herding", "reservoir"] = field(
        default="herding",
        metadata={
            "help": "herding: per-class exemplars chosen after each task (paper); "
            "reservoir: a stream reservoir (the online survey's code)"
        },
    )


def herding_order(features: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of ``count`` rows of (normalised) ``features`` whose running mean best follows the class mean."""
    target = features.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(target)
    available = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
    for k in range(1, min(count, features.shape[0]) + 1):
        gaps = (target - (running + features) / k).norm(dim=1)
        gaps[~available] = float("inf")
        best = int(gaps.argmin())
        chosen.append(best)
        available[best] = False
        running += features[best]
    return torch.tensor(chosen, dtype=torch.long)


class HerdingMemory(TensorStore):
    """Per-class exemplar sets, each in herding order, held as tensors."""

    def __init__(self, max_size: int) -> None:
        """An empty memory of at most ``max_size`` examples."""
        super().__init__(max_size)
        self.x = torch.zeros(0)
        self.y = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def update(self, strategy: Any, **kwargs: Any) -> None:
        """Shrink the old classes to the new quota, herd the experience's classes into it."""
        dataset = strategy.experience.dataset
        targets = torch.as_tensor(list(dataset.targets))
        new_classes = sorted(targets.unique().tolist())
        seen = sorted(set(self.y.tolist()) | set(new_classes))
        quota = self.max_size // len(seen)
        keep = torch.cat([torch.nonzero(self.y == c).flatten()[:quota] for c in self.y.unique().tolist()] or [self.y])
        parts_x, parts_y = [self.x[keep]] if len(self) else [], [self.y[keep]]
        for c in new_classes:
            indices = torch.nonzero(targets == c).flatten().tolist()
            x = fetch_all(strategy, dataset, indices)[0]
            with evaluation_mode(strategy.model):
                chosen = herding_order(features_of(strategy, x), quota).to(x.device)
            parts_x.append(x[chosen].detach())
            parts_y.append(torch.full((len(chosen),), c, dtype=torch.long, device=x.device))
        self.x = torch.cat(parts_x)
        self.y = torch.cat([p.to(self.x.device) for p in parts_y])

    def resize(self, strategy: Any, new_size: int) -> None:
        """The quota follows ``max_size`` at the next :meth:`update`."""
        self.max_size = new_size


class ICaRL(NearestMeanReplay):
    """iCaRL's step (BCE with distillation over seen classes, exemplar replay) and NCM evaluation."""

    def __init__(self, **kwargs: Any) -> None:
        """Create the strategy (``memory``, ``memory_batch_size``: :class:`NearestMeanReplay`)."""
        super().__init__(**kwargs)
        self.previous: nn.Module | None = None
        self.old_classes: list[int] = []

    def criterion(self) -> torch.Tensor:
        """Training: BCE over the seen classes with distilled targets for the old ones."""
        if not self.is_training:
            return super().criterion()  # type: ignore[no-any-return]
        current = [int(c) for c in self.experience.classes_in_this_experience]
        seen = sorted(set(self.old_classes) | set(current))
        logits = self.mb_output.float()
        targets = F.one_hot(self.mb_y, logits.shape[1]).float()
        if self.previous is not None and self.old_classes:
            with torch.no_grad(), strategy_autocast(self):
                old_logits = self.previous(self.mb_x).float()
            targets[:, self.old_classes] = torch.sigmoid(old_logits[:, self.old_classes])
        return F.binary_cross_entropy_with_logits(logits[:, seen], targets[:, seen])

    def after_experience(self) -> None:
        """Herd the task's exemplars, freeze the network for distillation, add the task's classes."""
        self.nearest_mean.invalidate()
        if isinstance(self.memory, HerdingMemory):
            self.memory.update(self)
        self.previous = copy.deepcopy(self.model).eval()
        for p in self.previous.parameters():
            p.requires_grad_(False)
        classes = set(self.old_classes) | {int(c) for c in self.experience.classes_in_this_experience}
        self.old_classes = sorted(classes)


@STRATEGIES.register(
    "icarl",
    args=ICaRLArgs,
    help="iCaRL: herding exemplars, BCE with distillation, nearest-mean-of-exemplars evaluation",
    uses_buffer=True,
    revision=AugmentedRunsRevision(2),
)
def build_icarl(ctx: StrategyContext, args: ICaRLArgs) -> Recipe:
    """:class:`ICaRL` over a herding memory or a stream reservoir of ``buffer_size`` examples."""
    ctx.classifier_of("icarl")
    memory = HerdingMemory(ctx.buffer_size) if args.memory == "herding" else StreamReservoir(ctx.buffer_size)
    return ctx.recipe(ICaRL, memory=memory, memory_batch_size=ctx.training.replay_batch_size)
