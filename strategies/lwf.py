"""LwF: learning without forgetting (Li & Hoiem, ECCV 2016), single-head class-incremental.

While a task trains, the loss gains ``alpha · T² · KL(q_old ‖ q)`` where q_old and q are
the softmax at temperature T of the previous tasks' network (a frozen copy taken after
each task, evaluated with its running BatchNorm statistics) and of the current network,
both over the classes seen before the task (the previous network's active units). The
T² factor (Hinton et al.) keeps the term's gradient scale independent of T.

Where this differs from Avalanche 0.6.0's ``LwFPlugin`` (``training/plugins/lwf.py``):
Avalanche runs its frozen copy in training mode, so the copy normalises by the current
batch and its running statistics drift with every step; and it leaves out T² (its alpha
is this alpha · T²). No buffer (``uses_buffer`` false). Defaults alpha = 1, T = 2 (the
paper's temperature).

The online survey's LwF (RaptorMai/online-continual-learning, ``agents/lwf.py`` and
``utils/kd_manager.py``; the SCR authors' LwF results come from it) differs in three ways,
each an option: it weights the two terms ``1/(t+1)`` and ``t/(t+1)`` after t learned tasks
(``weighting: task_ratio``), distils over every output unit, the current and unseen
classes' too (``distilled_outputs: all``), and its teacher is a deep copy of the network
in training mode, which normalises each batch by its own statistics (``teacher_mode:
train``). Its soft-target cross-entropy differs from the KL term by the targets' entropy,
a constant: the same gradient.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from torch import nn

from clbench.config import OMIT_AT_DEFAULT
from clbench.data_path import strategy_autocast
from clbench.errors import ConfigError
from clbench.training.context import STRATEGIES, Recipe, StrategyContext


@dataclass(frozen=True)
class LwFArgs:
    """Arguments of LwF."""

    alpha: float = field(default=1.0, metadata={"help": "weight of the distillation term"})
    temperature: float = field(default=2.0, metadata={"help": "softmax temperature of the distillation"})
    weighting: Literal["constant", "task_ratio"] = field(
        default="constant",
        metadata={
            "help": "constant: CE + alpha * distillation; task_ratio: CE / (t + 1) + alpha * t / (t + 1) * "
            "distillation after t learned tasks (the online survey's code)",
            OMIT_AT_DEFAULT: True,
        },
    )
    distilled_outputs: Literal["old_classes", "all"] = field(
        default="old_classes",
        metadata={
            "help": "old_classes: the softmax over the classes learned before the task; all: over every "
            "output unit (the online survey's code)",
            OMIT_AT_DEFAULT: True,
        },
    )
    teacher_mode: Literal["eval", "train"] = field(
        default="eval",
        metadata={
            "help": "eval: the previous network with its running BatchNorm statistics; train: normalising "
            "each batch by its own statistics (the online survey's code, Avalanche's LwFPlugin)",
            OMIT_AT_DEFAULT: True,
        },
    )

    def __post_init__(self) -> None:
        """Raises: ConfigError: a negative alpha or a temperature that is not positive."""
        if not self.alpha >= 0:
            raise ConfigError(f"lwf: alpha must be at least 0, got {self.alpha}")
        if not self.temperature > 0:
            raise ConfigError(f"lwf: temperature must be positive, got {self.temperature}")


def distillation_loss(
    logits: torch.Tensor, old_logits: torch.Tensor, classes: list[int], temperature: float
) -> torch.Tensor:
    """T² · KL(softmax(old/T) ‖ softmax(new/T)) over ``classes``, mean over the batch."""
    log_q = F.log_softmax(logits[:, classes].float() / temperature, dim=1)
    q_old = F.softmax(old_logits[:, classes].float() / temperature, dim=1)
    return temperature**2 * F.kl_div(log_q, q_old, reduction="batchmean")


class LearningWithoutForgetting(SupervisedPlugin):  # type: ignore[misc]
    """Distils the previous tasks' network into the current one on the current inputs."""

    def __init__(self, args: LwFArgs) -> None:
        """Distil with ``args.alpha`` at ``args.temperature``, weighted and taken as ``args`` says."""
        super().__init__()
        self.args = args
        self.previous: nn.Module | None = None
        self.old_classes: list[int] = []

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        """Add alpha times the distillation loss on the mini-batch (``task_ratio``: both terms reweighted)."""
        if self.previous is None or not self.old_classes:
            return
        with torch.no_grad(), strategy_autocast(strategy):
            old_logits = self.previous(strategy.mb_x)
        outputs = self.old_classes if self.args.distilled_outputs == "old_classes" else list(range(old_logits.shape[1]))
        loss = self.args.alpha * distillation_loss(strategy.mb_output, old_logits, outputs, self.args.temperature)
        if self.args.weighting == "task_ratio":
            learned = strategy.clock.train_exp_counter  # the experiences learned before this one
            strategy.loss = strategy.loss / (learned + 1) + loss * learned / (learned + 1)
        else:
            strategy.loss += loss

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        """Freeze a copy of the network and add the task's classes to the distilled ones."""
        self.previous = copy.deepcopy(strategy.model).train(self.args.teacher_mode == "train")
        for p in self.previous.parameters():
            p.requires_grad_(False)
        classes = set(self.old_classes) | {int(c) for c in strategy.experience.classes_in_this_experience}
        self.old_classes = sorted(classes)


@STRATEGIES.register("lwf", args=LwFArgs, help="learning without forgetting: distillation from the last task's network")
def build_lwf(ctx: StrategyContext, args: LwFArgs) -> Recipe:
    """Avalanche's ``Naive`` with :class:`LearningWithoutForgetting`."""
    from avalanche.training.supervised import Naive

    return ctx.recipe(Naive, LearningWithoutForgetting(args))
