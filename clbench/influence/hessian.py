"""Curvature products and inverse solvers, as pure functions over parameter dictionaries.

Every ``*_fn`` returns a closure, in the style of dattri's ``func.hessian``: the
curvature-vector product ``matvec(v)`` at fixed parameters and data, and the solvers turn
a ``matvec`` into ``ihvp(v) ~= (C + damping I)^-1 v`` for a curvature ``C``:

- :func:`hvp_fn` -- the Hessian of the mean loss (forward-over-reverse);
- :func:`gnvp_fn` -- the Gauss-Newton matrix J^T H_out J / n of softmax cross-entropy;
- :func:`ihvp_exact_fn` -- dense (C + damping I), solved directly (small models);
- :func:`ihvp_cg_fn` -- conjugate gradients;
- :func:`ihvp_lissa_fn` -- LiSSA (Agarwal et al. 2017): v + (I - (C + damping I)/scale) h,
  repeated and averaged, divided by scale;
- :func:`ihvp_neumann_fn` -- the truncated Neumann series alpha * sum_j (I - alpha C)^j v
  (Lorraine et al. 2020).

The solvers take any ``matvec``, so they work for both curvatures; dattri's ``ihvp_cg`` /
``ihvp_lissa`` take the function to differentiate instead, which does not fit the
Gauss-Newton case (see ``clbench influence-bench`` for both measured side by side).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vjp

from clbench.influence.functional import Batch, LossVector, Params, tree_dot

MatVec = Callable[[Params], Params]


def _axpy(alpha: float | torch.Tensor, x: Params, y: Params) -> Params:
    return {k: y[k] + alpha * x[k] for k in y}


def hvp_fn(loss_vec: LossVector, params: Params, batch: Batch) -> MatVec:
    """``v -> H v`` for the Hessian of the batch's mean loss at ``params``."""
    x, y = batch

    def mean_grad(p: Params) -> Params:
        return grad(lambda q: loss_vec(q, x, y).mean())(p)  # type: ignore[no-any-return]

    def matvec(v: Params) -> Params:
        return jvp(mean_grad, (params,), (v,))[1]  # type: ignore[no-any-return]

    return matvec


def gnvp_fn(model: nn.Module, params: Params, batch: Batch) -> MatVec:
    """``v -> G v`` for the Gauss-Newton matrix of mean softmax cross-entropy.

    G = (1/n) sum_i J_i^T (diag(p_i) - p_i p_i^T) J_i with J_i the Jacobian of example i's
    logits; positive semi-definite, unlike the Hessian away from a minimum.
    """
    x, _ = batch
    n = x.shape[0]

    def logits(p: Params) -> torch.Tensor:
        return functional_call(model, p, (x,), strict=False)  # type: ignore[no-any-return]

    out, pullback = vjp(logits, params)[:2]
    probs = F.softmax(out.detach(), dim=1)

    def matvec(v: Params) -> Params:
        u = jvp(logits, (params,), (v,))[1]
        w = probs * u - probs * (probs * u).sum(dim=1, keepdim=True)
        (result,) = pullback(w / n)
        return result  # type: ignore[no-any-return]

    return matvec


def flatten_params(v: Params) -> torch.Tensor:
    """The tensors of ``v`` as one vector, in the dict's order."""
    return torch.cat([t.reshape(-1) for t in v.values()])


def unflatten_params(flat: torch.Tensor, like: Params) -> Params:
    """``flat`` cut back into tensors shaped as those of ``like`` (views, no copies)."""
    out, start = {}, 0
    for k, t in like.items():
        out[k] = flat[start : start + t.numel()].view_as(t)
        start += t.numel()
    return out


def dense_matrix(matvec: MatVec, like: Params) -> torch.Tensor:
    """The dense matrix of a linear map, one column per basis vector (small models only)."""
    size = sum(t.numel() for t in like.values())
    dtype = next(iter(like.values())).dtype
    eye = torch.eye(size, dtype=dtype, device=next(iter(like.values())).device)
    columns = [flatten_params(matvec(unflatten_params(eye[j], like))) for j in range(size)]
    return torch.stack(columns, dim=1)


