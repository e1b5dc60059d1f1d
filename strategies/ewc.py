"""Online EWC (Schwarz et al., ICML 2018), as Mammoth's ``ewc_on`` runs it.

After each task the diagonal Fisher information of the task's training data is computed
at the final weights θ*_t and folded into a running importance, F ← decay · F + F_t; while
the next tasks train, the loss gains ``lambda · Σ F (θ − θ*_t)²`` (one anchor: the weights
after the latest task). F_t is Mammoth's per-example estimate,

    F_t = mean_i p(y_i | x_i) · (∇θ log p(y_i | x_i))²,

computed with ``torch.func`` (vmap of per-example gradients) in evaluation mode (BatchNorm
by its running statistics), in chunks, on the task's examples without augmentation, in
fp32 on every run (vmapped gradients through BatchNorm fail under CPU bf16 autocast in
torch 2.14.1, "expected scalar type BFloat16 but found Float"; the Fisher is a measurement,
so full precision is also the better choice).

Where this differs from Avalanche 0.6.0's ``EWCPlugin`` (``training/plugins/ewc.py``),
a change of results held by ``tests/strategies/test_modern_baselines.py``: Avalanche
squares the *mini-batch* mean gradient, (1/B Σ g_i)², which is about F / B for
uncorrelated examples, so its importance shrinks with the batch size (10× smaller on the
online protocol's batch of 10) and its ``lambda`` means something else. Mammoth computes
the per-example Fisher above (on single examples in train mode, which also moves
BatchNorm's running statistics: here they are left alone).

Revision 2 computes the same Fisher from one batched backward a chunk
(:mod:`clbench.influence.per_example`: each layer's per-example squared gradients from its
input and its output gradient; ``tests/influence/test_per_example.py`` holds it equal to
the vmap form to 1e-5) instead of ``vmap``, 2.7x faster on this CPU for the reduced
ResNet-18 (``FISHER_CHUNK`` examples at a time); the sums differ from revision 1's in the
last float digits, so its runs are revision 2. A model with a layer that has no per-example
rule (``per_example.supports``) keeps the ``vmap`` form.

No buffer (``uses_buffer`` false). Defaults lambda = 10 and decay = 1 are Mammoth's best
arguments for oEWC on Seq-CIFAR-10.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from torch import nn
from torch.func import functional_call, grad, vmap

from clbench.errors import ConfigError
from clbench.influence.functional import Params, trainable_params
from clbench.influence.per_example import supports, weighted_squared_gradients
from clbench.training.context import STRATEGIES, Recipe, StrategyContext
from clbench.training.modes import evaluation_mode

FISHER_CHUNK = 64
"""Examples per vmapped per-example-gradient chunk (memory: chunk × parameters × 4 bytes)."""


@dataclass(frozen=True)
class EWCArgs:
    """Arguments of online EWC."""

    ewc_lambda: float = field(default=10.0, metadata={"help": "lambda: weight of the quadratic penalty"})
    decay: float = field(default=1.0, metadata={"help": "gamma: decay of the earlier tasks' Fisher (1 = sum)"})

    def __post_init__(self) -> None:
        """Raises: ConfigError: a negative lambda or a decay outside [0, 1]."""
        if not self.ewc_lambda >= 0:
            raise ConfigError(f"ewc: ewc_lambda must be at least 0, got {self.ewc_lambda}")
        if not 0 <= self.decay <= 1:
            raise ConfigError(f"ewc: decay must be in [0, 1], got {self.decay}")


def weighted_fisher_diagonal(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Params:
    """Σ_i p(y_i|x_i) · (∇θ log p(y_i|x_i))² over the batch (model in its current mode, buffers untouched)."""
    params = trainable_params(model)
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def log_likelihood(p: Params, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return -F.cross_entropy(logits.float(), yi.unsqueeze(0))

    def weighted_square(xi: torch.Tensor, yi: torch.Tensor) -> Params:
        gradient = grad(log_likelihood)(params, xi, yi)
        probability = log_likelihood(params, xi, yi).detach().exp()
        return {name: probability * g.float() ** 2 for name, g in gradient.items()}

    per_example = vmap(weighted_square)(x, y)
    return {name: value.sum(0) for name, value in per_example.items()}


def fisher_diagonal(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Params:
    """:func:`weighted_fisher_diagonal` from one batched backward (:mod:`clbench.influence.per_example`).

    Examples must not interact (evaluation mode) and every parameter's layer must have a
    rule (``per_example.supports(model)``).
    """
    fisher, _ = weighted_squared_gradients(model, x, lambda logits: -F.cross_entropy(logits, y, reduction="none"))
    return fisher


class OnlineEWC(SupervisedPlugin):  # type: ignore[misc]
    """Adds the online-EWC penalty to the loss; updates the Fisher and the anchor after each task."""

    def __init__(self, args: EWCArgs) -> None:
        """Penalise with ``args.ewc_lambda``, decay the Fisher by ``args.decay``."""
        super().__init__()
        self.args = args
        self.importance: Params | None = None
        self.anchor: Params | None = None

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """Σ F (θ − θ*)² over the trainable parameters (0 before the first task ends)."""
        assert self.importance is not None and self.anchor is not None
        total = torch.zeros((), device=next(model.parameters()).device)
        for name, p in model.named_parameters():
            if name in self.importance:
                total = total + (self.importance[name] * (p.float() - self.anchor[name]) ** 2).sum()
        return total

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        """Add lambda times the penalty."""
        if self.importance is not None:
            strategy.loss += self.args.ewc_lambda * self.penalty(strategy.model)

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        """Fold the task's Fisher into the importance and anchor at the current weights."""
        fisher = self.task_fisher(strategy)
        if self.importance is None:
            self.importance = fisher
        else:
            self.importance = {n: self.args.decay * self.importance[n] + fisher[n] for n in fisher}
        self.anchor = {name: p.float().clone() for name, p in trainable_params(strategy.model).items()}

    @staticmethod
    def task_fisher(strategy: Any) -> Params:
        """Mean weighted per-example Fisher over the experience's training examples (no augmentation).

        From one batched backward a chunk (:func:`fisher_diagonal`), or by ``vmap`` for a
        model with a layer that has no per-example rule.
        """
        model, dataset = strategy.model, strategy.experience.dataset
        total: Params = {}
        with evaluation_mode(model):
            fisher = fisher_diagonal if supports(model) else weighted_fisher_diagonal
            for start in range(0, len(dataset), FISHER_CHUNK):
                indices = list(range(start, min(start + FISHER_CHUNK, len(dataset))))
                x, y = strategy.fetch_examples(dataset, indices, augment=False)
                chunk = fisher(model, x, y)
                total = chunk if not total else {n: total[n] + chunk[n] for n in chunk}
        return {name: value / len(dataset) for name, value in total.items()}


@STRATEGIES.register(
    "ewc", args=EWCArgs, help="online EWC: per-example Fisher, decayed sum, one anchor (Mammoth)", revision=2
)
def build_ewc(ctx: StrategyContext, args: EWCArgs) -> Recipe:
    """Avalanche's ``Naive`` with :class:`OnlineEWC`."""
    from avalanche.training.supervised import Naive

    return ctx.recipe(Naive, OnlineEWC(args))
