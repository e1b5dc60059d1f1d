"""Every strategy through the CLI, memory budgets, GMED's edits and HAL's anchors."""

import pytest
import torch
import yaml
from torch import nn

from clbench.cli import main
from clbench.config import TrainingConfig
from clbench.datasets.base import build_benchmark
from clbench.datasets.synthetic import SyntheticArgs, make_synthetic
from clbench.results import load_result
from clbench.strategies import STRATEGIES, StrategyContext
from clbench.strategies.gmed import edit_memory, interference

BUFFER = 48
N_CLASSES = 6


@pytest.fixture(scope="module", params=["avalanche", "device"])
def all_runs(tmp_path_factory, request):
    folder = tmp_path_factory.mktemp(f"baselines_{request.param}")
    config = {
        "name": "baselines",
        "benchmarks": [
            {
                "name": "synthetic",
                "args": {"n_tasks": 3, "n_classes": N_CLASSES, "train_per_class": 20, "test_per_class": 6},
            }
        ],
        "strategies": [
            "finetune",
            "joint",
            "er",
            "gem",
            "agem",
            "gdumb",
            "mir",
            "gss",
            "gmed",
            {"name": "hal", "args": {"anchor_steps": 5, "finetune_steps": 2}},
            {"name": "metasp", "args": {"meta_epochs": 1}},
            {"name": "metasp_rehsel", "args": {"meta_epochs": 1}},
        ],
        "buffer_sizes": [BUFFER],
        "seeds": [1231],
        "backbone": {"name": "mlp", "args": {"hidden": [16]}},
        "training": {"epochs": 1, "batch_size": 8, "replay_batch_size": 8, "data_path": request.param},
        "device": "cpu",
    }
    path = folder / "all.yaml"
    path.write_text(yaml.safe_dump(config))
    out = folder / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    return {r["config"]["strategy"]["name"]: r for r in map(load_result, out.glob("*.json"))}


def test_every_registered_strategy_runs_through_the_cli(all_runs):
    assert set(all_runs) == set(STRATEGIES.names())
    for name, result in all_runs.items():
        rows = 1 if name == "joint" else 3
        assert len(result["accuracy"]["class_il"]) == rows, name
        assert len(result["accuracy"]["task_il"]) == rows, name
        assert result["metrics"]["class_il"]["Ainf"] is not None, name


def _context(buffer_size=BUFFER, n_tasks=3):
    bench = build_benchmark(
        "synthetic", make_synthetic(SyntheticArgs(n_tasks=n_tasks, n_classes=N_CLASSES)), n_tasks, "fixed", 0
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, N_CLASSES))
    return StrategyContext(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        criterion=nn.CrossEntropyLoss(),
        training=TrainingConfig(epochs=1, batch_size=8, replay_batch_size=8),
        buffer_size=buffer_size,
        device=torch.device("cpu"),
        benchmark=bench,
        seed=0,
    )


def _plugin(strategy, cls_name):
    return next(p for p in strategy.plugins if type(p).__name__ == cls_name or type(p).__mro__[1].__name__ == cls_name)


def test_memory_budgets_equal_the_buffer_size():
    def build(name, **kw):
        entry = STRATEGIES.get(name)
        return entry.factory(_context(**kw), entry.args())

    assert _plugin(build("gem"), "GEMPlugin").patterns_per_experience * 3 == BUFFER
    assert _plugin(build("agem"), "AGEMPlugin").patterns_per_experience * 3 == BUFFER
    assert _plugin(build("gdumb"), "GDumbPlugin").mem_size == BUFFER
    assert _plugin(build("mir"), "MIRPlugin").mem_size == BUFFER
    assert _plugin(build("gss"), "GSS_greedyPlugin").mem_size == BUFFER
    assert _plugin(build("er"), "ReplayPlugin").storage_policy.max_size == BUFFER
    assert build("gmed").storage.max_size == BUFFER
    assert build("hal").storage.max_size == BUFFER - N_CLASSES  # anchors take the rest
    assert build("metasp").storage.max_size == BUFFER


def test_too_small_buffers_are_one_line_errors():
    from clbench.errors import ClbenchError

    with pytest.raises(ClbenchError, match="hal needs buffer_size > n_classes = 6"):
        STRATEGIES.get("hal").factory(_context(buffer_size=6), STRATEGIES.get("hal").args())
    with pytest.raises(ClbenchError, match="gss needs buffer_size >= batch_size"):
        STRATEGIES.get("gss").factory(_context(buffer_size=20), STRATEGIES.get("gss").args())


def test_buffers_after_training_never_exceed_their_budget(all_runs):
    assert all_runs["gmed"]["extras"]["memory_size"] == BUFFER
    assert all_runs["hal"]["extras"]["memory_size"] == BUFFER - N_CLASSES
    assert sum(all_runs["metasp_rehsel"]["extras"]["buffer_class_counts"].values()) == BUFFER


def test_gmed_edits_memory_during_later_tasks(all_runs):
    extras = all_runs["gmed"]["extras"]
    assert extras["edits_total"] > 0 and extras["edited_examples"] > 0


def test_hal_learns_one_anchor_per_class(all_runs):
    assert sorted(all_runs["hal"]["extras"]["anchor_labels"]) == list(range(N_CLASSES))


def _gmed_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    current = (torch.randn(8, 3, 2, 2), torch.randint(0, 2, (8,)))
    memory = (torch.randn(6, 3, 2, 2), torch.randint(2, 4, (6,)))
    return model, current, memory


def test_gmed_edit_raises_the_loss_increase_and_stays_within_the_stride():
    model, current, (mem_x, mem_y) = _gmed_problem()
    strides = torch.full((6,), 0.05)
    edited = edit_memory(model, current, mem_x, mem_y, lr=0.5, strides=strides, reg=0.0)
    moved = (edited - mem_x).flatten(1).norm(dim=1)
    torch.testing.assert_close(moved, strides)
    before = interference(model, current, mem_x, mem_y, lr=0.5)
    after = interference(model, current, edited, mem_y, lr=0.5)
    assert after.sum() > before.sum()


def test_gmed_edit_leaves_model_untouched():
    model, current, (mem_x, mem_y) = _gmed_problem()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    edit_memory(model, current, mem_x, mem_y, lr=0.5, strides=torch.full((6,), 0.1), reg=0.01)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_gmed_writes_edits_back_to_memory(monkeypatch):
    entry = STRATEGIES.get("gmed")
    ctx = _context()
    strategy = entry.factory(ctx, entry.args(edit_stride=0.5))
    stream = ctx.benchmark.scenario.train_stream
    strategy.train(stream[0])
    stored_before = strategy.storage.x.clone()
    # keep positions fixed through task 2 so stored inputs can be compared one to one
    monkeypatch.setattr(strategy.storage, "post_adapt", lambda agent, exp: None)
    strategy.train(stream[1])
    edited = strategy.storage.edit_counts > 0
    assert edited.any() and not edited.all()
    changed = (strategy.storage.x != stored_before).flatten(1).any(1)
    assert torch.equal(changed, edited)
