"""The device data path: batched augmentation, dataset resolution, sampling, equal evaluation."""

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from clbench.backbones import MLP
from clbench.cli import main
from clbench.config import TrainingConfig
from clbench.data_path import (
    DeviceBatches,
    DevicePathOptions,
    IndexedSubset,
    convert_loader,
    crop_flip,
    resolve_rows,
    with_data_path,
)
from clbench.datasets.base import build_benchmark
from clbench.datasets.synthetic import SyntheticArgs, make_synthetic
from clbench.evaluation import AccuracyCollector
from clbench.results import load_result
from clbench.training import StrategyContext


def _benchmark(n_tasks=3, n_classes=6):
    return build_benchmark(
        "synthetic", make_synthetic(SyntheticArgs(n_tasks=n_tasks, n_classes=n_classes)), n_tasks, "fixed", 0
    )


def _reference_crop_flip(image, offset, flip, padding):
    padded = torch.nn.functional.pad(image, (padding,) * 4)
    r, c = offset
    out = padded[:, r : r + image.shape[1], c : c + image.shape[2]]
    return out.flip(-1) if flip else out


def test_batched_crop_flip_equals_per_image_crop_then_flip():
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (16, 3, 9, 7), dtype=torch.uint8, generator=generator)
    offsets = torch.randint(0, 9, (16, 2), generator=generator)
    flips = torch.rand(16, generator=generator) < 0.5
    batched = crop_flip(pixels, offsets, flips, padding=4)
    for i in range(16):
        expected = _reference_crop_flip(pixels[i], offsets[i].tolist(), bool(flips[i]), 4)
        assert torch.equal(batched[i], expected), i
    # the extreme offsets show the black padding
    corner = crop_flip(pixels[:1], torch.tensor([[0, 0]]), torch.tensor([False]), padding=4)
    assert corner[0, :, :4, :].eq(0).all() and corner[0, :, 4:, 4:].equal(pixels[0, :, :5, :3])


def _stacked(dataset):
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def test_resolved_rows_reproduce_avalanche_items_through_subsets_and_concatenations():
    bench = _benchmark()
    train = bench.scenario.train_stream
    views = {
        "experience": train[1].dataset.eval(),
        "subset": train[2].dataset.eval().subset([5, 0, 17, 3]),
        "concat": train[0].dataset.eval().concat(train[2].dataset.eval().subset([1, 2])),
        "indexed": IndexedSubset(train[1].dataset.eval(), [4, 9, 2]),
    }
    for name, view in views.items():
        base, rows = resolve_rows(view)
        assert len(rows) == len(view), name
        assert torch.equal(base.images[rows], _stacked(view)[:, :, :, :]), name
    test_base, _ = resolve_rows(bench.scenario.test_stream[0].dataset)
    train_base, _ = resolve_rows(train[0].dataset)
    assert test_base is not train_base and not test_base.augment


def _replay_loader(bench):
    from avalanche.benchmarks.utils.data_loader import ReplayDataLoader

    data = bench.scenario.train_stream[1].dataset.train()
    memory = bench.scenario.train_stream[0].dataset.train().subset(list(range(0, 80, 4)))  # 20 examples
    loader = ReplayDataLoader(data, memory, oversample_small_tasks=True, batch_size=16, batch_size_mem=8, shuffle=True)
    return loader, data, memory


def test_converted_replay_loader_keeps_avalanche_sampling():
    from clbench.data_path import _Splits

    bench = _benchmark()
    loader, data, memory = _replay_loader(bench)
    generator = torch.Generator().manual_seed(0)
    device_loader = convert_loader(loader, _Splits(torch.device("cpu"), False), augment=True, generator=generator)
    assert len(device_loader) == len(loader) == 5  # 80 current examples in batches of 16
    _, data_rows = resolve_rows(data)
    _, memory_rows = resolve_rows(memory)
    sources = device_loader.sources
    assert sources[0].rows.tolist() == data_rows.tolist() and sources[1].rows.tolist() == memory_rows.tolist()
    avalanche_sizes = [len(batch[1]) for batch in loader]
    device_batches = list(device_loader)
    assert [len(y) for _, y, _ in device_batches] == avalanche_sizes == [24, 24, 20, 24, 24]  # memory 8, 8, 4, cycled
    current = []
    for x, y, t in device_batches:
        assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and t.eq(0).all()
        assert set(y[:16].tolist()) <= {2, 3} and set(y[16:].tolist()) <= {0, 1}
        current.append(y[:16])
    assert sum(len(c) for c in current) == 80


def test_every_current_example_is_drawn_once_per_epoch():
    from clbench.data_path import _Source, _Splits

    bench = _benchmark()
    data = bench.scenario.train_stream[0].dataset.train()
    splits = _Splits(torch.device("cpu"), False)
    base, rows = resolve_rows(data)
    source = _Source(
        images=splits.of(base),
        rows=torch.as_tensor(rows),
        targets=torch.as_tensor(np.asarray(data.targets)),
        task_labels=torch.zeros(len(rows), dtype=torch.long),
        batch_size=7,
        carried_index=torch.arange(len(rows)),
    )
    loader = DeviceBatches(
        [source],
        0,
        shuffle=True,
        drop_last=False,
        oversample=False,
        augment=False,
        generator=torch.Generator().manual_seed(1),
    )
    positions = torch.cat([batch[3] for batch in loader])
    assert sorted(positions.tolist()) == list(range(len(rows)))
    assert len(loader) == -(-len(rows) // 7)


def _strategy(template_class, bench, collector):
    model = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8, 6))
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p)
    return template_class(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=8,
        eval_mb_size=13,
        device=torch.device("cpu"),
        plugins=[collector],
    )


