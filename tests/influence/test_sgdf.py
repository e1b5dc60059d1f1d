"""SGDF's fixed point is the exact (and LiSSA) -(H + damping I)^-1 grad R."""

import pytest
import torch
from torch import nn

from clbench.influence.functional import per_example_loss_fn
from clbench.influence.hessian import hvp_fn, ihvp_exact_fn, ihvp_lissa_fn
from clbench.influence.sgdf import TangentState, regularity_scores, sgdf

pytestmark = pytest.mark.usefixtures("float64")


def _problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    generator = torch.Generator().manual_seed(1)
    train = (torch.randn(30, 4, generator=generator), torch.randint(0, 3, (30,), generator=generator))
    return model, train


DAMPING = 0.2  # H + damping I has eigenvalues in [0.056, 0.76] at the trained weights


@pytest.fixture(scope="module")
def trained():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    model, train = _problem()
    state = sgdf(model, train, lr=0.5, steps=1200, damping=DAMPING)  # theta converges, v follows
    torch.set_default_dtype(previous)
    return model, train, state


def test_sgdf_fixed_point_equals_exact_and_lissa(trained):
    model, train, state = trained
    matvec = hvp_fn(per_example_loss_fn(model), state.params, train)
    exact = ihvp_exact_fn(matvec, state.params, DAMPING)(state.params)
    lissa = ihvp_lissa_fn(lambda _: matvec, DAMPING, scale=1.0, depth=600)(state.params)
    for name in state.params:
        torch.testing.assert_close(state.tangent[name], -exact[name], rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(lissa[name], exact[name], rtol=1e-6, atol=1e-8)


def test_tangent_iteration_at_fixed_weights_converges_too(trained):
    model, train, state = trained
    zero = {k: torch.zeros_like(v) for k, v in state.params.items()}
    fixed = sgdf(
        model, train, lr=1.0, steps=600, damping=DAMPING, start=TangentState(state.params, zero), update_params=False
    )
    exact = ihvp_exact_fn(hvp_fn(per_example_loss_fn(model), state.params, train), state.params, DAMPING)(state.params)
    for name in state.params:
        assert torch.equal(fixed.params[name], state.params[name])
        torch.testing.assert_close(fixed.tangent[name], -exact[name], rtol=1e-6, atol=1e-8)


def test_regularity_scores_are_directional_derivatives():
    model, train = _problem()
    state = sgdf(model, train, lr=0.5, steps=50, damping=0.5)
    score, squared = regularity_scores(model, state, train)
    loss_vec = per_example_loss_fn(model)
    h = 1e-6
    plus = {k: v + h * state.tangent[k] for k, v in state.params.items()}
    minus = {k: v - h * state.tangent[k] for k, v in state.params.items()}
    finite = (loss_vec(plus, *train) - loss_vec(minus, *train)) / (2 * h)
    torch.testing.assert_close(score, finite.detach(), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(squared, score**2)
