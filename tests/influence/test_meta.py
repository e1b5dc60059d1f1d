"""The exact pseudo-update influence against its autograd definition."""

import pytest
import torch
from torch import nn

from clbench.influence.meta import meta_influence, meta_influence_autograd


def _conv_net_with_bn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
    ).double()


def _problem():
    generator = torch.Generator().manual_seed(1)

    def batch(n):
        return torch.randn(n, 3, 6, 6, generator=generator, dtype=torch.float64), torch.randint(
            0, 5, (n,), generator=generator
        )

    return batch(8), [batch(6), batch(5)]


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_closed_form_equals_double_backward(steps):
    model = _conv_net_with_bn()
    train, measurements = _problem()
    fast = meta_influence(model, train, measurements, lr=0.1, steps=steps)
    reference = meta_influence_autograd(model, train, measurements, lr=0.1, steps=steps)
    for got, want in zip(fast.influence, reference.influence, strict=True):
        assert got.shape == (8,)
        assert want.abs().max() > 1e-3  # a non-trivial problem
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert fast.measurement_loss == pytest.approx(reference.measurement_loss, rel=1e-12)


def test_one_step_matches_the_written_closed_form():
    # I_i = -(lr/|B|) grad l_i(theta)^T grad L_V(theta_hat), written out with plain autograd.
    model = _conv_net_with_bn()
    (x, y), [(xv, yv), _] = _problem()
    lr = 0.05
    params = list(model.parameters())
    loss_vec = nn.functional.cross_entropy(model(x), y, reduction="none")
    grads = torch.autograd.grad(loss_vec.mean(), params)
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= lr * g
    val_grad = torch.autograd.grad(nn.functional.cross_entropy(model(xv), yv), params)
    with torch.no_grad():
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)
    expected = []
    for i in range(len(y)):
        loss_i = nn.functional.cross_entropy(model(x), y, reduction="none")[i]
        gi = torch.autograd.grad(loss_i, params)
        expected.append(-(lr / len(y)) * sum((a * b).sum() for a, b in zip(gi, val_grad, strict=True)))
    # the forward passes above ran BN in train mode and moved its running stats; the
    # influence itself must not depend on them, so no reset is needed.
    got = meta_influence(model, (x, y), [(xv, yv)], lr=lr).influence[0]
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-9, atol=1e-12)


def test_influence_leaves_parameters_and_batchnorm_buffers_untouched():
    model = _conv_net_with_bn()
    train, measurements = _problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    meta_influence(model, train, measurements, lr=0.1, steps=2)
    after = model.state_dict()
    assert set(before) == set(after)
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert model[1].track_running_stats and model[1].running_mean is not None


def test_steps_must_be_positive():
    model = _conv_net_with_bn()
    train, measurements = _problem()
    with pytest.raises(ValueError, match="steps must be >= 1"):
        meta_influence(model, train, measurements, lr=0.1, steps=0)


def _graph_gradient(model, x, y):
    """The batch's mean-loss gradient from a train-mode forward that moves BatchNorm's statistics."""
    losses = nn.functional.cross_entropy(model(x), y, reduction="none")
    names = [name for name, _ in model.named_parameters()]
    return dict(zip(names, torch.autograd.grad(losses.mean(), list(model.parameters())), strict=True))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_one_step_influence_equals_the_two_pass_one(dtype):
    from clbench.influence.meta import one_step_meta_influence

    model = _conv_net_with_bn().to(dtype)
    (x, y), measurements = _problem()
    x, measurements = x.to(dtype), [(mx.to(dtype), my) for mx, my in measurements[:1] * 2]
    measurements[1] = (measurements[1][0].flip(0), measurements[1][1].flip(0))  # equal sizes: the batched pass
    reference = meta_influence(model, (x, y), measurements, lr=0.1)
    fused = one_step_meta_influence(model, (x, y), measurements, 0.1, _graph_gradient(model, x, y))
    for got, want in zip(fused.influence, reference.influence, strict=True):
        assert want.abs().max() > 1e-3
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    assert fused.measurement_loss == pytest.approx(reference.measurement_loss, rel=1e-5)