def test_device_evaluation_gives_the_same_accuracies_as_avalanche_evaluation():
    from avalanche.training.supervised import Naive

    bench = _benchmark()
    rows = {}
    for name, options in (("avalanche", None), ("device", DevicePathOptions())):
        template = with_data_path(Naive, options)
        collector = AccuracyCollector(bench.task_classes)
        strategy = _strategy(template, bench, collector)
        collector.expect([c for task in bench.task_classes for c in task])
        strategy.eval(bench.scenario.test_stream)
        rows[name] = collector.row()
    assert rows["avalanche"] == rows["device"]


@pytest.mark.parametrize("options", [None, DevicePathOptions(precision="bf16")], ids=["avalanche", "device"])
def test_every_strategy_is_built_on_the_runs_data_path(options):
    from clbench.data_path import AvalanchePathMixin, DevicePathMixin, ExampleFetch
    from clbench.training import STRATEGIES, build_strategy

    bench = _benchmark()
    mixin = AvalanchePathMixin if options is None else DevicePathMixin
    for name in STRATEGIES.names():
        model = MLP(int(np.prod(bench.input_shape)), bench.n_classes, hidden=(8,))  # features + classifier
        ctx = StrategyContext.for_training(
            model,
            TrainingConfig(batch_size=4, replay_batch_size=4),
            benchmark=bench,
            device=torch.device("cpu"),
            seed=0,
            buffer_size=16,
        )
        ctx.device_path = options
        entry = STRATEGIES.get(name)
        strategy = build_strategy(entry, ctx, entry.args())
        assert type(strategy).__mro__[1] is mixin, name  # in front of the factory's template
        assert isinstance(strategy, ExampleFetch), name
        assert type(strategy) is with_data_path(entry.factory(ctx, entry.args()).template, options), name


def _write_config(folder, training):
    config = {
        "name": "device",
        "benchmarks": [{"name": "synthetic", "args": {"n_tasks": 2, "n_classes": 4, "train_per_class": 20}}],
        "strategies": ["er"],
        "buffer_sizes": [16],
        "seeds": [1231],
        "backbone": {"name": "mlp", "args": {"hidden": [16]}},
        "training": {"epochs": 2, "batch_size": 8, "replay_batch_size": 8, **training},
        "device": "cpu",
    }
    path = folder / "device.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_device_runs_are_deterministic_and_record_their_data_path(tmp_path):
    path = _write_config(tmp_path, {"data_path": "device", "precision": "bf16"})
    results = []
    for out in ("a", "b"):
        assert main(["run", str(path), "--out", str(tmp_path / out), "--no-progress"]) == 0
        (result,) = [load_result(p) for p in (tmp_path / out).glob("*.json")]
        results.append(result)
    assert results[0]["accuracy"] == results[1]["accuracy"]
    assert results[0]["config"]["training"]["data_path"] == "device"
    assert results[0]["config"]["training"]["precision"] == "bf16"


def test_device_only_settings_on_the_avalanche_path_are_one_line_errors(tmp_path, capsys):
    path = _write_config(tmp_path, {"data_path": "avalanche", "precision": "bf16"})
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    message = capsys.readouterr().err.strip()
    assert "training.precision=bf16" in message and "data_path=device" in message and "\n" not in message


@pytest.mark.parametrize("value", ["gpu", "fast"])
def test_unknown_data_path_names_the_choices(tmp_path, capsys, value):
    path = _write_config(tmp_path, {"data_path": value})
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    message = capsys.readouterr().err
    assert value in message and "avalanche" in message and "device" in message


def test_device_fetch_of_examples_equals_the_per_item_fetch():
    from clbench.training.step_template import StepTemplate

    bench = _benchmark()
    dataset = bench.scenario.train_stream[1].dataset
    fetched = {}
    paths = {"plain": None, "device": DevicePathOptions()}
    for name, options in paths.items():
        template = with_data_path(StepTemplate, options)
        strategy = _strategy(template, bench, AccuracyCollector(bench.task_classes))
        fetched[name] = strategy.fetch_examples(dataset, [7, 0, 3, 7], augment=False)
    assert torch.equal(fetched["plain"][0], fetched["device"][0])
    assert (
        fetched["plain"][1].tolist() == fetched["device"][1].tolist() == [int(dataset.targets[i]) for i in (7, 0, 3, 7)]
    )


@pytest.mark.parametrize("nf", [2, 6])
def test_channels_last_below_the_width_onednn_survives_is_a_one_line_error(nf):
    from clbench.backbones import CifarResNet18
    from clbench.errors import ConfigError

    training = TrainingConfig(data_path="device", channels_last=True)
    with pytest.raises(ConfigError, match=f"convolution of {nf} channels.*channels_last=false.*nf >= 8"):
        StrategyContext.for_training(
            CifarResNet18(3, 4, nf=nf),
            training,
            benchmark=_benchmark(),
            device=torch.device("cpu"),
            seed=0,
            buffer_size=0,
        )
    wide = StrategyContext.for_training(
        CifarResNet18(3, 4, nf=8), training, benchmark=_benchmark(), device=torch.device("cpu"), seed=0, buffer_size=0
    )
    assert wide.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_on_a_cpu_that_emulates_it_is_named_once_before_the_grid(tmp_path, capsys, monkeypatch):
    import clbench.data_path as data_path

    monkeypatch.setattr(data_path, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert data_path.slow_precision_warning("fp32", "cpu") is None
    assert data_path.slow_precision_warning("bf16", "cuda") is None
    path = _write_config(tmp_path, {"data_path": "device", "precision": "bf16"})
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "precision=bf16" in line]
    assert len(lines) == 1 and "training.precision=fp32" in lines[0]
    monkeypatch.setattr(data_path, "cpu_has_native_bf16", lambda: True)
    assert data_path.slow_precision_warning("bf16", "cpu") is None
