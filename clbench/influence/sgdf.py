"""Regularity tangents by SGD with forward-mode differentiation (SGDF; Eaton 2024/25).

Train on L(theta) + (damping/2) ||theta||^2 + s R(theta) and carry, alongside the
parameters, the tangent v = d theta / d s at s = 0 by forward-mode differentiation of the
SGD update::

    theta_{t+1} = theta_t - lr (grad L_B(theta_t) + damping theta_t)
    v_{t+1}     = v_t - lr ((H_B(theta_t) + damping I) v_t + grad R(theta_t))

At a fixed point of training, v* = -(H + damping I)^-1 grad R: the *regularity tangent*
d theta*/ds, the same quantity LiSSA and the exact solver compute. Each example z then
gets the score grad l(z) . v* (and its square), how strongly its loss responds to the
regulariser. The default regulariser is R = ||theta||^2 / 2 (grad R = theta).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import grad, jvp

from clbench.influence.functional import (
    Batch,
    Params,
    batchnorm_stats_frozen,
    per_example_loss_fn,
    trainable_params,
)

Regulariser = Callable[[Params], Params]


def l2_direction(params: Params) -> Params:
    """Grad of ||theta||^2 / 2."""
    return dict(params)


@dataclass
class TangentState:
    """Parameters and regularity tangent after SGDF steps."""

    params: Params
    tangent: Params


def sgdf(
    model: nn.Module,
    train: Batch,
    lr: float,
    steps: int,
    damping: float = 0.0,
    batch_size: int | None = None,
    regulariser: Regulariser = l2_direction,
    start: TangentState | None = None,
    update_params: bool = True,
    seed: int = 0,
) -> TangentState:
    """Run ``steps`` SGDF steps from the model's weights (or ``start``).

    With ``update_params=False`` the parameters stay fixed and only the tangent iterates,
    which isolates the fixed-point equation at the current weights.
    """
    loss_vec = per_example_loss_fn(model)
    x, y = train
    n = y.shape[0]
    generator = torch.Generator().manual_seed(seed)
    with batchnorm_stats_frozen(model):
        params = start.params if start else trainable_params(model)
        tangent = start.tangent if start else {k: torch.zeros_like(v) for k, v in params.items()}
        for _ in range(steps):
            if batch_size is None or batch_size >= n:
                xb, yb = x, y
            else:
                index = torch.randperm(n, generator=generator)[:batch_size].to(y.device)
                xb, yb = x[index], y[index]

            def gradient(p: Params, xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> Params:
                return grad(lambda q: loss_vec(q, xb, yb).mean())(p)  # type: ignore[no-any-return]

            g, hv = jvp(gradient, (params,), (tangent,))[:2]
            rho = regulariser(params)
            tangent = {k: tangent[k] - lr * (hv[k] + damping * tangent[k] + rho[k]) for k in params}
            if update_params:
                params = {k: params[k] - lr * (g[k] + damping * params[k]) for k in params}
    return TangentState(params=params, tangent=tangent)


def regularity_scores(model: nn.Module, state: TangentState, data: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example score grad l(z) . v and its square."""
    loss_vec = per_example_loss_fn(model)
    with batchnorm_stats_frozen(model):
        score = jvp(lambda p: loss_vec(p, *data), (state.params,), (state.tangent,))[1].detach()
    return score, score**2
