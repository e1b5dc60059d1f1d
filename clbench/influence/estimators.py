"""Influence estimators: one thin class each, one interface, registered by name.

Convention (shared with MetaSP): the influence of training example i on a measurement
loss L is dL/d eps_i when example i is up-weighted by eps_i. **Positive = harmful.**

For the inverse-curvature estimators (Koh & Liang 2017), up-weighting example i in the
mean training loss moves the optimum by -H^-1 grad l_i, so
``I_i = -grad L^T (H + damping I)^-1 grad l_i``. They compute s = (H + damping I)^-1 grad L
once and all I_i with one forward-mode JVP of the per-example loss vector along s.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import torch
from torch import nn
from torch.func import jvp

from clbench.influence.functional import (
    Batch,
    InfluenceResult,
    Params,
    batchnorm_stats_frozen,
    mean_loss_gradient,
    per_example_loss_fn,
    trainable_params,
)
from clbench.influence.hessian import (
    MatVec,
    gnvp_fn,
    hvp_fn,
    ihvp_cg_fn,
    ihvp_exact_fn,
    ihvp_lissa_fn,
    ihvp_neumann_fn,
    largest_eigenvalue,
)
from clbench.influence.meta import meta_influence
from clbench.registry import Registry

Curvature = Literal["full", "gauss_newton"]


class Estimator(ABC):
    """An influence estimator."""

    name = "estimator"

    @abstractmethod
    def __call__(self, model: nn.Module, train: Batch, measurements: list[Batch], lr: float) -> InfluenceResult:
        """Influence of each example of ``train`` on each measurement set.

        Args:
            model: The network (not modified; BatchNorm statistics are frozen).
            train: The training examples (for curvature estimators: also the data whose
                mean loss defines the curvature).
            measurements: Measurement sets.
            lr: The learning rate, for estimators that model an SGD step.
        """

    def matrix(self, model: nn.Module, train: Batch, test: Batch, lr: float) -> torch.Tensor:
        """The (n_train, n_test) influence of each training on each test example's loss."""
        singles = [(test[0][j : j + 1], test[1][j : j + 1]) for j in range(len(test[1]))]
        return torch.stack(self(model, train, singles, lr).influence, dim=1)


ESTIMATORS: Registry[Callable[[Any], Estimator]] = Registry(
    "influence estimator",
    "clbench.estimators",
    builtin_modules=("clbench.influence.estimators", "clbench.influence.hydra"),
)


def _timed(fn: Callable[[], tuple[tuple[torch.Tensor, ...], tuple[float, ...]]]) -> InfluenceResult:
    tic = time.perf_counter()
    influence, losses = fn()
    return InfluenceResult(influence, losses, time.perf_counter() - tic)


ArgsT = TypeVar("ArgsT")


class InverseCurvatureEstimator(Estimator, Generic[ArgsT]):
    """``I_i = -grad L^T ihvp(grad l_i)`` with an inverse-curvature solver.

    Subclasses only say how to solve; the curvature (``hessian: full | gauss_newton``) is
    read from their arguments, ``full`` when they have no such field.
    """

    def __init__(self, args: ArgsT) -> None:
        """Create the estimator from its arguments."""
        self.args = args

    def _matvec(self, model: nn.Module, params: Params, batch: Batch) -> MatVec:
        if getattr(self.args, "hessian", "full") == "gauss_newton":
            return gnvp_fn(model, params, batch)
        return hvp_fn(per_example_loss_fn(model), params, batch)

    @abstractmethod
    def _solver(self, model: nn.Module, params: Params, train: Batch, lr: float) -> Callable[[Params], Params]:
        """The inverse-curvature product at ``params``."""

    def __call__(self, model: nn.Module, train: Batch, measurements: list[Batch], lr: float) -> InfluenceResult:
        """See :class:`Estimator`."""

        def compute() -> tuple[tuple[torch.Tensor, ...], tuple[float, ...]]:
            loss_vec = per_example_loss_fn(model)
            with batchnorm_stats_frozen(model):
                params = trainable_params(model)
                solve = self._solver(model, params, train, lr)
                influences, losses = [], []
                for x, y in measurements:
                    measurement_grad, loss = mean_loss_gradient(loss_vec, params, x, y)
                    losses.append(loss)
                    s = solve(measurement_grad)
                    directional = jvp(lambda p: loss_vec(p, *train), (params,), (s,))[1]
                    influences.append(-directional.detach())
            return tuple(influences), tuple(losses)

        return _timed(compute)


@dataclass(frozen=True)
class ExactArgs:
    """Arguments of the exact estimator."""

    hessian: Curvature = field(default="full", metadata={"help": "full Hessian or Gauss-Newton"})
    damping: float = field(default=0.01, metadata={"help": "added to the diagonal"})


