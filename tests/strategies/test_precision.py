"""Which forward passes of a bf16 run run in bf16: all of them, but for the listed exceptions."""

import numpy as np
import pytest
import torch
from tiny_strategies import tiny_strategy, two_tasks

from clbench.backbones import MLP
from clbench.data_path import DevicePathOptions
from clbench.training import STRATEGIES

FP32_PASSES = {
    "agem": "the reference gradient on the memory sample (Avalanche's plugin, kept as earlier runs had it)",
    "gss": "the scoring passes of Avalanche's greedy memory",
    "gmed": "the look-ahead and editing passes over the memory (functional, outside the template's forward)",
    "ewc": "the Fisher pass after each task (vmapped per-example gradients)",
    "hal": "anchor learning after each task and the anchors' stability gradient",
}
"""Strategies some of whose passes run in fp32 on a bf16 run; every other strategy's passes
are all low precision (GEM's memory passes since its revision 2). Listed in docs/fast-path.md."""


def _low_precision_flags(name):
    """Train ``name`` on two synthetic tasks at bf16; per training forward, whether it ran in bf16.

    A pass counts as bf16 under autocast or on bf16 inputs (MetaSP's JVP casts its
    parameters, tangents and inputs rather than autocasting).
    """
    bench = two_tasks()
    model = MLP(int(np.prod(bench.input_shape)), bench.n_classes, hidden=(16,))
    flags = []

    def record(module, inputs, output):
        if module.training or torch.is_grad_enabled():  # training passes, not the evaluation
            flags.append(torch.is_autocast_enabled("cpu") or inputs[0].dtype == torch.bfloat16)

    # On the first layer: GSS's scoring calls ``model.forward``, which bypasses the model's own hooks.
    first_layer = next(module for module in model.modules() if isinstance(module, torch.nn.Linear))
    first_layer.register_forward_hook(record)
    args = STRATEGIES.get(name).args(epochs=1) if name == "joint" else None
    strategy = tiny_strategy(name, bench, model, options=DevicePathOptions(precision="bf16"), args=args)
    stream = bench.scenario.train_stream
    for experience in [stream] if name == "joint" else stream:
        strategy.train(experience)
    return flags


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_a_bf16_run_trains_in_bf16_but_for_the_listed_passes(name):
    flags = _low_precision_flags(name)
    assert flags
    if name in FP32_PASSES:
        assert not all(flags), f"{name} now trains in bf16 throughout: drop it from FP32_PASSES and the README"
    else:
        assert all(flags), f"{flags.count(False)} of {len(flags)} training forwards of {name} ran in fp32"