def ihvp_exact_fn(matvec: MatVec, like: Params, damping: float = 0.0) -> MatVec:
    """Dense (C + damping I)^-1 v, factorised once (the ground truth for small models)."""
    matrix = dense_matrix(matvec, like)
    matrix = 0.5 * (matrix + matrix.T) + damping * torch.eye(len(matrix), dtype=matrix.dtype, device=matrix.device)
    factor = torch.linalg.cholesky_ex(matrix)
    use_cholesky = int(factor.info) == 0
    lu = None if use_cholesky else torch.linalg.lu_factor(matrix)

    def solve(v: Params) -> Params:
        rhs = flatten_params(v).unsqueeze(1)
        if use_cholesky:
            out = torch.cholesky_solve(rhs, factor.L)
        else:
            assert lu is not None
            out = torch.linalg.lu_solve(lu[0], lu[1], rhs)
        return unflatten_params(out.squeeze(1), v)

    return solve


def ihvp_cg_fn(matvec: MatVec, damping: float = 0.0, max_iter: int = 100, tol: float = 1e-10) -> MatVec:
    """Conjugate gradients on (C + damping I) x = v (C symmetric positive definite)."""

    def damped(v: Params) -> Params:
        return _axpy(damping, v, matvec(v))

    def solve(v: Params) -> Params:
        x = {k: torch.zeros_like(t) for k, t in v.items()}
        r = dict(v)
        p = dict(v)
        rr = tree_dot(r, r)
        threshold = tol * tree_dot(v, v)
        for _ in range(max_iter):
            if rr <= threshold:
                break
            ap = damped(p)
            alpha = rr / tree_dot(p, ap)
            x = _axpy(alpha, p, x)
            r = _axpy(-alpha, ap, r)
            rr_new = tree_dot(r, r)
            p = _axpy(rr_new / rr, p, r)
            rr = rr_new
        return x

    return solve


def ihvp_lissa_fn(
    matvec_for_batch: Callable[[int], MatVec],
    damping: float = 0.0,
    scale: float = 10.0,
    depth: int = 100,
    repeats: int = 1,
) -> MatVec:
    """LiSSA's stochastic recursion for (C + damping I)^-1 v.

    h <- v + (I - (C_k + damping I) / scale) h for ``depth`` steps, averaged over
    ``repeats``, divided by ``scale``. ``matvec_for_batch(k)`` gives step k's (possibly
    mini-batch) curvature product; convergence needs ||C + damping I|| < scale.
    """

    def solve(v: Params) -> Params:
        total = {k: torch.zeros_like(t) for k, t in v.items()}
        step = 0
        for _ in range(repeats):
            h = dict(v)
            for _ in range(depth):
                ch = matvec_for_batch(step)(h)
                step += 1
                h = {k: v[k] + h[k] - (ch[k] + damping * h[k]) / scale for k in v}
            total = _axpy(1.0, h, total)
        return {k: t / (scale * repeats) for k, t in total.items()}

    return solve


def ihvp_neumann_fn(matvec: MatVec, damping: float = 0.0, alpha: float = 0.1, terms: int = 100) -> MatVec:
    """Truncated Neumann series alpha * sum_{j<terms} (I - alpha (C + damping I))^j v."""

    def solve(v: Params) -> Params:
        term = dict(v)
        total = dict(v)
        for _ in range(terms - 1):
            ct = matvec(term)
            term = {k: term[k] - alpha * (ct[k] + damping * term[k]) for k in term}
            total = _axpy(1.0, term, total)
        return {k: alpha * t for k, t in total.items()}

    return solve


def largest_eigenvalue(matvec: MatVec, like: Params, iterations: int = 50, seed: int = 0) -> float:
    """The largest-magnitude eigenvalue of a symmetric operator, by power iteration.

    Returns the Rayleigh quotient of the last iterate (its sign is the eigenvalue's). Used
    to check, or to set, the step of the Neumann and LiSSA series, which diverge when the
    step is too large for the curvature.
    """
    generator = torch.Generator().manual_seed(seed)
    v = {k: torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) for k, t in like.items()}
    value = 0.0
    for _ in range(iterations):
        norm = float(tree_dot(v, v)) ** 0.5
        v = {k: t / norm for k, t in v.items()}
        w = matvec(v)
        value = float(tree_dot(v, w))
        v = w
    return value