class ExactEstimator(InverseCurvatureEstimator[ExactArgs]):
    """Dense (H + damping I)^-1: the ground truth for small models."""

    name = "exact"

    def _solver(self, model: nn.Module, params: Params, train: Batch, lr: float) -> Callable[[Params], Params]:
        return ihvp_exact_fn(self._matvec(model, params, train), params, self.args.damping)


@dataclass(frozen=True)
class CGArgs:
    """Arguments of the conjugate-gradient estimator."""

    hessian: Curvature = field(default="full", metadata={"help": "full Hessian or Gauss-Newton"})
    damping: float = field(default=0.01, metadata={"help": "added to the diagonal"})
    max_iter: int = field(default=100, metadata={"help": "CG iterations at most"})
    tol: float = field(default=1e-10, metadata={"help": "stop when ||r||^2 <= tol ||v||^2"})


class CGEstimator(InverseCurvatureEstimator[CGArgs]):
    """Conjugate gradients on (H + damping I) s = grad L."""

    name = "cg"

    def _solver(self, model: nn.Module, params: Params, train: Batch, lr: float) -> Callable[[Params], Params]:
        return ihvp_cg_fn(self._matvec(model, params, train), self.args.damping, self.args.max_iter, self.args.tol)


def checked_step(
    estimator: str, name: str, scale: float | None, matvec: MatVec, params: Params, damping: float
) -> float:
    """The series scale s (LiSSA's ``scale``; Neumann's 1 / ``alpha``) after checking it converges.

    Both series iterate ``I - (C + damping I) / s``, which converges only if every eigenvalue
    of ``C + damping I`` lies in (0, 2 s). The largest is found by power iteration; an unset
    scale becomes it, a set one that is too small is refused.

    Raises:
        ConfigError: The given step makes the series diverge (naming both numbers).
    """
    from clbench.errors import ConfigError

    top = largest_eigenvalue(matvec, params) + damping
    if scale is None:
        return abs(top)
    if not 0 < top < 2 * scale:
        given, bound = (scale, f"> {top / 2:.4g}") if name == "scale" else (1 / scale, f"< {2 / top:.4g}")
        raise ConfigError(
            f"{estimator}: {name}={given:g} makes the series diverge: the damped curvature's largest eigenvalue is "
            f"{top:.4g}, so {name} must be {bound}; leave {name} unset to derive it"
        )
    return scale


@dataclass(frozen=True)
class LissaArgs:
    """Arguments of the LiSSA estimator."""

    hessian: Curvature = field(default="full", metadata={"help": "full Hessian or Gauss-Newton"})
    damping: float = field(default=0.01, metadata={"help": "added to the diagonal"})
    scale: float | None = field(
        default=None,
        metadata={
            "help": "series scale; must exceed half the damped curvature's largest eigenvalue (checked by power "
            "iteration); default that eigenvalue"
        },
    )
    depth: int = field(default=100, metadata={"help": "recursion steps"})
    repeats: int = field(default=1, metadata={"help": "independent recursions averaged"})
    batch_size: int | None = field(default=None, metadata={"help": "mini-batch per curvature product; None: all"})


class LissaEstimator(InverseCurvatureEstimator[LissaArgs]):
    """LiSSA with optional mini-batch curvature products."""

    name = "lissa"

    def _solver(self, model: nn.Module, params: Params, train: Batch, lr: float) -> Callable[[Params], Params]:
        n = train[1].shape[0]
        full = self._matvec(model, params, train)
        size = self.args.batch_size

        def matvec_for_batch(step: int) -> MatVec:
            if size is None or size >= n:
                return full
            chosen = torch.randint(0, n, (size,), device=train[1].device)
            return self._matvec(model, params, (train[0][chosen], train[1][chosen]))

        scale = checked_step("lissa", "scale", self.args.scale, full, params, self.args.damping)
        return ihvp_lissa_fn(matvec_for_batch, self.args.damping, scale, self.args.depth, self.args.repeats)


@dataclass(frozen=True)
class NeumannArgs:
    """Arguments of the truncated Neumann-series estimator (Lorraine et al. 2020)."""

    hessian: Curvature = field(default="full", metadata={"help": "full Hessian or Gauss-Newton"})
    damping: float = field(default=0.01, metadata={"help": "added to the diagonal"})
    alpha: float | None = field(
        default=None,
        metadata={
            "help": "series step; needs alpha < 2 / the damped curvature's largest eigenvalue (checked by power "
            "iteration); default 1 / that eigenvalue"
        },
    )
    terms: int = field(default=50, metadata={"help": "number of series terms"})


