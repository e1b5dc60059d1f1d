"""MetaSP's pseudo-update influence: exact, without a second-order graph.

Weight example i of a training batch B by (1 + eps_i) and take ``K`` SGD pseudo-steps of
size ``lr`` on the weighted mean loss, starting at theta::

    theta_{k+1} = theta_k - lr * grad (1/|B|) sum_i (1 + eps_i) l_i(theta_k)

The influence of example i on a measurement loss L_V (a validation set's mean loss) is
``I_i = d L_V(theta_K) / d eps_i`` at eps = 0. **Positive influence is harmful**:
up-weighting the example would raise the measurement loss; negative is beneficial.

Reverse accumulation over the unrolled steps gives it exactly::

    lam = grad L_V(theta_K)
    for k = K-1 .. 0:
        I   -= (lr / |B|) * J_k lam           # J_k: per-example loss Jacobian at theta_k
        lam -= lr * H_k lam                   # H_k: Hessian of the batch mean loss (k > 0)

``J_k lam`` is one forward-mode JVP of the per-example loss vector, ``H_k lam`` one
forward-over-reverse HVP. For K = 1 this is the closed form
``I_i = -(lr/|B|) grad l_i(theta)^T grad L_V(theta_hat)``: one pseudo step, one gradient
of each measurement loss, one JVP each. Several measurement sets share the pseudo steps.

BatchNorm normalises with batch statistics (train mode) and its running statistics are
left untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, jvp, vmap

from clbench.influence.functional import (
    Batch,
    InfluenceResult,
    LossVector,
    Params,
    batchnorm_stats_frozen,
    mean_loss_gradient,
    per_example_loss_fn,
    trainable_params,
    tree_axpy,
)


def _mean_loss(loss_vec: LossVector) -> LossVector:
    def mean(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_vec(params, x, y).mean()

    return mean


def _pseudo_trajectory(loss_vec: LossVector, params: Params, batch: Batch, lr: float, steps: int) -> list[Params]:
    """theta_0 .. theta_K of plain SGD on the batch mean loss (eps = 0)."""
    batch_grad = grad(_mean_loss(loss_vec))
    trajectory = [params]
    for _ in range(steps):
        g = batch_grad(trajectory[-1], *batch)
        trajectory.append({k: trajectory[-1][k] - lr * g[k] for k in params})
    return trajectory


def meta_influence(
    model: nn.Module,
    batch: Batch,
    measurements: Sequence[Batch],
    lr: float,
    steps: int = 1,
) -> InfluenceResult:
    """Exact influence of each example of ``batch`` on each measurement set's loss.

    The loss is measured after ``steps`` pseudo SGD steps of size ``lr`` (see the module
    docstring).

    Args:
        model: The network; its parameters and buffers are not modified.
        batch: (x, y) of the training batch B.
        measurements: (x, y) of each measurement (validation) set.
        lr: Pseudo-step size (MetaSP: the optimiser's learning rate).
        steps: Number of unrolled pseudo steps K >= 1.

    Returns:
        Influence vectors and the measurement losses at theta_K.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    loss_vec = per_example_loss_fn(model)
    mean_loss = _mean_loss(loss_vec)
    n = batch[0].shape[0]
    with batchnorm_stats_frozen(model):
        trajectory = _pseudo_trajectory(loss_vec, trainable_params(model), batch, lr, steps)
        final = trajectory[-1]

        adjoints, losses = [], []
        for x_val, y_val in measurements:
            val_grad, val_loss = mean_loss_gradient(loss_vec, final, x_val, y_val)
            adjoints.append(val_grad)
            losses.append(val_loss)
        # One adjoint per measurement set, stacked on a leading axis: vmap batches the
        # tangent computations while the primal forward of each JVP runs once.
        lam = {name: torch.stack([a[name] for a in adjoints]) for name in final}
        batch_grad = grad(mean_loss)
        total = torch.zeros(len(adjoints), n, device=batch[0].device, dtype=next(iter(final.values())).dtype)
        for k in range(steps - 1, -1, -1):
            theta_k = trajectory[k]

            def per_example_directional(tangent: Params, theta: Params = theta_k) -> torch.Tensor:
                directional: torch.Tensor = jvp(lambda p: loss_vec(p, *batch), (theta,), (tangent,))[1]
                return directional

            total = total - (lr / n) * vmap(per_example_directional)(lam).detach()
            if k > 0:

                def hvp(tangent: Params, theta: Params = theta_k) -> Params:
                    return jvp(lambda p: batch_grad(p, *batch), (theta,), (tangent,))[1]  # type: ignore[no-any-return]

                curvature = vmap(hvp)(lam)
                lam = {name: lam[name] - lr * curvature[name] for name in lam}
        influences = list(total.unbind(0))
    return InfluenceResult(influence=tuple(influences), measurement_loss=tuple(losses))


def meta_influence_autograd(
    model: nn.Module,
    batch: Batch,
    measurements: Sequence[Batch],
    lr: float,
    steps: int = 1,
) -> InfluenceResult:
    """The definition of the influence, by autograd (double backward).

    Differentiates each measurement loss through the unrolled weighted pseudo steps with
    respect to eps. Slow; the reference for :func:`meta_influence` and the way the paper's
    code computes it.
    """
    loss_vec = per_example_loss_fn(model)
    n = batch[0].shape[0]
    with batchnorm_stats_frozen(model):
        influences = []
        losses = []
        for x_val, y_val in measurements:
            params = {k: v.clone().requires_grad_(True) for k, v in trainable_params(model).items()}
            dtype = next(iter(params.values())).dtype
            eps = torch.zeros(n, device=batch[0].device, dtype=dtype, requires_grad=True)
            for _ in range(steps):
                weighted = ((1 + eps) * loss_vec(params, *batch)).mean()
                grads = torch.autograd.grad(weighted, list(params.values()), create_graph=True)
                params = {k: v - lr * g for (k, v), g in zip(params.items(), grads, strict=True)}
            val_loss = loss_vec(params, x_val, y_val).mean()
            (d_eps,) = torch.autograd.grad(val_loss, eps)
            influences.append(d_eps.detach())
            losses.append(float(val_loss.detach()))
    return InfluenceResult(influence=tuple(influences), measurement_loss=tuple(losses))


def validation_gradients(
    loss_vec: LossVector, params: Params, measurements: Sequence[Batch], batched: bool
) -> tuple[list[Params], list[float]]:
    """Gradient and value of each measurement set's mean loss at ``params``.

    With ``batched``, sets of one size go through one ``vmap``-ed pass: exact, because
    under ``vmap`` train-mode BatchNorm (running statistics frozen) normalises each set by
    its own statistics, as separate passes do. It is kept for ``clbench bench step``'s
    comparison only: on CPU it is slower than one pass a set (two sets of 50 CIFAR images,
    ResNet-18 nf = 20, one thread: 1.70 s against 1.13 s), and ``vmap`` of a gradient fails
    under CPU autocast.
    """
    sizes = {int(x.shape[0]) for x, _ in measurements}
    if batched and len(measurements) > 1 and len(sizes) == 1:

        def value_and_grad(x: torch.Tensor, y: torch.Tensor) -> tuple[Params, torch.Tensor]:
            return grad_and_value(lambda p: loss_vec(p, x, y).mean())(params)  # type: ignore[no-any-return]

        xs = torch.stack([x for x, _ in measurements])
        ys = torch.stack([y for _, y in measurements])
        grads, values = vmap(value_and_grad)(xs, ys)
        return [{k: g[i] for k, g in grads.items()} for i in range(len(measurements))], values.tolist()
    pairs = [mean_loss_gradient(loss_vec, params, x, y) for x, y in measurements]
    return [g for g, _ in pairs], [v for _, v in pairs]


def _bf16_loss_vector(model: nn.Module) -> LossVector:
    def loss(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, params, (x,), strict=False)
        return F.cross_entropy(logits.float(), y, reduction="none")

    return loss


def per_example_directional(
    model: nn.Module, params: Params, batch: Batch, tangents: Params, low_precision: bool
) -> torch.Tensor:
    """(T, |B|) directional derivatives of the per-example losses along T stacked tangents.

    In low precision the JVP runs on bfloat16 parameters, tangents and inputs (no autocast:
    CPU autocast casts a convolution's weight but not its tangent, and forward-mode AD
    then fails on the dtype mismatch), with losses in float32.
    """
    # Contiguous tensors: forward-mode convolutions on channels-last ones are slower on CPU.
    dtype = torch.bfloat16 if low_precision else None
    params = {k: v.to(dtype=dtype, memory_format=torch.contiguous_format) for k, v in params.items()}
    tangents = {k: v.to(dtype=dtype, memory_format=torch.contiguous_format) for k, v in tangents.items()}
    x, y = batch[0].to(dtype=dtype, memory_format=torch.contiguous_format), batch[1]
    loss_vec = _bf16_loss_vector(model) if low_precision else per_example_loss_fn(model)

    def along(tangent: Params) -> torch.Tensor:
        directional: torch.Tensor = jvp(lambda p: loss_vec(p, x, y), (params,), (tangent,))[1]
        return directional

    return vmap(along)(tangents).float()


def one_step_meta_influence(
    model: nn.Module,
    batch: Batch,
    measurements: Sequence[Batch],
    lr: float,
    pseudo_gradient: Params,
    low_precision: bool = False,
    parts: Sequence[int] | None = None,
) -> InfluenceResult:
    """:func:`meta_influence` for one pseudo step, given the batch's mean-loss gradient at theta.

    The gradient can come from the training step's own forward and backward (MetaSP's
    fused step): the pseudo step and the real step share the batch, theta and the batch's
    BatchNorm statistics, so ``I_i = -(lr/|B|) grad l_i(theta)^T grad L_V(theta - lr g)``
    needs only the measurement gradients and one JVP more.

    Args:
        model: The network; its parameters and buffers are not modified.
        batch: (x, y) of the training batch B.
        measurements: (x, y) of each measurement set.
        lr: Pseudo-step size.
        pseudo_gradient: Gradient of B's mean loss at the current parameters, by name.
        low_precision: Measurement gradients under bf16 autocast and a bf16 JVP.
        parts: Sizes of consecutive parts of B forwarded apart, whose mean losses the
            pseudo step sums (the online literature's replay: stream and memory batches);
            each part's per-example gradients are taken under its own BatchNorm statistics
            and an example's influence is scaled by its part's size. Default: one part.

    Returns:
        Influence vectors (float32 or the parameters' dtype) and measurement losses.
    """
    sizes = list(parts) if parts is not None else [batch[0].shape[0]]
    with batchnorm_stats_frozen(model):
        theta = trainable_params(model)
        theta_hat = tree_axpy(-lr, pseudo_gradient, theta)
        autocast = torch.autocast(batch[0].device.type, dtype=torch.bfloat16, enabled=low_precision)
        with autocast:
            # One pass a set: faster than one vmap-ed pass on CPU, and each set's influence
            # is then bit for bit what it is alone.
            adjoints, losses = validation_gradients(per_example_loss_fn(model), theta_hat, measurements, batched=False)
        lam = {name: torch.stack([a[name] for a in adjoints]).detach() for name in theta}
        dtype = next(iter(theta.values())).dtype
        pieces, start = [], 0
        for size in sizes:
            part = (batch[0][start : start + size], batch[1][start : start + size])
            pieces.append(-(lr / size) * per_example_directional(model, theta, part, lam, low_precision).to(dtype))
            start += size
        total = torch.cat(pieces, dim=1)
    return InfluenceResult(influence=tuple(total.unbind(0)), measurement_loss=tuple(losses))
