"""Influence estimators against closed forms and the exact answer, on tiny seeded problems."""

import pytest
import torch
from torch import nn

from clbench.influence.estimators import ESTIMATORS, make_estimator
from clbench.influence.functional import per_example_loss_fn, trainable_params
from clbench.influence.hessian import dense_matrix, gnvp_fn, hvp_fn

pytestmark = pytest.mark.usefixtures("float64")


def _data(n=24, d=5, classes=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=generator)
    return x, y


def _linear(d=5, classes=3):
    torch.manual_seed(1)
    return nn.Linear(d, classes).double()


def _mlp(d=5, classes=3):
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(d, 6), nn.Tanh(), nn.Linear(6, classes)).double()


def _flat_hessian(model, x, y):
    params = trainable_params(model)
    names = list(params)
    shapes = [params[k].shape for k in names]
    flat = torch.cat([params[k].reshape(-1) for k in names])
    loss_vec = per_example_loss_fn(model)

    def loss(theta):
        chunks, start = {}, 0
        for k, s in zip(names, shapes, strict=True):
            size = int(torch.tensor(s).prod()) if len(s) else 1
            chunks[k] = theta[start : start + size].view(s)
            start += size
        return loss_vec(chunks, x, y).mean()

    return torch.autograd.functional.hessian(loss, flat), loss, flat


def test_hvp_matches_the_dense_hessian():
    model = _mlp()
    x, y = _data()
    hessian, _, _ = _flat_hessian(model, x, y)
    dense = dense_matrix(hvp_fn(per_example_loss_fn(model), trainable_params(model), (x, y)), trainable_params(model))
    torch.testing.assert_close(dense, hessian, rtol=1e-10, atol=1e-12)


def test_softmax_regression_hessian_closed_form():
    # For linear logits W x + b: H = (1/n) sum_i (diag(p_i) - p_i p_i^T) (x) [x_i; 1][x_i; 1]^T,
    # and the Gauss-Newton matrix equals it exactly.
    model = _linear()
    x, y = _data()
    params = trainable_params(model)
    probs = torch.softmax(model(x), dim=1).detach()
    blocks = torch.zeros(3 * 5 + 3, 3 * 5 + 3)
    for i in range(len(y)):
        p = probs[i]
        a = torch.diag(p) - torch.outer(p, p)
        # parameter order: weight (3 x 5, row-major), then bias (3)
        blocks[:15, :15] += torch.kron(a, torch.outer(x[i], x[i]))
        blocks[:15, 15:] += torch.kron(a, x[i].unsqueeze(1))
        blocks[15:, :15] += torch.kron(a, x[i].unsqueeze(0))
        blocks[15:, 15:] += a
    closed = blocks / len(y)
    hessian = dense_matrix(hvp_fn(per_example_loss_fn(model), params, (x, y)), params)
    gauss_newton = dense_matrix(gnvp_fn(model, params, (x, y)), params)
    torch.testing.assert_close(hessian, closed, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gauss_newton, closed, rtol=1e-10, atol=1e-12)


def test_exact_influence_matches_the_formula():
    model = _mlp()
    train, test = _data(), _data(n=7, seed=3)
    damping = 0.1
    hessian, _, flat = _flat_hessian(model, *train)
    _, test_loss, _ = _flat_hessian(model, *test)
    theta = flat.clone().requires_grad_(True)
    (g_test,) = torch.autograd.grad(test_loss(theta), theta)
    per_example = []
    for i in range(len(train[1])):
        _, loss_i, _ = _flat_hessian(model, train[0][i : i + 1], train[1][i : i + 1])
        theta = flat.clone().requires_grad_(True)
        (g_i,) = torch.autograd.grad(loss_i(theta), theta)
        per_example.append(g_i)
    gradients = torch.stack(per_example)
    expected = -gradients @ torch.linalg.solve(hessian + damping * torch.eye(len(flat)), g_test)
    got = make_estimator("exact", {"damping": damping})(model, train, [test], lr=0.1).influence[0]
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("hessian", ["full", "gauss_newton"])
@pytest.mark.parametrize(
    ("name", "args", "rtol"),
    [
        ("cg", {"max_iter": 200, "tol": 1e-20}, 1e-6),
        ("lissa", {"scale": 1.0, "depth": 200}, 1e-5),
        ("neumann", {"alpha": 1.0, "terms": 200}, 1e-5),
    ],
)
def test_iterative_solvers_converge_to_exact(name, args, rtol, hessian):
    model = _mlp()
    train, test = _data(), _data(n=7, seed=3)
    # H has eigenvalues in [-0.38, 0.49] here: damping 0.5 makes H + damping I positive
    # definite with eigenvalues in [0.12, 0.99], so CG converges and step 1.0 contracts
    # the LiSSA / Neumann recursions by at least 0.88 a step.
    damping = 0.5
    exact = make_estimator("exact", {"damping": damping, "hessian": hessian})(model, train, [test], 0.1)
    approx = make_estimator(name, {**args, "damping": damping, "hessian": hessian})(model, train, [test], 0.1)
    torch.testing.assert_close(
        approx.influence[0], exact.influence[0], rtol=rtol, atol=rtol * exact.influence[0].abs().max()
    )