class NeumannEstimator(InverseCurvatureEstimator[NeumannArgs]):
    """H^-1 ~= alpha sum_j (I - alpha H)^j."""

    name = "neumann"

    def _solver(self, model: nn.Module, params: Params, train: Batch, lr: float) -> Callable[[Params], Params]:
        matvec = self._matvec(model, params, train)
        scale = checked_step(
            "neumann",
            "alpha",
            None if self.args.alpha is None else 1 / self.args.alpha,
            matvec,
            params,
            self.args.damping,
        )
        return ihvp_neumann_fn(matvec, self.args.damping, 1 / scale, self.args.terms)


@dataclass(frozen=True)
class IdentityArgs:
    """Arguments of the identity approximation."""

    scale: float | None = field(
        default=None, metadata={"help": "H^-1 ~= scale * I; default the learning rate (one SGD step)"}
    )


class IdentityEstimator(InverseCurvatureEstimator[IdentityArgs]):
    """H^-1 ~= scale * I: ``I_i = -scale * grad L^T grad l_i``.

    This is the inverse-Hessian approximation of Luketina et al. (2016), whose
    hyper-gradient looks one SGD step ahead (scale = learning rate), and of Larsen et al.
    (1996), who take the Hessian as the identity: influence becomes the (scaled) gradient
    alignment of each training example with the measurement loss.
    """

    name = "identity"

    def _solver(self, model: nn.Module, params: Params, train: Batch, lr: float) -> Callable[[Params], Params]:
        scale = self.args.scale if self.args.scale is not None else lr
        return lambda v: {k: scale * t for k, t in v.items()}


@dataclass(frozen=True)
class MetaArgs:
    """Arguments of MetaSP's pseudo-update influence."""

    steps: int = field(default=1, metadata={"help": "SGD pseudo steps differentiated through"})
    lr: float | None = field(default=None, metadata={"help": "pseudo-step size; default the learning rate"})


class MetaEstimator(Estimator):
    """MetaSP's pseudo-update influence.

    d L(theta_K(eps)) / d eps after K SGD pseudo steps on the (1 + eps)-weighted mean
    training loss (:func:`clbench.influence.meta.meta_influence`).
    """

    name = "meta"

    def __init__(self, args: MetaArgs) -> None:
        """Create the estimator."""
        self.args = args

    def __call__(self, model: nn.Module, train: Batch, measurements: list[Batch], lr: float) -> InfluenceResult:
        """See :class:`Estimator`."""
        step = self.args.lr if self.args.lr is not None else lr

        def compute() -> tuple[tuple[torch.Tensor, ...], tuple[float, ...]]:
            result = meta_influence(model, train, measurements, lr=step, steps=self.args.steps)
            return result.influence, result.measurement_loss

        return _timed(compute)


@dataclass(frozen=True)
class MetaLastLayerArgs:
    """Arguments of the classifier-only pseudo-update influence."""

    lr: float | None = field(default=None, metadata={"help": "pseudo-step size; default the caller's lr"})


class MetaLastLayerEstimator(Estimator):
    """MetaSP's pseudo-update influence with the classifier as the only trainable layer.

    Closed form from features (:mod:`clbench.influence.lastlayer`); BatchNorm normalises
    each set by its own statistics, running statistics untouched.
    """

    name = "meta_lastlayer"

    def __init__(self, args: MetaLastLayerArgs) -> None:
        """Create the estimator."""
        self.args = args

    def __call__(self, model: nn.Module, train: Batch, measurements: list[Batch], lr: float) -> InfluenceResult:
        """See :class:`Estimator`."""
        from clbench.influence.lastlayer import classifier_influence, features_of

        step = self.args.lr if self.args.lr is not None else lr

        def compute() -> tuple[tuple[torch.Tensor, ...], tuple[float, ...]]:
            result = classifier_influence(model, (features_of(model, train[0]), train[1]), measurements, step)
            return result.influence, result.measurement_loss

        return _timed(compute)


for _cls, _args, _help in (
    (ExactEstimator, ExactArgs, "dense (H + damping I)^-1, the ground truth for small models"),
    (CGEstimator, CGArgs, "conjugate gradients"),
    (LissaEstimator, LissaArgs, "LiSSA stochastic recursion"),
    (NeumannEstimator, NeumannArgs, "truncated Neumann series (Lorraine et al. 2020)"),
    (IdentityEstimator, IdentityArgs, "H^-1 ~= lr * I (Luketina et al. 2016; Larsen et al. 1996)"),
    (MetaEstimator, MetaArgs, "MetaSP's exact pseudo-update influence"),
    (MetaLastLayerEstimator, MetaLastLayerArgs, "MetaSP's pseudo-update influence, classifier layer only"),
):
    ESTIMATORS.register(_cls.name, args=_args, help=_help)(_cls)


def make_estimator(name: str, args: dict[str, Any] | None = None) -> Estimator:
    """Build a registered estimator from raw arguments (validated)."""
    from clbench.config import from_mapping

    entry = ESTIMATORS.get(name)
    return entry.factory(from_mapping(entry.args, args or {}, f"estimator {name}"))
