"""StepTemplate's named extra batch fields."""

import torch
from torch import nn

from clbench.training.step_template import StepTemplate


class WithIndex(StepTemplate):
    extra_batch_fields = ("index",)


def _strategy(template):
    model = nn.Linear(2, 2)
    return template(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu")


def test_a_declared_field_leaves_the_batch_as_a_named_attribute():
    strategy = _strategy(WithIndex)
    strategy.is_training = True
    x, y, t = torch.ones(3, 2), torch.tensor([0, 1, 0]), torch.zeros(3, dtype=torch.long)
    index = torch.tensor([7, 8, 9])
    strategy.mbatch = [x, y, t, index]
    strategy._unpack_minibatch()
    assert torch.equal(strategy.mb_index, index) and len(strategy.mbatch) == 3
    assert torch.equal(strategy.mb_y, y)


def test_without_declared_fields_the_batch_is_unchanged():
    strategy = _strategy(StepTemplate)
    strategy.is_training = True
    strategy.mbatch = [torch.ones(2, 2), torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long)]
    strategy._unpack_minibatch()
    assert len(strategy.mbatch) == 3 and not hasattr(strategy, "mb_index")