def test_lissa_mini_batches_are_close_but_not_exact():
    model = _mlp()
    train, test = _data(n=60), _data(n=7, seed=3)
    torch.manual_seed(0)
    exact = make_estimator("exact", {"damping": 0.5})(model, train, [test], 0.1).influence[0]
    lissa = make_estimator("lissa", {"damping": 0.5, "scale": 2.0, "depth": 300, "batch_size": 20})(
        model, train, [test], 0.1
    ).influence[0]
    correlation = torch.corrcoef(torch.stack([exact, lissa]))[0, 1]
    assert correlation > 0.95 and not torch.allclose(exact, lissa, rtol=1e-6)


def test_identity_is_scaled_gradient_alignment():
    model = _mlp()
    train, test = _data(), _data(n=7, seed=3)
    loss_vec = per_example_loss_fn(model)
    params = trainable_params(model)
    g_test = torch.func.grad(lambda p: loss_vec(p, *test).mean())(params)
    per_example = torch.func.vmap(
        torch.func.grad(lambda p, xi, yi: loss_vec(p, xi[None], yi[None]).mean()), in_dims=(None, 0, 0)
    )(params, *train)
    dots = sum((per_example[k] * g_test[k]).flatten(1).sum(1) for k in params)
    got = make_estimator("identity")(model, train, [test], lr=0.3).influence[0]
    torch.testing.assert_close(got, -0.3 * dots)


def test_meta_tends_to_identity_over_n_for_small_steps():
    model = _mlp()
    train, test = _data(), _data(n=7, seed=3)
    lr = 1e-6
    meta = make_estimator("meta")(model, train, [test], lr=lr).influence[0]
    identity = make_estimator("identity")(model, train, [test], lr=lr).influence[0]
    torch.testing.assert_close(meta * len(train[1]), identity, rtol=1e-4, atol=1e-12)


def test_matrix_columns_are_single_test_influences_and_sum_to_the_mean():
    model = _mlp()
    train, test = _data(), _data(n=4, seed=3)
    estimator = make_estimator("exact", {"damping": 0.5})
    matrix = estimator.matrix(model, train, test, 0.1)
    assert matrix.shape == (24, 4)
    mean = estimator(model, train, [test], 0.1).influence[0]
    torch.testing.assert_close(matrix.mean(dim=1), mean)


def test_registry_lists_estimators_and_rejects_unknown_args():
    from clbench.errors import ConfigError

    assert {"exact", "cg", "lissa", "neumann", "identity", "meta"} <= set(ESTIMATORS.names())
    with pytest.raises(ConfigError, match="unknown key 'iters'"):
        make_estimator("cg", {"iters": 3})


def test_largest_eigenvalue_by_power_iteration_matches_the_dense_spectrum():
    from clbench.influence.hessian import largest_eigenvalue

    torch.manual_seed(0)
    a = torch.randn(6, 6, dtype=torch.float64)
    matrix = a @ a.T
    like = {"w": torch.zeros(6, dtype=torch.float64)}
    got = largest_eigenvalue(lambda v: {"w": matrix @ v["w"]}, like, iterations=300)
    assert got == pytest.approx(float(torch.linalg.eigvalsh(matrix).max()), rel=1e-6)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("neumann", {"alpha": 100.0, "terms": 5}, "neumann: alpha=100 makes the series diverge"),
        ("lissa", {"scale": 0.001, "depth": 5}, "lissa: scale=0.001 makes the series diverge"),
    ],
)
def test_a_divergent_series_step_is_refused_with_both_numbers(name, args, message):
    from clbench.errors import ConfigError

    model, train, test = _mlp(), _data(), _data(n=7, seed=3)
    with pytest.raises(ConfigError, match=message) as caught:
        make_estimator(name, args)(model, train, [test], lr=0.1)
    assert "largest eigenvalue is" in str(caught.value)


@pytest.mark.parametrize("name", ["neumann", "lissa"])
def test_an_unset_series_step_is_derived_and_converges(name):
    model, train, test = _mlp(), _data(), _data(n=7, seed=3)
    exact = make_estimator("exact", {"damping": 0.5})(model, train, [test], lr=0.1).influence[0]
    series_args = {"damping": 0.5, "terms" if name == "neumann" else "depth": 3000}
    series = make_estimator(name, series_args)(model, train, [test], lr=0.1).influence[0]
    assert float(torch.corrcoef(torch.stack([series, exact]))[0, 1]) > 0.99
