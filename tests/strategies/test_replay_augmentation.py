"""Memories of the stream as it arrives store un-augmented inputs and augment every replayed draw afresh.

Revision 1 of DER, ER-ACE, iCaRL, SCR and ER with ``memory_update: every_batch`` stored the
stream batch as the model received it (cropped and flipped when the benchmark augments)
and replayed it as stored: one frozen crop a slot for the whole run. Their references
store the raw batch and augment each replayed one (ER-ACE's ``pclucas14/AML``; Mammoth's
DER stores ``not_aug_inputs``). The tests marked as such fail on revision 1.
"""

import pytest
import torch
from tiny_strategies import tiny_strategy
from torch import nn

from clbench.config import ExperimentConfig, from_mapping
from clbench.data_path import DeviceImages, DevicePathOptions, resolve_rows
from clbench.datasets.base import Benchmark, build_benchmark
from clbench.datasets.synthetic import SyntheticArgs, make_synthetic
from clbench.errors import DataError
from clbench.grid import expand_grid
from clbench.strategies.er import ERArgs
from clbench.strategies.icarl import ICaRLArgs
from clbench.training import STRATEGIES


def _bench(augment: bool) -> Benchmark:
    data = make_synthetic(SyntheticArgs(n_tasks=2, n_classes=4, train_per_class=10, augment=augment))
    return build_benchmark("synthetic", data, 2, "fixed", 0)


def _clean_images(bench: Benchmark) -> torch.Tensor:
    """Every training image of the first task, normalised, without augmentation."""
    base, rows = resolve_rows(bench.scenario.train_stream[0].dataset)
    images = DeviceImages(base, torch.device("cpu"), channels_last=False)
    return images.batch(torch.as_tensor(rows), False, torch.Generator())


def _model(bench: Benchmark) -> nn.Module:
    from clbench.backbones import MLP

    torch.manual_seed(0)
    return MLP(64, bench.n_classes, hidden=(16,))


def _trained(name, args, augment):
    """The strategy after the first task of :func:`_bench` on the device path, its memory and the benchmark."""
    bench = _bench(augment)
    strategy = tiny_strategy(name, bench, _model(bench), options=DevicePathOptions(), args=args)
    strategy.train(bench.scenario.train_stream[0])
    memory = strategy.memory if hasattr(strategy, "memory") else strategy.plugins[0].memory
    return strategy, memory, bench


STREAM_MEMORIES = [
    ("der", None),
    ("er_ace", None),
    ("er", ERArgs(replay_forward="separate", memory_update="every_batch")),
    ("icarl", ICaRLArgs(memory="reservoir")),
]


def test_normalised_augmentation_is_the_pixels_augmentation_bit_for_bit():
    bench = _bench(augment=True)
    base, rows = resolve_rows(bench.scenario.train_stream[0].dataset)
    images = DeviceImages(base, torch.device("cpu"), channels_last=False)
    rows = torch.as_tensor(rows)
    served = images.batch(rows, True, torch.Generator().manual_seed(3))
    stored = images.batch(rows, False, torch.Generator())
    assert torch.equal(images.augment_normalised(stored, torch.Generator().manual_seed(3)), served)
    assert not torch.equal(served, stored)


@pytest.mark.parametrize(("name", "args"), STREAM_MEMORIES, ids=[n for n, _ in STREAM_MEMORIES])
def test_a_stream_memory_stores_unaugmented_inputs_and_augments_each_draw(name, args):
    # Fails on revision 1: the memory held the augmented crops, and a draw returned them as stored.
    strategy, memory, bench = _trained(name, args, augment=True)
    held = memory.x[: len(memory)]
    clean = _clean_images(bench).flatten(1)
    assert all((clean == x.flatten()).all(1).any() for x in held)
    drawn, _, positions = memory.draw(strategy, len(memory), augment=True)
    assert not torch.equal(drawn, memory.x[positions])
    again, _, _ = memory.draw(strategy, len(memory), augment=False)
    assert all((clean == x.flatten()).all(1).any() for x in again)


@pytest.mark.parametrize(("name", "args"), STREAM_MEMORIES, ids=[n for n, _ in STREAM_MEMORIES])
def test_without_augmentation_the_memory_holds_the_batches_as_served(name, args):
    # The runs of the online table (augment: false): nothing is gathered again or augmented.
    strategy, memory, _ = _trained(name, args, augment=False)
    x = memory.x[: len(memory)]
    assert strategy.unaugmented_inputs(x) is x and strategy.augment_like_training(x) is x
    drawn, _, positions = memory.draw(strategy, len(memory), augment=True)
    assert torch.equal(drawn, memory.x[positions])


def test_avalanche_loaders_with_augmented_data_refuse_a_stream_memory_in_one_line():
    bench = _bench(augment=True)
    strategy = tiny_strategy("er_ace", bench, _model(bench), options=None)
    with pytest.raises(DataError, match=r"needs training\.data_path=device") as error:
        strategy.train(bench.scenario.train_stream[0])
    assert "\n" not in str(error.value)


def _revision(strategy: dict, augment: bool) -> int:
    raw = {
        "name": "x",
        "benchmarks": [{"name": "synthetic", "args": {"augment": augment}}],
        "strategies": [strategy],
        "seeds": [1],
        "buffer_sizes": [10],
    }
    (run,) = expand_grid(from_mapping(ExperimentConfig, raw, "experiment"))
    return run.strategy_revision


@pytest.mark.parametrize(
    ("strategy", "augmented", "plain"),
    [
        ({"name": "er_ace"}, 2, 1),
        ({"name": "der"}, 2, 1),
        ({"name": "icarl"}, 2, 1),
        ({"name": "er", "args": {"replay_forward": "separate", "memory_update": "every_batch"}}, 2, 1),
        ({"name": "er", "args": {"replay_forward": "separate"}}, 1, 1),
    ],
)
def test_the_fix_raises_the_revision_of_augmented_runs_only(strategy, augmented, plain):
    # Runs without augmentation train exactly as before: they keep revision 1 and their ids.
    assert _revision(strategy, augment=True) == augmented
    assert _revision(strategy, augment=False) == plain
    assert callable(STRATEGIES.get(strategy["name"]).traits["revision"])


def test_scr_s_kornia_augmentation_raised_every_run_of_it_past_this_fix():
    # Revision 3 (the augmentation follows kornia 0.4.1) changed SCR's views in every run.
    assert _revision({"name": "scr"}, augment=True) == _revision({"name": "scr"}, augment=False) == 3