def test_each_sets_fused_influence_is_bit_for_bit_its_influence_alone():
    # MetaSP revision 3: the validation gradients are taken one set at a time. Revision 2
    # took two sets of one size in one vmap-ed pass, which moved each set's influence by
    # float rounding (7e-9 here) away from the influence it has when measured alone.
    from clbench.influence.meta import one_step_meta_influence

    model = _conv_net_with_bn().float()
    (x, y), measurements = _problem()
    x, measurements = x.float(), [(mx.float(), my) for mx, my in measurements[:1] * 2]
    measurements[1] = (measurements[1][0].flip(0), measurements[1][1].flip(0))
    gradient = _graph_gradient(model, x, y)
    both = one_step_meta_influence(model, (x, y), measurements, 0.1, gradient)
    for k, measurement in enumerate(measurements):
        alone = one_step_meta_influence(model, (x, y), [measurement], 0.1, gradient)
        assert torch.equal(both.influence[k], alone.influence[0])
        assert both.measurement_loss[k] == alone.measurement_loss[0]


def test_bf16_one_step_influence_follows_the_fp32_one():
    from clbench.influence.meta import one_step_meta_influence

    model = _conv_net_with_bn().float()
    (x, y), measurements = _problem()
    x, measurements = x.float(), [(mx.float(), my) for mx, my in measurements]
    reference = meta_influence(model, (x, y), measurements, lr=0.1)
    gradient = _graph_gradient(model, x, y)
    low = one_step_meta_influence(model, (x, y), measurements, 0.1, gradient, low_precision=True)
    for got, want in zip(low.influence, reference.influence, strict=True):
        assert got.dtype == torch.float32
        assert float(torch.corrcoef(torch.stack([got, want]))[0, 1]) > 0.99


class _FeatureNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 8), nn.BatchNorm1d(8), nn.Tanh())
        self.classifier = nn.Linear(8, 5)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))


def test_last_layer_influence_equals_meta_with_only_the_classifier_trainable():
    from clbench.influence.estimators import make_estimator

    torch.manual_seed(0)
    model = _FeatureNet().double()
    train, measurements = _problem()
    closed_form = make_estimator("meta_lastlayer")(model, train, measurements, lr=0.3)
    for p in model.body.parameters():
        p.requires_grad_(False)
    reference = meta_influence(model, train, measurements, lr=0.3)
    for got, want in zip(closed_form.influence, reference.influence, strict=True):
        assert want.abs().max() > 1e-4
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert closed_form.measurement_loss == pytest.approx(reference.measurement_loss, rel=1e-10)


def test_last_layer_influence_needs_a_classifier():
    from clbench.errors import ConfigError
    from clbench.influence.estimators import make_estimator

    train, measurements = _problem()
    with pytest.raises(ConfigError, match="meta_lastlayer needs a backbone"):
        make_estimator("meta_lastlayer")(_conv_net_with_bn(), train, measurements, lr=0.1)


def test_one_step_influence_of_parts_forwarded_apart_equals_its_autograd_definition():
    # The pseudo step on mean(part 1) + mean(part 2), each part forwarded alone (BatchNorm by
    # its own statistics); up-weighting example i of part p by eps makes it (1 + eps) l_i in p's mean.
    from clbench.influence.functional import batchnorm_stats_frozen, per_example_loss_fn
    from clbench.influence.meta import one_step_meta_influence

    model = _conv_net_with_bn()
    (x, y), measurements = _problem()
    parts, lr = [5, 3], 0.1
    loss_vec = per_example_loss_fn(model)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    eps = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    with batchnorm_stats_frozen(model):
        pieces = [loss_vec(params, x[:5], y[:5]), loss_vec(params, x[5:], y[5:])]
        training = sum(((1 + e) * p).mean() for p, e in zip(pieces, eps.split(parts), strict=True))
        step = torch.autograd.grad(training, list(params.values()), create_graph=True)
        updated = {k: v - lr * g for (k, v), g in zip(params.items(), step, strict=True)}
        expected = [torch.autograd.grad(loss_vec(updated, *m).mean(), eps, retain_graph=True)[0] for m in measurements]
        mean_gradient = torch.autograd.grad(sum(p.mean() for p in pieces), list(params.values()))
    pseudo = {k: g.detach() for k, g in zip(params, mean_gradient, strict=True)}
    got = one_step_meta_influence(model, (x, y), measurements, lr, pseudo, parts=parts)
    for influence, want in zip(got.influence, expected, strict=True):
        assert want.abs().max() > 1e-3
        torch.testing.assert_close(influence, want, rtol=1e-6, atol=1e-9)
