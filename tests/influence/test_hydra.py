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


@pytest.mark.parametrize("aware", [True, False])
def test_reverse_pass_equals_the_forward_recurrence(aware):
    from clbench.influence.hydra import record_sgd, reverse_trajectory_influence

    model, train, test = _problem()
    forward = trajectory_influence(model, train_with_hypergradients(model, train, 0.2, _args(aware)), test)
    record = record_sgd(model, train, ARGS, 0.2)
    got = reverse_trajectory_influence(model, train, record, test)["hessian_aware" if aware else "fast"]
    assert forward.abs().max() > 1e-4
    torch.testing.assert_close(got, forward, rtol=1e-9, atol=1e-12)


def _args(aware):
    return HydraArgs(hessian_aware=aware, epochs=2, batch_size=5, momentum=0.9, weight_decay=0.01)


def _unrolled_influence(model, train, test, record, steps):
    """d L_test / d eps by autograd through the recorded run's first ``steps`` updates (its lrs)."""
    from clbench.influence.functional import per_example_loss_fn, trainable_params

    loss_vec = per_example_loss_fn(model)
    eps = torch.zeros(train[1].shape[0], dtype=torch.float64, requires_grad=True)
    params = {k: v.clone().requires_grad_(True) for k, v in trainable_params(model).items()}
    velocity = {k: torch.zeros_like(v) for k, v in params.items()}
    for index, lr in zip(record.batches[:steps], record.lrs[:steps], strict=True):
        weighted = ((1 + eps[index]) * loss_vec(params, train[0][index], train[1][index])).mean()
        grads = torch.autograd.grad(weighted, list(params.values()), create_graph=True)
        velocity = {
            k: record.momentum * velocity[k] + g + record.weight_decay * params[k]
            for (k, g) in zip(params, grads, strict=True)
        }
        params = {k: params[k] - lr * velocity[k] for k in params}
    (d_eps,) = torch.autograd.grad(loss_vec(params, *test).mean(), eps)
    return d_eps


def test_reverse_pass_follows_a_learning_rate_schedule_and_stops_at_any_update():
    from clbench.influence.hydra import record_sgd, reverse_trajectory_influence

    model, train, test = _problem()
    asked = []

    def halving(epoch, params):
        asked.append(epoch)
        return 0.2 * 0.5**epoch

    record = record_sgd(model, train, HydraArgs(epochs=3, batch_size=5, momentum=0.9, weight_decay=0.01), halving)
    assert asked == [0, 1, 2] and record.lrs == [0.2] * 3 + [0.1] * 3 + [0.05] * 3
    assert len(record.params) == len(record.batches) + 1
    for steps in (4, 9):
        got = reverse_trajectory_influence(model, train, record, test, steps)["hessian_aware"]
        want = _unrolled_influence(model, train, test, record, steps)
        assert want.abs().max() > 1e-4
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="steps=10"):
        reverse_trajectory_influence(model, train, record, test, 10)


@pytest.mark.parametrize("aware", [True, False])
def test_the_recurrences_own_weight_decay_reaches_all_three_forms_and_not_the_run(aware):
    """HYDRA's code: lam = 1 in the recurrence, 1/N of it in SGD. All forms agree; the run is the same."""
    from clbench.influence.hydra import fast_trajectory_influence, record_sgd, reverse_trajectory_influence

    model, train, test = _problem()
    code = HydraArgs(
        hessian_aware=aware, epochs=2, batch_size=5, momentum=0.9, weight_decay=0.01, recurrence_weight_decay=1.0
    )
    trajectory = train_with_hypergradients(model, train, 0.2, code)
    forward = trajectory_influence(model, trajectory, test)
    reverse = reverse_trajectory_influence(model, train, record_sgd(model, train, code, 0.2), test)
    torch.testing.assert_close(reverse["hessian_aware" if aware else "fast"], forward, rtol=1e-9, atol=1e-12)
    if not aware:
        torch.testing.assert_close(
            fast_trajectory_influence(model, train, 0.2, code, test), forward, rtol=1e-9, atol=1e-12
        )
    plain = train_with_hypergradients(model, train, 0.2, _args(aware))
    for name, value in plain.params.items():  # the trained weights do not see the recurrence's decay
        torch.testing.assert_close(trajectory.params[name], value, rtol=0, atol=0)
    # and the influences are not the derivative of that run any more
    assert (forward - trajectory_influence(model, plain, test)).abs().max() > 0.01
