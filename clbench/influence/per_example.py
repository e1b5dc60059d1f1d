"""Weighted sums of per-example squared gradients from one batched backward pass.

``Σ_i w_i · (∇θ ℓ_i)²`` (elementwise square) is the diagonal Fisher estimate of online
EWC (``w_i = p(y_i | x_i)``, ``ℓ_i = log p(y_i | x_i)``). ``torch.func.vmap`` of
per-example gradients computes it for any model, but on a CPU it costs about five batched
forward-backward passes a chunk; this module gets the same numbers from one, layer by
layer (the "BackPACK" construction): when the examples do not interact (no train-mode
BatchNorm), the backward pass of ``Σ_i ℓ_i`` gives every example's own output gradient
``δ_i`` at each layer, and each layer's per-example weight gradient is a product of
``δ_i`` with that example's input:

- ``Linear``: ``g_i = δ_i a_iᵀ``, so ``g_i² = δ_i² (a_i²)ᵀ`` and the sum is one matmul;
- ``Conv2d`` (``groups = 1``): ``g_i = δ_i U_iᵀ`` with ``U_i`` the unfolded input patches
  (one column a position), summed over positions before squaring;
- ``BatchNorm`` in evaluation mode: ``g_γ,i = Σ_positions δ_i x̂_i``, ``g_β,i = Σ δ_i``.

:func:`supports` says whether a model has only such layers; otherwise use the ``vmap`` form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clbench.influence.functional import Params

PerLayer = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
"""(layer, its input, its output gradients, weights) → weighted squared gradient of each of its parameters."""


def _linear(layer: Any, inputs: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    # (n, positions, features): a Linear applied along extra leading axes sums over them
    a = inputs.reshape(len(inputs), -1, inputs.shape[-1])
    d = delta.reshape(len(delta), -1, delta.shape[-1])
    gradient = torch.einsum("nlo,nli->noi", d, a)
    out = {"weight": torch.einsum("n,noi->oi", w, gradient**2)}
    if layer.bias is not None:
        out["bias"] = torch.einsum("n,no->o", w, d.sum(1) ** 2)
    return out


def _weighted_square_sum(gradient: torch.Tensor) -> torch.Tensor:
    """Σ over the leading (example) axis of the elementwise square, in place (weights already folded in)."""
    return torch.mul(gradient, gradient, out=gradient).sum(0)


def _conv2d(layer: Any, inputs: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    # One (n, o, HW) x (n, HW, c) product per kernel offset, on the strided window of the padded
    # input that this offset reads: the same products as F.unfold's, without its slow im2col.
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = layer.kernel_size, layer.stride, layer.dilation, layer.padding
    padded = F.pad(inputs, (pw, pw, ph, ph))
    d = (delta * w.sqrt().view(-1, 1, 1, 1)).flatten(2)  # sqrt(w_i) in: the square carries w_i
    h, v = delta.shape[2], delta.shape[3]
    squares = []
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i * dh : i * dh + sh * (h - 1) + 1 : sh, j * dw : j * dw + sw * (v - 1) + 1 : sw]
            squares.append(_weighted_square_sum(torch.bmm(d, window.flatten(2).transpose(1, 2))))  # (o, c)
    out = {"weight": torch.stack(squares, dim=2).view_as(layer.weight)}
    if layer.bias is not None:
        out["bias"] = _weighted_square_sum(d.sum(2))
    return out


def _batchnorm(layer: Any, inputs: torch.Tensor, delta: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    shape = (1, -1) + (1,) * (inputs.ndim - 2)
    normalised = (inputs - layer.running_mean.view(shape)) / torch.sqrt(layer.running_var.view(shape) + layer.eps)
    reduce = tuple(range(2, inputs.ndim))
    out = {}
    if layer.weight is not None:
        gamma = (delta * normalised).sum(reduce) if reduce else delta * normalised
        out["weight"] = torch.einsum("n,nc->c", w, gamma**2)
    if layer.bias is not None:
        beta = delta.sum(reduce) if reduce else delta
        out["bias"] = torch.einsum("n,nc->c", w, beta**2)
    return out


def _rule(layer: nn.Module) -> PerLayer | None:
    """The per-layer rule for ``layer``, or None if it has none (a layer without own parameters needs none)."""
    if isinstance(layer, nn.Linear):
        return _linear
    if (
        isinstance(layer, nn.Conv2d)
        and layer.groups == 1
        and layer.padding_mode == "zeros"
        and isinstance(layer.padding, tuple)  # not "same" / "valid"
    ):
        return _conv2d
    if isinstance(layer, nn.modules.batchnorm._BatchNorm) and not layer.training and layer.running_mean is not None:
        return _batchnorm
    return None


def _owners(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that own trainable parameters, by name."""
    return {
        name: module
        for name, module in model.named_modules()
        if any(p.requires_grad for p in module.parameters(recurse=False))
    }


def supports(model: nn.Module) -> bool:
    """Whether every module owning a trainable parameter has a per-layer rule (in the model's current mode)."""
    return all(_rule(module) is not None for module in _owners(model).values())


def weighted_squared_gradients(
    model: nn.Module, x: torch.Tensor, log_likelihood: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[Params, torch.Tensor]:
    """``Σ_i p_i · (∇θ ℓ_i)²`` for every trainable parameter, with ``ℓ = log_likelihood(model(x))`` per example.

    ``p_i = exp(ℓ_i)`` (detached): with ``ℓ_i = log p(y_i | x_i)`` this is online EWC's
    weighted Fisher. Exact when the examples do not interact (call it in evaluation mode);
    :func:`supports` must hold. Returns the sums (fp32, keyed like ``named_parameters``)
    and the per-example ``ℓ``.
    """
    owners = _owners(model)
    saved: dict[str, list[torch.Tensor]] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if name in saved:  # a layer applied twice: its per-example gradients are not one product
                raise RuntimeError(f"per-example squared gradients: {name} is called twice in one forward")
            saved[name] = [inputs[0].detach().float()]
            output.register_hook(lambda g: saved[name].append(g.detach().float()))

        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in owners.items()]
    try:
        with torch.enable_grad():
            probe = x.detach().requires_grad_(True)
            per_example = log_likelihood(model(probe).float())
            weights = per_example.detach().exp()
            # The output gradients are all that is needed: asking for the input's gradient
            # makes autograd skip every weight gradient.
            torch.autograd.grad(per_example.sum(), probe)
    finally:
        for handle in handles:
            handle.remove()
    result: Params = {}
    for name, module in owners.items():
        rule = _rule(module)
        assert rule is not None, f"no per-example rule for {type(module).__name__} ({name}); check supports()"
        layer_input, delta = saved[name]
        for key, value in rule(module, layer_input, delta, weights).items():
            result[f"{name}.{key}" if name else key] = value
    return result, per_example.detach()
