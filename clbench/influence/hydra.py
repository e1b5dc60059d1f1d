"""HYDRA trajectory hypergradients (Chen et al., AAAI 2021).

Training with SGD, momentum mu and weight decay lam on per-example weights (1 + eps_i)::

    m_{t+1} = mu m_t + g_t(eps) + lam theta_t,     theta_{t+1} = theta_t - lr m_{t+1},
    g_t(eps) = (1/|B_t|) sum_{j in B_t} (1 + eps_j) grad l_j(theta_t)

(PyTorch's ``SGD`` update). Differentiating at eps = 0 gives, for every tracked example i,

    dm_{t+1}  = mu dm_t + H_t dtheta_t + lam dtheta_t + [i in B_t] grad l_i(theta_t) / |B_t|
    dtheta_{t+1} = dtheta_t - lr dm_{t+1}

with H_t the Hessian of the batch mean loss (the *Hessian-aware* recurrence, one HVP per
tracked example and step); the *fast* approximation drops the H_t term. The influence of
example i on a test loss is ``grad L_test(theta_T) . dtheta_T/deps_i`` (positive =
harmful) and HYDRA's contribution ``C(i) = -(1/N) grad L_test(theta_T) . dtheta_T/deps_i``.

HYDRA's code (``cyyever/aaai_hydra``: its hook reads the hyper-parameter ``weight_decay``,
1.0 for Fashion-MNIST, while its SGD is built with 1/N of it) runs the recurrence with a
lam N times the training's; ``HydraArgs.recurrence_weight_decay`` reproduces that. It is
then no longer the derivative of the run trained: with lr 0.01 and mu 0.9 a visit's
contribution loses about lr lam / (1 - mu) = 10 % of itself an update, so both recurrences
remember the last few dozen updates only.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import grad, jvp, vmap

from clbench.influence.estimators import ESTIMATORS, Estimator
from clbench.influence.functional import (
    Batch,
    InfluenceResult,
    Params,
    batchnorm_stats_frozen,
    per_example_loss_fn,
    trainable_params,
)


@dataclass(frozen=True)
class HydraArgs:
    """Arguments of HYDRA: the training run it follows and which recurrence it uses."""

    hessian_aware: bool = field(default=True, metadata={"help": "include the H_t term (one HVP per example a step)"})
    epochs: int = field(default=1, metadata={"help": "training epochs followed"})
    batch_size: int = field(default=32, metadata={"help": "mini-batch size"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=5e-4, metadata={"help": "SGD weight decay"})
    seed: int = field(default=0, metadata={"help": "seed of the batch order"})
    recurrence_weight_decay: float | None = field(
        default=None,
        metadata={
            "help": "lam of the hypergradient recurrences only; None = weight_decay (the derivative of the run "
            "trained). HYDRA's code uses its hyper-parameter 1.0 there while its SGD gets 1/N of it"
        },
    )

    @property
    def recurrence_decay(self) -> float:
        """The lam the recurrences use (the training's unless ``recurrence_weight_decay`` is set)."""
        return self.weight_decay if self.recurrence_weight_decay is None else self.recurrence_weight_decay


@dataclass
class Trajectory:
    """The end of a tracked training run.

    Attributes:
        params: theta_T.
        tangents: d theta_T / d eps_i, stacked on a leading axis of size N.
    """

    params: Params
    tangents: Params


def train_with_hypergradients(model: nn.Module, train: Batch, lr: float, args: HydraArgs) -> Trajectory:
    """Train functionally from the model's current weights, tracking d theta / d eps_i."""
    loss_vec = per_example_loss_fn(model)
    x, y = train
    n = y.shape[0]
    generator = torch.Generator().manual_seed(args.seed)
    with batchnorm_stats_frozen(model):
        params = trainable_params(model)
        momentum = {k: torch.zeros_like(v) for k, v in params.items()}
        d_theta = {k: torch.zeros((n, *v.shape), dtype=v.dtype, device=v.device) for k, v in params.items()}
        d_momentum = {k: torch.zeros_like(v) for k, v in d_theta.items()}
        for _ in range(args.epochs):
            order = torch.randperm(n, generator=generator).to(y.device)
            for start in range(0, n, args.batch_size):
                index = order[start : start + args.batch_size]
                xb, yb = x[index], y[index]
                b = len(index)

                def batch_loss(p: Params, xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> torch.Tensor:
                    return loss_vec(p, xb, yb).mean()

                g = grad(batch_loss)(params)
                per_example = vmap(grad(lambda p, xi, yi: loss_vec(p, xi[None], yi[None])[0]), in_dims=(None, 0, 0))(
                    params, xb, yb
                )
                if args.hessian_aware:
                    theta = params
                    curvature = vmap(lambda t, theta=theta: jvp(grad(batch_loss), (theta,), (t,))[1])(d_theta)
                for k in params:
                    source = torch.zeros_like(d_theta[k])
                    source[index] = per_example[k] / b
                    d_momentum[k] = args.momentum * d_momentum[k] + args.recurrence_decay * d_theta[k] + source
                    if args.hessian_aware:
                        d_momentum[k] = d_momentum[k] + curvature[k]
                    d_theta[k] = d_theta[k] - lr * d_momentum[k]
                    momentum[k] = args.momentum * momentum[k] + g[k] + args.weight_decay * params[k]
                params = {k: params[k] - lr * momentum[k] for k in params}
    return Trajectory(params=params, tangents=d_theta)


def trajectory_influence(model: nn.Module, trajectory: Trajectory, measurement: Batch) -> torch.Tensor:
    """Grad L(theta_T) . d theta_T / d eps_i for every tracked example (positive = harmful)."""
    loss_vec = per_example_loss_fn(model)
    with batchnorm_stats_frozen(model):
        g = grad(lambda p: loss_vec(p, *measurement).mean())(trajectory.params)
    total: torch.Tensor = sum(  # type: ignore[assignment]
        (trajectory.tangents[k].flatten(1) @ g[k].reshape(-1)) for k in g
    )
    return total


def trajectory_influence_autograd(
    model: nn.Module, train: Batch, lr: float, args: HydraArgs, measurement: Batch
) -> torch.Tensor:
    """The definition: autograd through the unrolled weighted training run (small runs only)."""
    loss_vec = per_example_loss_fn(model)
    x, y = train
    n = y.shape[0]
    generator = torch.Generator().manual_seed(args.seed)
    with batchnorm_stats_frozen(model):
        params = {k: v.clone().requires_grad_(True) for k, v in trainable_params(model).items()}
        dtype = next(iter(params.values())).dtype
        eps = torch.zeros(n, dtype=dtype, device=y.device, requires_grad=True)
        start_params = params
        momentum = {k: torch.zeros_like(v) for k, v in params.items()}
        for _ in range(args.epochs):
            order = torch.randperm(n, generator=generator).to(y.device)
            for start in range(0, n, args.batch_size):
                index = order[start : start + args.batch_size]
                weighted = ((1 + eps[index]) * loss_vec(params, x[index], y[index])).mean()
                grads = torch.autograd.grad(weighted, list(params.values()), create_graph=True)
                momentum = {
                    k: args.momentum * momentum[k] + g + args.weight_decay * params[k]
                    for k, g in zip(params, grads, strict=True)
                }
                params = {k: params[k] - lr * momentum[k] for k in params}
        test_loss = loss_vec(params, *measurement).mean()
        (d_eps,) = torch.autograd.grad(test_loss, eps)
    del start_params
    return d_eps.detach()


def impulse_response(steps: int, lr: float, momentum: float, weight_decay: float) -> torch.Tensor:
    """h[k]: d theta after k updates of a unit source injected into the momentum (fast recurrence).

    Without the Hessian term the recurrence is the same scalar linear system in every
    coordinate, so a source s at update t reaches theta_T as h[T - t] s (h[1] = -lr).
    """
    h = torch.zeros(steps + 1, dtype=torch.float64)
    d_momentum, d_theta = 1.0, -lr
    for k in range(1, steps + 1):
        if k > 1:
            d_momentum = momentum * d_momentum + weight_decay * d_theta
            d_theta = d_theta - lr * d_momentum
        h[k] = d_theta
    return h


Schedule = float | Callable[[int, Params], float]
"""A constant learning rate, or ``lr(epoch, theta)`` asked at the start of every epoch."""


def _replay(
    model: nn.Module,
    train: Batch,
    lr: Schedule,
    args: HydraArgs,
    visit: Callable[[int, Params, torch.Tensor, float], None],
) -> tuple[Params, int]:
    """The SGD run :func:`train_with_hypergradients` follows; ``visit(t, theta_t, batch, lr_t)`` before update t."""
    loss_vec = per_example_loss_fn(model)
    x, y = train
    generator = torch.Generator().manual_seed(args.seed)
    params = trainable_params(model)
    velocity = {k: torch.zeros_like(v) for k, v in params.items()}
    step = 0
    for epoch in range(args.epochs):
        rate = lr(epoch, params) if callable(lr) else lr
        order = torch.randperm(y.shape[0], generator=generator).to(y.device)
        for start in range(0, y.shape[0], args.batch_size):
            index = order[start : start + args.batch_size]
            visit(step, params, index, rate)
            g = grad(lambda p, index=index: loss_vec(p, x[index], y[index]).mean())(params)
            velocity = {k: args.momentum * velocity[k] + g[k] + args.weight_decay * params[k] for k in params}
            params = {k: params[k] - rate * velocity[k] for k in params}
            step += 1
    return params, step


def fast_trajectory_influence(model: nn.Module, train: Batch, lr: float, args: HydraArgs, measurement: Batch) -> Any:
    """HYDRA's fast influence (no Hessian term) in O(N + P) memory: two passes over the same run.

    Equals ``trajectory_influence(model, train_with_hypergradients(...), measurement)`` with
    ``hessian_aware=False`` (tested), without the N tangents of the parameters' size: the
    first pass finds theta_T and the measurement gradient g there, the second replays the
    run and adds, at each update t, h[T - t] / |B_t| times every batch example's directional
    derivative of its loss along g (one JVP a step; :func:`impulse_response`).
    """
    loss_vec = per_example_loss_fn(model)
    x, y = train
    with batchnorm_stats_frozen(model):
        final, steps = _replay(model, train, lr, args, lambda t, p, index, rate: None)
        g = grad(lambda p: loss_vec(p, *measurement).mean())(final)
        h = impulse_response(steps, lr, args.momentum, args.recurrence_decay)
        influence = torch.zeros(y.shape[0], dtype=x.dtype, device=y.device)

        def accumulate(t: int, params: Params, index: torch.Tensor, rate: float) -> None:
            directional = jvp(lambda p: loss_vec(p, x[index], y[index]), (params,), (g,))[1]
            influence.index_add_(0, index, directional.detach() * float(h[steps - t]) / len(index))

        _replay(model, train, lr, args, accumulate)
    return influence


def fast_trajectory_influence_per_point(
    model: nn.Module, train: Batch, lr: float, args: HydraArgs, points: Batch
) -> torch.Tensor:
    """(N, K) HYDRA fast influence of every training example on each of K measurement points' losses.

    Column k equals :func:`fast_trajectory_influence` with the single point k as the
    measurement (tested). One replay accumulates, per training example, the run's weighted
    sum of its gradients ``v_i = sum_t h[T - t] / |B_t| grad l_i(theta_t)`` (HYDRA's fast
    tangent, an (N, P) matrix: small training sets only), then ``influence = V G^T`` with G
    the K points' loss gradients at theta_T.
    """
    loss_vec = per_example_loss_fn(model)
    x, y = train
    with batchnorm_stats_frozen(model):
        final, steps = _replay(model, train, lr, args, lambda t, p, index, rate: None)
        h = impulse_response(steps, lr, args.momentum, args.recurrence_decay)
        names = list(final)
        tangents = torch.zeros(y.shape[0], sum(final[k].numel() for k in names), dtype=x.dtype, device=y.device)

        def one_gradient(params: Params, xi: torch.Tensor, yi: torch.Tensor) -> Params:
            return grad(lambda p: loss_vec(p, xi[None], yi[None]).sum())(params)  # type: ignore[no-any-return]

        def flat_gradients(params: Params, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
            grads = vmap(one_gradient, in_dims=(None, 0, 0))(params, xs, ys)
            return torch.cat([grads[k].reshape(xs.shape[0], -1) for k in names], dim=1)

        def accumulate(t: int, params: Params, index: torch.Tensor, rate: float) -> None:
            weight = float(h[steps - t]) / len(index)
            tangents.index_add_(0, index, weight * flat_gradients(params, x[index], y[index]).detach())

        _replay(model, train, lr, args, accumulate)
        point_gradients = flat_gradients(final, *points).detach()
    return tangents @ point_gradients.T


@dataclass
class SgdRecord:
    """An SGD run with momentum as the reverse pass reads it (one entry a update).

    Attributes:
        params: theta_0 .. theta_T: theta_t is the start of update t, theta_T the end of the run.
        batches: the training indices of update t.
        lrs: the learning rate of update t (a schedule may change it).
        momentum: SGD momentum mu.
        weight_decay: the recurrences' weight decay lam (the SGD run's, unless
            ``HydraArgs.recurrence_weight_decay`` says otherwise).
    """

    params: list[Params] = field(default_factory=list)
    batches: list[torch.Tensor] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    momentum: float = 0.9
    weight_decay: float = 0.0


def record_sgd(model: nn.Module, train: Batch, args: HydraArgs, lr: Schedule) -> SgdRecord:
    """The run :func:`train_with_hypergradients` follows, recorded for the reverse pass.

    ``lr`` is a constant or ``lr(epoch, theta)`` (a schedule such as halving on plateaus
    reads the weights at the start of each epoch). The model's own parameters are left as
    they are.
    """
    record = SgdRecord(momentum=args.momentum, weight_decay=args.recurrence_decay)

    def keep(t: int, params: Params, index: torch.Tensor, rate: float) -> None:
        record.params.append(params)
        record.batches.append(index)
        record.lrs.append(rate)

    with batchnorm_stats_frozen(model):
        final, _ = _replay(model, train, lr, args, keep)
    record.params.append(final)
    return record


def reverse_trajectory_influence(
    model: nn.Module, train: Batch, record: SgdRecord, measurement: Batch, steps: int | None = None
) -> dict[str, torch.Tensor]:
    """HYDRA's Hessian-aware and fast influence of every training example, by one reverse pass.

    The influence on the measurement's mean loss after the first ``steps`` updates of
    ``record`` (default all), of every example of ``train``, with and without the H_t
    term: the adjoint of the module docstring's recurrence. With u_t = a_m - lr_t a_theta
    (a_theta = dL/dtheta_{t+1}, a_m = dL/dm_{t+1}), going back from a_theta = grad L(theta_T),
    a_m = 0::

        dL/deps_i += u_t . grad l_i(theta_t) / |B_t|      for i in B_t
        a_theta   <- a_theta + lam u_t + H_t u_t           (fast: no H_t u_t)
        a_m       <- mu u_t

    One HVP and two JVPs a step instead of one HVP per tracked example and step (the
    forward recurrence of :func:`train_with_hypergradients`, which it equals: tested), so
    every training example is followed; the price is theta_t kept for every update.

    Returns:
        ``{"hessian_aware": (N,), "fast": (N,)}``, positive = harmful.
    """
    loss_vec = per_example_loss_fn(model)
    x, y = train
    last = len(record.batches) if steps is None else steps
    if not 0 <= last <= len(record.batches):
        raise ValueError(f"steps={steps}: the record holds {len(record.batches)} updates")
    with batchnorm_stats_frozen(model):
        g = grad(lambda p: loss_vec(p, *measurement).mean())(record.params[last])
        zeros = {k: torch.zeros_like(v) for k, v in g.items()}
        adjoints = {"hessian_aware": (g, zeros), "fast": (g, zeros)}
        influence = {name: torch.zeros(y.shape[0], dtype=x.dtype, device=y.device) for name in adjoints}
        for t in range(last - 1, -1, -1):
            index = record.batches[t]
            batch = (record.params[t], x[index], y[index])
            for name, (a_theta, a_m) in adjoints.items():
                directional, adjoints[name] = _adjoint_step(
                    loss_vec, batch, record, t, a_theta, a_m, name == "hessian_aware"
                )
                influence[name].index_add_(0, index, directional.detach() / len(index))
    return influence


def _adjoint_step(
    loss_vec: Any,
    batch: tuple[Params, torch.Tensor, torch.Tensor],
    record: SgdRecord,
    t: int,
    a_theta: Params,
    a_m: Params,
    hessian_aware: bool,
) -> tuple[torch.Tensor, tuple[Params, Params]]:
    """Update t backwards: the batch's loss derivatives along u_t and the adjoints before the update."""
    theta, xb, yb = batch
    u = {k: a_m[k] - record.lrs[t] * a_theta[k] for k in a_theta}
    if hessian_aware:
        curvature, directional = _hvp_and_directional(loss_vec, theta, xb, yb, u)
        a_theta = {k: a_theta[k] + record.weight_decay * u[k] + curvature[k] for k in a_theta}
    else:
        directional = jvp(lambda p: loss_vec(p, xb, yb), (theta,), (u,))[1]
        a_theta = {k: a_theta[k] + record.weight_decay * u[k] for k in a_theta}
    return directional, (a_theta, {k: record.momentum * u[k] for k in u})


def _hvp_and_directional(
    loss_vec: Any, theta: Params, x: torch.Tensor, y: torch.Tensor, tangent: Params
) -> tuple[Params, torch.Tensor]:
    """H tangent for the batch mean loss and each example's loss derivative along tangent, in one pass."""

    def mean_and_losses(q: Params) -> tuple[torch.Tensor, torch.Tensor]:
        losses = loss_vec(q, x, y)
        return losses.mean(), losses

    def gradient_and_losses(p: Params) -> tuple[Params, torch.Tensor]:
        return grad(mean_and_losses, has_aux=True)(p)  # type: ignore[no-any-return]

    tangents_out = jvp(gradient_and_losses, (theta,), (tangent,))[1]
    return tangents_out[0], tangents_out[1]


class HydraEstimator(Estimator):
    """Influence along a training run from the model's current weights (HYDRA)."""

    name = "hydra"

    def __init__(self, args: HydraArgs) -> None:
        """Create the estimator."""
        self.args = args

    def __call__(self, model: nn.Module, train: Batch, measurements: list[Batch], lr: float) -> InfluenceResult:
        """See :class:`Estimator`; the model itself is not trained."""
        tic = time.perf_counter()
        work = copy.deepcopy(model)
        trajectory = train_with_hypergradients(work, train, lr, self.args)
        loss_vec = per_example_loss_fn(work)
        influences, losses = [], []
        for measurement in measurements:
            influences.append(trajectory_influence(work, trajectory, measurement))
            with torch.no_grad(), batchnorm_stats_frozen(work):
                losses.append(float(loss_vec(trajectory.params, *measurement).mean()))
        return InfluenceResult(tuple(influences), tuple(losses), time.perf_counter() - tic)


def hydra_contribution(influence: torch.Tensor) -> torch.Tensor:
    """HYDRA's contribution C(i) = -(1/N) x influence (positive = helpful)."""
    return -influence / influence.numel()


ESTIMATORS.register("hydra", args=HydraArgs, help="HYDRA trajectory hypergradients (fast or Hessian-aware)")(
    HydraEstimator
)
