"""The self-cleaning memory: arguments, eviction and refill, what each score evicts, a noisy run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from tiny_configs import run_one_noisy
from torch import nn

from clbench.config import from_mapping
from clbench.errors import ClbenchError, ConfigError
from clbench.training.purify import Purifier, PurifyArgs, cross_fold_harm, small_loss_harm


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"drop": 0.0}, r"purify.drop: must be in \(0, 1\), got 0.0"),
        ({"drop": 1.0}, "got 1.0"),
        ({"every": -1}, "purify.every"),
        ({"score": "metta"}, "metta"),
        ({"score": "cg", "score_args": {"dampin": 1}}, "dampin"),
        ({"score_args": {"lr": 1}}, "small_loss takes none"),
    ],
)
def test_bad_purify_arguments_are_one_line_errors(raw, message):
    with pytest.raises(ClbenchError, match=message):
        from_mapping(PurifyArgs, raw, "purify")


def test_purify_is_refused_where_the_memory_cannot_evict():
    from clbench.strategies.er import ERArgs

    with pytest.raises(ConfigError, match="purify needs memory_update=after_task"):
        ERArgs(replay_forward="separate", memory_update="every_batch", purify=PurifyArgs())


class _ListMemory:
    """A memory over a list of examples, evicting by position."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.buffer = list(zip(x, y, strict=True))

    def __len__(self) -> int:
        return len(self.buffer)

    def evict(self, positions: list[int]) -> None:
        dropped = set(positions)
        self.buffer = [item for p, item in enumerate(self.buffer) if p not in dropped]


