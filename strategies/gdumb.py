"""GDumb (Prabhu et al., ECCV 2020) from Avalanche, with its paper's training recipe as options."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.supervised import Naive

from clbench.config import OMIT_AT_DEFAULT
from clbench.errors import ConfigError
from clbench.training.context import STRATEGIES, Recipe, StrategyContext


@dataclass(frozen=True)
class GDumbArgs:
    """Arguments of GDumb."""

    buffer_epochs: int | None = field(
        default=None,
        metadata={"help": "epochs of each from-scratch training on the buffer; default the run's epochs per task"},
    )
    clip_grad_norm: float | None = field(
        default=None,
        metadata={
            "help": "clip the gradient's norm to this before each step of the buffer training "
            "(the online survey's GDumb code: 10); None: no clipping",
            OMIT_AT_DEFAULT: True,
        },
    )
    lr_schedule: Literal["constant", "sgdr"] = field(
        default="constant",
        metadata={
            "help": "constant: the run's lr throughout; sgdr: GDumb's code (one warm-up epoch at lr/10, then "
            "cosine annealing with warm restarts after 1, 2, 4, ... epochs down to lr/100)",
            OMIT_AT_DEFAULT: True,
        },
    )
    cutmix_prob: float = field(
        default=0.0,
        metadata={
            "help": "probability that a buffer-training batch is cut-mixed (GDumb's code: 0.5, alpha 1)",
            OMIT_AT_DEFAULT: True,
        },
    )
    train_at: Literal["every_task", "last_task"] = field(
        default="every_task",
        metadata={
            "help": "every_task: train on the buffer after every task and evaluate after each (A1, Am, BWT); "
            "last_task: fill the buffer over the stream and train on it once, after the last task, as GDumb "
            "itself learns at inference time (final accuracy only, at 1/n_tasks of the cost)",
            OMIT_AT_DEFAULT: True,
        },
    )


def sgdr_lr(epoch: int, lr: float) -> float:
    """The lr of buffer-training ``epoch`` under GDumb's schedule (its ``main.py``).

    Epoch 0 warms up at ``lr / 10``; from epoch 1 the lr follows torch's
    ``CosineAnnealingWarmRestarts(T_0=1, T_mult=2, eta_min=lr / 100)`` stepped once an epoch
    from epoch 2, i.e. restarts at epochs 1, 2, 4, 8, ... and the cycle from epoch 2^j - 1
    steps down to near ``lr / 100`` over 2^j epochs (256 epochs end at the bottom of one).
    """
    if epoch == 0:
        return lr / 10
    steps = epoch - 1
    cycle = 2 ** int(math.log2(steps + 1))  # the length of the cycle this step is in
    into_cycle = steps - (cycle - 1)
    lowest = lr / 100
    return lowest + (lr - lowest) * (1 + math.cos(math.pi * into_cycle / cycle)) / 2


def cutmix(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix with alpha = 1 (GDumb's ``cutmix_data``): a box of each image replaced by another's.

    lam ~ U(0, 1) (Beta(1, 1)) sets the box's side ratio sqrt(1 - lam), its centre uniform
    and the box clipped to the image; returned lam is the fraction of each image left
    unchanged, the weight of ``y`` in the loss (``1 - lam`` that of the partner's label).

    Returns:
        The mixed batch (a new tensor), the partners' labels, lam.
    """
    n, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    draws = torch.rand(3, generator=generator, device=generator.device).tolist()
    partner = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
    side = math.sqrt(1.0 - draws[0])
    cut_h, cut_w = int(height * side), int(width * side)
    centre_h, centre_w = int(draws[1] * height), int(draws[2] * width)
    top, bottom = max(centre_h - cut_h // 2, 0), min(centre_h + cut_h // 2, height)
    left, right = max(centre_w - cut_w // 2, 0), min(centre_w + cut_w // 2, width)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[partner][..., top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (height * width)
    return mixed, y[partner], kept


class GDumb(Naive):  # type: ignore[misc]
    """Naive over GDumb's memory; with ``train_at="last_task"`` only the last task trains.

    GDumb's model after a task depends only on its buffer (each training starts from the
    initial weights), so the final model of a run that trains once at the end is a final
    model of one that trains after every task: the buffer still takes every task's data.
    """

    def __init__(self, *, train_at: str, n_tasks: int, cutmix_prob: float, seed: int, **kwargs: Any) -> None:
        """Create the strategy; ``cutmix_prob`` of the training batches are cut-mixed."""
        super().__init__(**kwargs)
        self.train_at = train_at
        self.n_tasks = n_tasks
        self.cutmix_prob = cutmix_prob
        self.cutmix_generator = torch.Generator(device=self.device).manual_seed(seed)
        self.partner_labels: torch.Tensor | None = None
        self.kept_fraction = 1.0

    def clbench_evaluates_after(self, task: int) -> bool:
        """Whether the runner evaluates after ``task`` (a trained model exists only after those)."""
        return self.train_at == "every_task" or task == self.n_tasks - 1

    def _train_exp(self, experience: Any, eval_streams: Any = None, **kwargs: Any) -> None:
        # The buffer is updated before this (dataset adaptation); only the epochs are skipped.
        if self.clbench_evaluates_after(self.clock.train_exp_counter):
            super()._train_exp(experience, eval_streams, **kwargs)

    def _unpack_minibatch(self) -> None:
        super()._unpack_minibatch()
        self.partner_labels = None
        if self.is_training and self.cutmix_prob > 0:
            draw = torch.rand((), generator=self.cutmix_generator, device=self.cutmix_generator.device)
            if float(draw) < self.cutmix_prob:
                self.mbatch[0], self.partner_labels, self.kept_fraction = cutmix(
                    self.mb_x, self.mb_y, self.cutmix_generator
                )

    def criterion(self) -> torch.Tensor:
        """Cross-entropy; on a cut-mixed batch the mix of the two labels' losses by area."""
        loss: torch.Tensor = super().criterion()
        if self.partner_labels is not None:
            partner_loss = self._criterion(self.mb_output, self.partner_labels)
            loss = self.kept_fraction * loss + (1 - self.kept_fraction) * partner_loss
        return loss


class GDumbSGDR(SupervisedPlugin):  # type: ignore[misc]
    """Sets the lr of each buffer-training epoch by :func:`sgdr_lr` (restarting with every training)."""

    def __init__(self, lr: float) -> None:
        """Schedule from the base ``lr``."""
        super().__init__()
        self.lr = lr

    def before_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
        """The lr of the epoch about to start."""
        for group in strategy.optimizer.param_groups:
            group["lr"] = sgdr_lr(strategy.clock.train_exp_epochs, self.lr)


class ClipGradNorm(SupervisedPlugin):  # type: ignore[misc]
    """Clips the gradient's norm before every update (a gradient edit, so a plugin)."""

    def __init__(self, max_norm: float) -> None:
        """Clip to ``max_norm``."""
        super().__init__()
        self.max_norm = max_norm

    def before_update(self, strategy: Any, **kwargs: Any) -> None:
        """Scale the gradient down to ``max_norm`` if it is longer."""
        torch.nn.utils.clip_grad_norm_(strategy.model.parameters(), self.max_norm)


@STRATEGIES.register(
    "gdumb", args=GDumbArgs, help="GDumb: greedy class-balanced memory, retrain from scratch on it", uses_buffer=True
)
def build_gdumb(ctx: StrategyContext, args: GDumbArgs) -> Recipe:
    """Avalanche's ``GDumbPlugin`` on ``Naive``.

    Memory budget: a class-balanced buffer of exactly ``buffer_size`` examples. Before each
    task the model is reset to its initial weights and trained only on the buffer (the
    current task's data included). GDumb's own protocol trains the small buffer for many
    more epochs than a sequential learner spends on a task, hence ``buffer_epochs``.
    """
    from avalanche.training.plugins import GDumbPlugin

    _check_recipe(ctx, args)
    plugins: list[SupervisedPlugin] = [GDumbPlugin(mem_size=ctx.buffer_size)]
    if args.clip_grad_norm is not None:
        plugins.append(ClipGradNorm(args.clip_grad_norm))
    if args.lr_schedule == "sgdr":
        plugins.append(GDumbSGDR(ctx.training.lr))
    return ctx.recipe(
        GDumb,
        *plugins,
        train_epochs=args.buffer_epochs,
        train_at=args.train_at,
        n_tasks=ctx.benchmark.n_tasks,
        cutmix_prob=args.cutmix_prob,
        seed=ctx.seed,
    )


def _check_recipe(ctx: StrategyContext, args: GDumbArgs) -> None:
    """One-line errors for GDumb arguments out of range or at odds with the run's settings."""
    if args.clip_grad_norm is not None and args.clip_grad_norm <= 0:
        raise ConfigError(
            f"gdumb: clip_grad_norm must be > 0, got {args.clip_grad_norm}; valid choices: a positive number or null"
        )
    if not 0 <= args.cutmix_prob <= 1:
        raise ConfigError(f"gdumb: cutmix_prob must be in [0, 1], got {args.cutmix_prob}")
    if args.lr_schedule == "sgdr" and ctx.training.lr_milestones:
        raise ConfigError(
            "gdumb: lr_schedule=sgdr sets the lr of every epoch itself; valid choices: training.lr_milestones=[] "
            "or lr_schedule=constant"
        )
