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
- ``reservoir_past_tasks``: ER-ACE's iCaRL (pclucas14/AML, ``methods/icarl.py`` over
  ``methods/er.py``): a reservoir that replay draws earlier tasks only from. It is offered
  each task once the task is learned, which gives the same memory at every task boundary as
  offering every batch, in distribution (as ER's ``replay_forward: separate``).

ER-ACE's code also computes the loss and the NCM otherwise (``loss: split``,
``ncm_features: raw``): the stream batch alone takes the one-hot BCE over all outputs (old
classes' targets 0, no distillation), the memory batch, forwarded apart, only the
distillation toward the previous network's sigmoid outputs over all outputs; each is
summed over outputs and averaged over its own examples, which makes its gradient 2 x |seen
classes| times the paper form's mean at the same lr; and the class means are the plain
means of raw features. ``memory: reservoir_past_tasks, loss: split, ncm_features: raw`` at
``lr: 0.01`` (its validated value) is ER-ACE's Table 1 iCaRL.

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

from clbench.config import OMIT_AT_DEFAULT
from clbench.data_path import strategy_autocast
from clbench.training.context import STRATEGIES, AugmentedRunsRevision, Recipe, StrategyContext
from clbench.training.memory import fetch_all
from clbench.training.modes import evaluation_mode
from clbench.training.ncm import NearestMeanReplay, features_of
from clbench.training.tensor_buffer import StreamReservoir, TensorReservoirBuffer, TensorStore


@dataclass(frozen=True)
class ICaRLArgs:
    """Arguments of iCaRL (buffer size and replay batch come from the run)."""

    memory: Literal["herding", "reservoir", "reservoir_past_tasks"] = field(
        default="herding",
        metadata={
            "help": "herding: per-class exemplars chosen after each task (paper); "
            "reservoir: a stream reservoir replayed from the start (the online survey's code); "
            "reservoir_past_tasks: a reservoir replayed from earlier tasks only (ER-ACE's code)"
        },
    )
    loss: Literal["joint", "split"] = field(
        default="joint",
        metadata={
            "help": "joint: one forward of stream + memory, one-hot targets for the current classes and "
            "distilled ones for the old, mean over seen classes (paper); split: ER-ACE's code, the stream "
            "batch's one-hot BCE plus the memory batch's distillation, each over all outputs, summed over "
            "outputs and averaged over its own forward's examples",
            OMIT_AT_DEFAULT: True,
        },
    )
    ncm_features: Literal["normalised", "raw"] = field(
        default="normalised",
        metadata={
            "help": "normalised: L2-normalised features and class means (paper); raw: unnormalised "
            "penultimate features and means (ER-ACE's code)",
            OMIT_AT_DEFAULT: True,
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


MEMORIES: dict[str, type[TensorStore]] = {
    "herding": HerdingMemory,
    "reservoir": StreamReservoir,
    "reservoir_past_tasks": TensorReservoirBuffer,
}
"""The exemplar memory of each ``memory`` option, built with the run's ``buffer_size``."""


def summed_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy summed over outputs, averaged over examples (ER-ACE's code's reduction)."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / logits.shape[0]


class ICaRL(NearestMeanReplay):
    """iCaRL's step (BCE with distillation over seen classes, exemplar replay) and NCM evaluation."""

    def __init__(self, *, split_loss: bool = False, **kwargs: Any) -> None:
        """Create the strategy (``memory``, ``memory_batch_size``, ``ncm_normalise``: :class:`NearestMeanReplay`).

        ``split_loss``: ER-ACE's code's loss (:meth:`replay_distillation_loss`) instead of the paper's joint one.
        """
        super().__init__(**kwargs)
        self.split_loss = split_loss
        self.previous: nn.Module | None = None
        self.old_classes: list[int] = []

    def prepare_batch(self) -> None:
        """Join a memory mini-batch to the stream batch; the split loss forwards it apart instead."""
        if not self.split_loss:
            return super().prepare_batch()
        self._n_new = int(self.mb_y.shape[0])
        return None

    def criterion(self) -> torch.Tensor:
        """Training: the joint or the split BCE with distillation; evaluation: the plain criterion."""
        if not self.is_training:
            return super().criterion()  # type: ignore[no-any-return]
        return self.replay_distillation_loss() if self.split_loss else self.joint_loss()

    def replay_distillation_loss(self) -> torch.Tensor:
        """The stream batch's one-hot BCE plus a memory batch's distillation, over all outputs (ER-ACE's code)."""
        logits = self.mb_output.float()
        loss = summed_bce(logits, F.one_hot(self.mb_y, logits.shape[1]).float())
        if self.previous is None or len(self.memory) == 0:
            return loss
        x, _, _ = self.memory.draw(self, self.memory_batch_size, augment=True)
        with strategy_autocast(self):
            replay_logits = self.model(x).float()
            with torch.no_grad():
                old_logits = self.previous(x).float()
        return loss + summed_bce(replay_logits, torch.sigmoid(old_logits))

    def joint_loss(self) -> torch.Tensor:
        """BCE over the seen classes with one-hot targets for the current ones, distilled for the old (paper)."""
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
        """Update the memory, freeze the network for distillation, add the task's classes.

        The memory's update herds (``herding``) or offers the task to the reservoir
        (``reservoir_past_tasks``); a stream reservoir took each batch already (no-op).
        """
        self.nearest_mean.invalidate()
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
    """:class:`ICaRL` over a herding memory or a reservoir of ``buffer_size`` examples."""
    ctx.classifier_of("icarl")
    return ctx.recipe(
        ICaRL,
        memory=MEMORIES[args.memory](ctx.buffer_size),
        memory_batch_size=ctx.training.replay_batch_size,
        split_loss=args.loss == "split",
        ncm_normalise=args.ncm_features == "normalised",
    )
