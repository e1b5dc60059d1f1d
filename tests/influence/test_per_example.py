"""Weighted per-example squared gradients from one backward equal the vmap of per-example gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clbench.influence.per_example import supports, weighted_squared_gradients
from clbench.strategies.ewc import fisher_diagonal, weighted_fisher_diagonal


def _conv_net() -> nn.Module:
    """Every rule and every convolution option the ResNets use, plus dilation and a biased conv."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, stride=2, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv2d(5, 3, 1, stride=2, bias=False),
        nn.BatchNorm2d(3),
        nn.Flatten(),
        nn.Linear(3 * 2 * 2, 4),
    )


def _evaluating(model: nn.Module, x: torch.Tensor) -> nn.Module:
    model.train()
    with torch.no_grad():
        model(x)  # running statistics away from their initial 0 / 1
    return model.eval()


@pytest.mark.parametrize(
    "make", [_conv_net, lambda: nn.Sequential(nn.Flatten(), nn.Linear(50, 6), nn.ReLU(), nn.Linear(6, 4))]
)
def test_one_backward_gives_the_vmapped_weighted_fisher(make):
    torch.manual_seed(0)
    x, y = torch.randn(12, 2, 5, 5), torch.randint(0, 4, (12,))
    model = _evaluating(make(), x)
    assert supports(model)
    expected = weighted_fisher_diagonal(model, x, y)
    fisher = fisher_diagonal(model, x, y)
    assert fisher.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(fisher[name], expected[name], rtol=1e-5, atol=1e-9), name


def test_it_returns_the_log_likelihoods_and_leaves_the_model_alone():
    torch.manual_seed(0)
    x, y = torch.randn(6, 2, 5, 5), torch.randint(0, 4, (6,))
    model = _evaluating(_conv_net(), x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, log_p = weighted_squared_gradients(model, x, lambda logits: -F.cross_entropy(logits, y, reduction="none"))
    assert torch.allclose(log_p, -F.cross_entropy(model(x), y, reduction="none"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_layers_without_a_rule_are_reported_so_the_vmap_form_is_used():
    net = _conv_net()
    assert not supports(net.train())  # train-mode BatchNorm couples the examples
    assert not supports(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)))
    assert not supports(nn.Sequential(nn.LayerNorm(4)))
    assert supports(nn.Sequential(nn.ReLU()))


def test_a_layer_applied_twice_is_refused():
    layer = nn.Linear(3, 3)
    model = nn.Sequential(layer, nn.ReLU(), layer)
    with pytest.raises(RuntimeError, match="called twice"):
        weighted_squared_gradients(model, torch.randn(2, 3), lambda out: out.sum(1))