class _LinearNet(nn.Module):
    """A linear classifier with clbench's backbone interface (``features`` and a linear ``classifier``)."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Linear(2, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)


def _separable(n: int = 40, flipped: tuple[int, ...] = (3, 17, 30)):
    """Two Gaussian blobs a linear model separates, with some labels flipped; the model fitted to the clean labels."""
    generator = torch.Generator().manual_seed(0)
    y_clean = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=generator) * 0.3 + (y_clean[:, None] * 2.0 - 1.0)
    y = y_clean.clone()
    y[list(flipped)] = 1 - y[list(flipped)]
    model = _LinearNet()
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor([[-2.0, -2.0], [2.0, 2.0]]))
        model.classifier.bias.zero_()
    return model, x, y, set(flipped)


def _strategy(model: nn.Module, memory: _ListMemory) -> SimpleNamespace:
    def fetch_examples(dataset, indices, augment):
        return torch.stack([dataset[i][0] for i in indices]), torch.stack([dataset[i][1] for i in indices])

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return SimpleNamespace(
        model=model,
        optimizer=optimizer,
        fetch_examples=fetch_examples,
        experience=SimpleNamespace(current_experience=1),
    )


@pytest.mark.parametrize("score", ["small_loss", "identity", "meta_lastlayer"])
def test_each_score_evicts_the_flipped_labels_of_a_separable_problem(score):
    model, x, y, flipped = _separable()
    memory = _ListMemory(x, y)
    purifier = Purifier(memory, PurifyArgs(score=score, drop=0.075))
    torch.manual_seed(0)
    harm, _ = purifier.harm(_strategy(model, memory))
    assert set(torch.topk(harm, 3).indices.tolist()) == flipped
    purifier.purify(_strategy(model, memory))  # 40 x 0.075 overall, but 20 x 0.075 = 1 a class
    assert len(memory) == 38 and purifier.log[0] | {"seconds": 0} == {"task": 1, "held": 40, "evicted": 2, "seconds": 0}


def test_small_loss_is_the_per_example_loss_and_leaves_the_model_s_mode():
    model, x, y, _ = _separable()
    model.train()
    expected = nn.functional.cross_entropy(model(x), y, reduction="none")
    torch.testing.assert_close(small_loss_harm(model, x, y), expected.detach())
    assert model.training


def test_cross_fold_harm_never_measures_an_example_on_itself():
    calls = []

    def estimator(model, train, measurements, lr):
        calls.append((set(train[1].tolist()), set(measurements[0][1].tolist())))
        return SimpleNamespace(influence=[torch.zeros(len(train[1]))])

    cross_fold_harm(estimator, nn.Linear(1, 10), torch.zeros(10, 1), torch.arange(10), 0.1)
    assert len(calls) == 2 and all(not (scored & measured) for scored, measured in calls)
    assert calls[0][0] | calls[1][0] == set(range(10))


def test_the_reservoir_refills_evicted_slots_at_its_next_update():
    from clbench.datasets.base import DataContext, load_benchmark
    from clbench.strategies.er import Reservoir

    bench = load_benchmark("synthetic", {}, DataContext(None, 1231))  # type: ignore[arg-type]
    torch.manual_seed(0)
    reservoir = Reservoir(20)
    reservoir.update_from_dataset(bench.scenario.train_stream[0].dataset)
    targets = list(reservoir.buffer.targets)
    reservoir.evict([0, 5, 6])
    assert len(reservoir) == 17 == len(reservoir._buffer_weights)
    assert list(reservoir.buffer.targets) == [t for p, t in enumerate(targets) if p not in {0, 5, 6}]
    assert bool((reservoir._buffer_weights[:-1] >= reservoir._buffer_weights[1:]).all())
    reservoir.update_from_dataset(bench.scenario.train_stream[1].dataset)
    assert len(reservoir) == 20


def test_metasp_s_buffer_gives_evicted_slots_to_the_next_task():
    from clbench.datasets.base import DataContext, load_benchmark
    from clbench.strategies.metasp.buffer import InfluenceLedger, MetaSPBuffer

    bench = load_benchmark("synthetic", {}, DataContext(None, 1231))  # type: ignore[arg-type]
    buffer = MetaSPBuffer(24, "random", InfluenceLedger(), seed=0)
    stream = bench.scenario.train_stream
    buffer.post_adapt(SimpleNamespace(model=None), stream[0])
    buffer.evict([0, 1, 2, 3])
    assert len(buffer) == 20 and len(buffer.buffer) == 20
    buffer.post_adapt(SimpleNamespace(model=None), stream[1])
    new = sum(1 for task, _ in buffer.keys if task == 1)
    assert len(buffer) == 24 and new == 24 // 2 + 4


def test_a_purifying_run_logs_each_purification_and_a_cleaner_memory(tmp_path):
    result = run_one_noisy(tmp_path, "{name: er, args: {purify: {score: small_loss, drop: 0.25}}}", 24, epochs=2)
    log = result["extras"]["purify"]
    assert [(e["task"], e["held"]) for e in log] == [(t, 24) for t in range(3)] and all(e["evicted"] for e in log)
    assert [t["held"] for t in result["buffer_purity"]] == [24 - e["evicted"] for e in log]


def test_eviction_is_per_class_so_a_forgotten_class_is_not_emptied():
    model = _LinearNet()
    with torch.no_grad():  # predicts class 1 everywhere: every class-0 example has a larger loss
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([-3.0, 3.0]))
    x, y = torch.randn(20, 2), torch.arange(20) % 2
    memory = _ListMemory(x, y)
    Purifier(memory, PurifyArgs(drop=0.5)).purify(_strategy(model, memory))
    assert sorted(int(label) for _, label in memory.buffer) == [0] * 5 + [1] * 5


def test_harm_auroc_is_the_share_of_noisy_clean_pairs_ranked_right():
    from clbench.buffer_purity import harm_auroc

    noisy = torch.tensor([True, False, True, False, False]).numpy()
    # noisy harms 3 and 1; clean harms 2, 0, 1: pairs (3 > all three), (1 > 0, 1 = 1, 1 < 2) -> (3 + 1 + 0.5) / 6
    assert harm_auroc(torch.tensor([3.0, 2.0, 1.0, 0.0, 1.0]), noisy) == pytest.approx(4.5 / 6)
    assert harm_auroc(torch.tensor([1.0, 2.0]), torch.tensor([False, False]).numpy()) is None


def test_a_purification_is_audited_against_the_noise_it_never_sees():
    import numpy as np

    from clbench.buffer_purity import audit
    from clbench.training.purify import Purification

    noisy = np.array([False, True, False, True, False, False])
    decision = Purification(
        task=0, rows=np.array([5, 3, 1, 0]), harm=torch.tensor([0.1, 0.9, 0.8, 0.2]), evicted=[1, 3]
    )
    # held rows 5, 3, 1, 0 -> flags F, T, T, F; evicted positions 1 (row 3, noisy) and 3 (row 0, clean)
    assert audit(decision, noisy) == {"scored": 4, "noisy_scored": 2, "evicted": 2, "noisy_evicted": 1, "auroc": 1.0}


def test_a_noisy_purifying_run_records_each_purification_s_audit_and_the_report_shows_it(tmp_path):
    # Fails before the audit existed: the task records had no ``purifications``.
    from clbench.cli import main
    from clbench.report import build_report, write_report

    config = tmp_path / "c.yaml"
    config.write_text(
        "name: p\n"
        "benchmarks: [{name: synthetic, args: {label_noise: {kind: symmetric, rate: 0.4}}}]\n"
        "strategies: [{name: er, args: {purify: {score: small_loss, drop: 0.25}}}, er]\n"
        "buffer_sizes: [24]\nseeds: [1231]\nbackbone: {name: mlp, args: {hidden: [16]}}\n"
        "training: {epochs: 2, batch_size: 8, replay_batch_size: 8, lr: 0.05}\n"
    )
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    results = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    (purifying,) = [r for r in results if r["config"]["strategy"]["args"].get("purify")]
    log = purifying["extras"]["purify"]
    audits = [t["purifications"] for t in purifying["buffer_purity"]]
    assert [len(a) for a in audits] == [1, 1, 1]
    for (entry,), event in zip(audits, log, strict=True):
        assert entry["scored"] == event["held"] and entry["evicted"] == event["evicted"]
        assert 0 <= entry["noisy_evicted"] <= entry["evicted"] and 0 <= entry["auroc"] <= 1
    (plain,) = [r for r in results if not r["config"]["strategy"]["args"].get("purify")]
    assert all("purifications" not in t for t in plain["buffer_purity"])
    write_report(
        build_report(tmp_path / "out", reference="er(purify=None)"), tmp_path / "r", formats=("md",), figures=False
    )
    section = (tmp_path / "r" / "report.md").read_text().split("## Buffer purity")[1]
    assert "evicted mislabelled (%)" in section and "harm AUROC" in section
