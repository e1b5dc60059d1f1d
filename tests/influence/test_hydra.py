"""HYDRA's recurrences against autograd through a short unrolled training run."""

import pytest
import torch
from torch import nn

from clbench.influence.estimators import make_estimator
from clbench.influence.hydra import (
    HydraArgs,
    hydra_contribution,
    train_with_hypergradients,
    trajectory_influence,
    trajectory_influence_autograd,
)

pytestmark = pytest.mark.usefixtures("float64")


def _problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    generator = torch.Generator().manual_seed(1)
    train = (torch.randn(12, 4, generator=generator), torch.randint(0, 3, (12,), generator=generator))
    test = (torch.randn(6, 4, generator=generator), torch.randint(0, 3, (6,), generator=generator))
    return model, train, test


ARGS = HydraArgs(epochs=2, batch_size=5, momentum=0.9, weight_decay=0.01)


def test_hessian_aware_recurrence_equals_autograd_through_training():
    model, train, test = _problem()
    trajectory = train_with_hypergradients(model, train, 0.2, ARGS)
    got = trajectory_influence(model, trajectory, test)
    want = trajectory_influence_autograd(model, train, 0.2, ARGS, test)
    assert want.abs().max() > 1e-4
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_fast_approximation_drops_curvature_but_keeps_the_picture():
    model, train, test = _problem()
    exact = trajectory_influence_autograd(model, train, 0.2, ARGS, test)
    fast = make_estimator(
        "hydra", {"hessian_aware": False, "epochs": 2, "batch_size": 5, "momentum": 0.9, "weight_decay": 0.01}
    )(model, train, [test], 0.2).influence[0]
    assert not torch.allclose(fast, exact)
    assert torch.corrcoef(torch.stack([fast, exact]))[0, 1] > 0.5


def test_estimator_does_not_train_the_model_and_contribution_sign():
    model, train, test = _problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    influence = make_estimator("hydra", {"epochs": 1, "batch_size": 6})(model, train, [test], 0.1).influence[0]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    torch.testing.assert_close(hydra_contribution(influence), -influence / 12)


def test_two_pass_fast_influence_equals_the_fast_recurrence():
    from clbench.influence.hydra import fast_trajectory_influence

    model, train, test = _problem()
    fast = HydraArgs(hessian_aware=False, epochs=3, batch_size=5, momentum=0.9, weight_decay=0.01)
    want = trajectory_influence(model, train_with_hypergradients(model, train, 0.2, fast), test)
    got = fast_trajectory_influence(model, train, 0.2, fast, test)
    assert want.abs().max() > 1e-4
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_impulse_response_of_plain_sgd_is_minus_lr_forever():
    from clbench.influence.hydra import impulse_response

    assert impulse_response(4, 0.1, 0.0, 0.0)[1:].tolist() == pytest.approx([-0.1] * 4)
    decayed = impulse_response(3, 0.1, 0.0, 0.5)  # each step shrinks theta by lr * wd
    assert decayed[1:].tolist() == pytest.approx([-0.1, -0.1 * 0.95, -0.1 * 0.95**2])


def test_per_point_fast_influence_is_the_fast_influence_on_each_point_alone():
    from clbench.influence.hydra import fast_trajectory_influence, fast_trajectory_influence_per_point

    model, train, test = _problem()
    fast = HydraArgs(hessian_aware=False, epochs=2, batch_size=5, momentum=0.9, weight_decay=0.01)
    got = fast_trajectory_influence_per_point(model, train, 0.2, fast, test)
    assert got.shape == (12, 6)
    for k in range(6):
        alone = fast_trajectory_influence(model, train, 0.2, fast, (test[0][k : k + 1], test[1][k : k + 1]))
        assert alone.abs().max() > 1e-4
        torch.testing.assert_close(got[:, k], alone, rtol=1e-9, atol=1e-12)
    # the mean over the points is the influence on their mean loss
    torch.testing.assert_close(got.mean(1), fast_trajectory_influence(model, train, 0.2, fast, test))
