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
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

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
                    d_momentum[k] = args.momentum * d_momentum[k] + args.weight_decay * d_theta[k] + source
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
