"""Functional helpers: a model as a pure function of its parameters.

``torch.func.functional_call`` turns an ``nn.Module`` into ``f(params, x)``; everything
in :mod:`clbench.influence` works on such parameter dictionaries so that pseudo-updates
never touch the module's own tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value

Params = dict[str, torch.Tensor]
LossVector = Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]
"""``(x, y)`` of a training batch or a measurement set: the one batch type of the influence library."""


@dataclass(frozen=True)
class InfluenceResult:
    """Influence of each training example on each measurement set's mean loss (every estimator's result).

    Attributes:
        influence: One (n_train,) tensor per measurement set; positive = harmful.
        measurement_loss: Each measurement set's mean loss (at the parameters the influence
            refers to: after the pseudo update for MetaSP's influence).
        seconds: Wall-clock time of the computation (0 where the caller did not time it).
    """

    influence: tuple[torch.Tensor, ...]
    measurement_loss: tuple[float, ...]
    seconds: float = 0.0


InfluenceFn = Callable[[nn.Module, Batch, list[Batch], float], InfluenceResult]
"""The one signature of an influence computation: ``(model, train, measurements, lr)``."""


def trainable_params(model: nn.Module) -> Params:
    """Detached copies of the parameters that require gradients, by name."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def per_example_loss_fn(model: nn.Module) -> LossVector:
    """``loss(params, x, y) -> (N,)`` cross-entropy of each example of one batched forward.

    Buffers (e.g. BatchNorm statistics) are taken from the module as they are; wrap calls
    in :func:`batchnorm_stats_frozen` so a train-mode forward does not update them.
    """

    def loss(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, params, (x,), strict=False)
        return F.cross_entropy(logits, y, reduction="none")

    return loss


def mean_loss_gradient(loss_vec: LossVector, params: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[Params, float]:
    """Gradient and value of the mean loss on (x, y), from one forward and one backward pass."""
    gradient, value = grad_and_value(lambda p: loss_vec(p, x, y).mean())(params)
    return gradient, float(value.detach())


@contextmanager
def batchnorm_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Freeze BatchNorm running statistics within the block.

    Train-mode BatchNorm then normalises with batch statistics but leaves its running
    statistics untouched (they are detached from the module and put back after).
    """
    saved = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            saved.append((module, module.running_mean, module.running_var, module.num_batches_tracked))
            module.running_mean = None
            module.running_var = None
            module.num_batches_tracked = None
            module.track_running_stats = False
    try:
        yield
    finally:
        for module, mean, var, count in saved:
            module.running_mean = mean
            module.running_var = var
            module.num_batches_tracked = count
            module.track_running_stats = True


def tree_dot(a: Params, b: Params) -> torch.Tensor:
    """Inner product of two parameter dictionaries."""
    return sum((a[k] * b[k]).sum() for k in a)  # type: ignore[return-value]


def tree_axpy(alpha: float, x: Params, y: Params) -> Params:
    """``y + alpha * x`` for parameter dictionaries."""
    return {k: y[k] + alpha * x[k] for k in y}


def gradient_by_name(loss: torch.Tensor, model: nn.Module, retain_graph: bool = True) -> Params:
    """The gradient of ``loss`` for every trainable parameter, by name (zeros where unused).

    For a gradient taken from a training forward's graph that a later backward still needs
    (``retain_graph``): MetaSP's pseudo gradient, MIR's virtual step.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=retain_graph, allow_unused=True)
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(named, grads, strict=True)}


def flat_gradient(parameters: Iterable[nn.Parameter], device: torch.device) -> torch.Tensor:
    """The parameters' ``.grad`` as one vector in parameter order (zeros where there is none).

    ``reshape``, not ``view``: a channels-last weight's gradient is not contiguous, and
    Avalanche's ``p.grad.view(-1)`` (A-GEM, GSS) fails on it.
    """
    parts = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=device) for p in parameters]
    return torch.cat(parts).to(device)
