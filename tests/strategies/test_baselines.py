"""Every strategy through the CLI, memory budgets, GMED's edits and HAL's anchors."""

import pytest
import torch
import yaml
from avalanche.training.plugins import SupervisedPlugin
from torch import nn

from clbench.cli import main
from clbench.config import TrainingConfig
from clbench.datasets.base import build_benchmark
from clbench.datasets.synthetic import SyntheticArgs, make_synthetic
from clbench.results import load_result
from clbench.strategies.gmed import edit_memory, interference
from clbench.training import STRATEGIES, StrategyContext, build_strategy

BUFFER = 48
N_CLASSES = 6


FAST_ARGS = {
    "hal": {"name": "hal", "args": {"anchor_steps": 5, "finetune_steps": 2}},
    "metasp": {"name": "metasp", "args": {"meta_epochs": 1}},
    "metasp_rehsel": {"name": "metasp_rehsel", "args": {"meta_epochs": 1}},
}
"""Shorter settings for the strategies that would otherwise dominate the suite; every other
registered strategy runs with its defaults (the list is the registry, not written here)."""

FAST_CONV = "device_conv"  # the defaults (device path, bf16, channels-last) on a convolutional net


def _run_every_strategy(folder, data_path, strategies=None, **training_settings):
    """Every registered strategy (or ``strategies``) once on three synthetic tasks; their results by name."""
    training = {"epochs": 1, "batch_size": 8, "replay_batch_size": 8, **training_settings}
    if data_path != FAST_CONV:
        training["data_path"] = data_path
    backbone = {"name": "mlp", "args": {"hidden": [16]}}
    if data_path == FAST_CONV:
        backbone = {"name": "resnet18", "args": {"nf": 8}}  # narrower crashes oneDNN (CHANNELS_LAST_MIN_WIDTH)
    config = {
        "name": "baselines",
        "benchmarks": [
            {
                "name": "synthetic",
                "args": {"n_tasks": 3, "n_classes": N_CLASSES, "train_per_class": 20, "test_per_class": 6},
            }
        ],
        "strategies": strategies or [FAST_ARGS.get(name, name) for name in STRATEGIES.names()],
        "buffer_sizes": [BUFFER],
        "seeds": [1231],
        "backbone": backbone,
        "training": training,
        "device": "cpu",
    }
    path = folder / "all.yaml"
    path.write_text(yaml.safe_dump(config))
    out = folder / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    return {r["config"]["strategy"]["name"]: r for r in map(load_result, out.glob("*.json"))}


@pytest.fixture(scope="module", params=["avalanche", "device", FAST_CONV])
def all_runs(tmp_path_factory, request):
    return _run_every_strategy(tmp_path_factory.mktemp(f"baselines_{request.param}"), request.param)


def test_every_registered_strategy_runs_through_the_cli(all_runs):
    assert set(all_runs) == set(STRATEGIES.names())
    for name, result in all_runs.items():
        rows = 1 if name == "joint" else 3
        assert len(result["accuracy"]["class_il"]) == rows, name
        assert len(result["accuracy"]["task_il"]) == rows, name
        assert result["metrics"]["class_il"]["Ainf"] is not None, name


REFERENCE_CODE_VARIANTS = [
    {"name": "icarl", "args": {"memory": "reservoir_past_tasks", "loss": "split", "ncm_features": "raw"}},
    {"name": "lwf", "args": {"weighting": "task_ratio", "distilled_outputs": "all", "teacher_mode": "train"}},
]
"""Options that run a strategy as another paper's code does (their own forwards and teachers)."""


def test_the_reference_code_variants_run_on_the_fast_path_defaults(tmp_path):
    runs = _run_every_strategy(tmp_path, FAST_CONV, REFERENCE_CODE_VARIANTS)
    assert set(runs) == {"icarl", "lwf"}
    for name, result in runs.items():
        assert result["config"]["training"]["precision"] == "bf16", name
        assert len(result["accuracy"]["class_il"]) == 3, name
        assert result["metrics"]["class_il"]["Ainf"] is not None, name


def test_evaluating_the_seen_tasks_only_in_chunks_leaves_every_strategy_s_results_alone(all_runs, tmp_path, request):
    """The measurement-only settings: the tasks learned so far, forwarded 5 images at a time (not 12)."""
    data_path = request.node.callspec.params["all_runs"]
    if data_path == "avalanche":
        pytest.skip("eval_tasks: seen needs the device data path (Avalanche's eval loaders draw random numbers)")
    seen_only = _run_every_strategy(tmp_path, data_path, eval_tasks="seen", eval_chunk=5)
    for name, full in all_runs.items():
        seen = seen_only[name]
        assert seen["run_id"] == full["run_id"], name
        assert seen["metrics"] == full["metrics"], name
        for setting in ("class_il", "task_il"):
            for after, row, full_row in zip(
                full["evaluated_after_task"], seen["accuracy"][setting], full["accuracy"][setting], strict=True
            ):
                assert row[: after + 1] == full_row[: after + 1], name
                assert row[after + 1 :] == [None] * (len(row) - after - 1), name
        assert sum(seen["eval_seconds"]) > 0, name


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
        memory_budget=buffer_size,
        device=torch.device("cpu"),
        benchmark=bench,
        seed=0,
    )


def _plugin(strategy, cls_name):
    return next(p for p in strategy.plugins if type(p).__name__ == cls_name or type(p).__mro__[1].__name__ == cls_name)


def test_memory_budgets_equal_the_buffer_size():
    def build(name, **kw):
        entry = STRATEGIES.get(name)
        return build_strategy(entry, _context(**kw), entry.args())

    assert _plugin(build("gem"), "GEMPlugin").patterns_per_experience * 3 == BUFFER
    assert _plugin(build("agem"), "AGEMPlugin").patterns_per_experience * 3 == BUFFER
    assert _plugin(build("gdumb"), "GDumbPlugin").mem_size == BUFFER
    assert _plugin(build("mir"), "MIRPlugin").mem_size == BUFFER
    assert build("gss").memory.mem_size == BUFFER
    assert _plugin(build("er"), "ReplayPlugin").storage_policy.max_size == BUFFER
    assert build("gmed").storage.max_size == BUFFER
    assert build("hal").storage.max_size == BUFFER - N_CLASSES  # anchors take the rest
    assert build("metasp").storage.max_size == BUFFER


def test_too_small_buffers_are_one_line_errors():
    from clbench.errors import ClbenchError

    with pytest.raises(ClbenchError, match="hal needs buffer_size > n_classes = 6"):
        build_strategy(STRATEGIES.get("hal"), _context(buffer_size=6), STRATEGIES.get("hal").args())
    with pytest.raises(ClbenchError, match="gss needs buffer_size >= batch_size = 8, got buffer_size 6"):
        build_strategy(STRATEGIES.get("gss"), _context(buffer_size=6), STRATEGIES.get("gss").args())


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
    strategy = build_strategy(entry, ctx, entry.args(edit_stride=0.5))
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


class _UpdateProbe(SupervisedPlugin):
    """Records, per training step, how far the update is from -lr x the step's batch gradient."""

    def __init__(self):
        super().__init__()
        self.gaps = []

    def before_forward(self, strategy, **kwargs):
        self.x, self.y = strategy.mb_x.clone(), strategy.mb_y.clone()
        self.params = {n: p.detach().clone() for n, p in strategy.model.named_parameters()}

    def after_update(self, strategy, **kwargs):
        import copy

        reference = copy.deepcopy(strategy.model)
        reference.load_state_dict(self.params, strict=False)
        reference.zero_grad()
        nn.functional.cross_entropy(reference(self.x), self.y).backward()
        lr = strategy.optimizer.param_groups[0]["lr"]
        self.gaps.append(
            max(
                float((p.detach() - (self.params[n] - lr * r.grad)).abs().max())
                for (n, p), r in zip(strategy.model.named_parameters(), reference.parameters(), strict=True)
            )
        )


def _train_first_two_tasks(strategy, ctx):
    for experience in list(ctx.benchmark.scenario.train_stream)[:2]:
        strategy.train(experience)


def test_gss_update_is_exactly_the_replay_batch_gradient_step():
    probe = _UpdateProbe()
    ctx = _context()
    ctx.plugins = [probe]
    strategy = build_strategy(STRATEGIES.get("gss"), ctx, STRATEGIES.get("gss").args())
    _train_first_two_tasks(strategy, ctx)
    assert len(strategy.memory) == BUFFER  # the swap-scoring branch ran during task 2
    assert len(probe.gaps) > 10 and max(probe.gaps) < 1e-6


def test_avalanche_gss_wrapper_contaminates_the_update():
    """Why clbench does not use Avalanche 0.6.0's ``GSS_greedy``: its scoring leaves gradients behind."""
    from avalanche.training.supervised import GSS_greedy

    probe = _UpdateProbe()
    ctx = _context()
    ctx.plugins = [probe]
    shape = list(ctx.benchmark.input_shape)
    strategy = GSS_greedy(mem_size=BUFFER, mem_strength=5, input_size=shape, **ctx.template_kwargs())
    _train_first_two_tasks(strategy, ctx)
    assert max(probe.gaps) > 1e-3


def test_gss_memory_takes_only_current_examples():
    ctx = _context()
    strategy = build_strategy(STRATEGIES.get("gss"), ctx, STRATEGIES.get("gss").args())
    _train_first_two_tasks(strategy, ctx)
    task_two = set(ctx.benchmark.task_classes[1])
    stored = strategy.memory.ext_mem_list_y[: len(strategy.memory)].tolist()
    assert task_two & set(stored)  # task 2 examples were swapped in
    task_one_x = ctx.benchmark.scenario.train_stream[0].dataset.eval()
    first = {tuple(task_one_x[i][0].flatten().tolist()) for i in range(len(task_one_x))}
    memory_x = [tuple(x.flatten().tolist()) for x in strategy.memory.ext_mem_list_x[: len(strategy.memory)]]
    assert len(set(memory_x)) == len(memory_x)  # replayed examples are never stored a second time
    assert all(x in first or y in task_two for x, y in zip(memory_x, stored, strict=True))


def test_mir_replays_the_task_just_learned():
    ctx = _context()
    strategy = build_strategy(STRATEGIES.get("mir"), ctx, STRATEGIES.get("mir").args())
    strategy.train(ctx.benchmark.scenario.train_stream[0])
    plugin = _plugin(strategy, "MIRPlugin")
    labels = {int(y) for y in plugin.storage_policy.buffer.targets}
    assert labels == set(ctx.benchmark.task_classes[0])
    strategy.mbatch = [torch.randn(8, 1, 8, 8), torch.full((8,), 2), torch.zeros(8, dtype=torch.long)]
    strategy.loss = ctx.criterion(ctx.model(strategy.mb_x), strategy.mb_y)
    before = float(strategy.loss.detach())
    plugin.before_backward(strategy)
    assert float(strategy.loss.detach()) > before  # the replay term was added from that memory


def test_mir_scoring_leaves_criterion_and_batchnorm_untouched():
    ctx = _context()
    ctx.model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, N_CLASSES))
    ctx.optimizer = torch.optim.SGD(ctx.model.parameters(), lr=0.1)
    strategy = build_strategy(STRATEGIES.get("mir"), ctx, STRATEGIES.get("mir").args())
    strategy.train(ctx.benchmark.scenario.train_stream[0])
    plugin = _plugin(strategy, "MIRPlugin")
    batchnorm = ctx.model[2]
    strategy.mbatch = [torch.randn(8, 1, 8, 8), torch.full((8,), 2), torch.zeros(8, dtype=torch.long)]
    strategy.loss = ctx.criterion(ctx.model(strategy.mb_x), strategy.mb_y)
    tracked = int(batchnorm.num_batches_tracked)
    plugin.before_backward(strategy)
    assert int(batchnorm.num_batches_tracked) == tracked + 1  # only the replayed batch's own forward
    assert ctx.criterion.reduction == "mean"


def _mir_with_batchnorm(**args):
    ctx = _context()
    ctx.model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, N_CLASSES))
    ctx.optimizer = torch.optim.SGD(ctx.model.parameters(), lr=0.1)
    entry = STRATEGIES.get("mir")
    strategy = build_strategy(entry, ctx, entry.args(**args))
    strategy.train(ctx.benchmark.scenario.train_stream[0])
    return ctx, strategy, _plugin(strategy, "MIRPlugin")


def test_mir_reference_scoring_moves_batchnorm_statistics_by_the_candidates_only():
    ctx, strategy, plugin = _mir_with_batchnorm(scoring_bn_stats="update")
    batchnorm = ctx.model[2]
    strategy.mbatch = [torch.randn(8, 1, 8, 8), torch.full((8,), 2), torch.zeros(8, dtype=torch.long)]
    strategy.loss = ctx.criterion(ctx.model(strategy.mb_x), strategy.mb_y)
    tracked = int(batchnorm.num_batches_tracked)
    plugin.before_backward(strategy)
    # The current model's pass over the candidates, then the replayed batch; not the virtual model's pass.
    assert int(batchnorm.num_batches_tracked) == tracked + 2
    assert ctx.criterion.reduction == "mean"


@pytest.mark.parametrize(("reference_bn_stats", "passes"), [("update", 1), ("frozen", 0)])
def test_gem_reference_passes_move_batchnorm_statistics_only_when_asked(reference_bn_stats, passes):
    ctx = _context()
    ctx.model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, N_CLASSES))
    ctx.optimizer = torch.optim.SGD(ctx.model.parameters(), lr=0.1)
    entry = STRATEGIES.get("gem")
    strategy = build_strategy(entry, ctx, entry.args(reference_bn_stats=reference_bn_stats))
    strategy.train(ctx.benchmark.scenario.train_stream[0])
    plugin = _plugin(strategy, "GEMPlugin")
    batchnorm = ctx.model[2]
    tracked, mean = int(batchnorm.num_batches_tracked), batchnorm.running_mean.clone()
    plugin.before_training_iteration(strategy)  # one reference pass over task 1's memory
    assert int(batchnorm.num_batches_tracked) == tracked + passes
    assert torch.equal(batchnorm.running_mean, mean) == (passes == 0)
    assert plugin.G.shape[0] == 1 and torch.count_nonzero(plugin.G) > 0  # the reference gradient is computed


def test_mir_reservoir_memory_holds_exactly_the_budget_of_seen_examples():
    from clbench.strategies.er import Reservoir

    _, _, plugin = _mir_with_batchnorm(memory="reservoir")
    assert isinstance(plugin.storage_policy, Reservoir)
    assert len(plugin.storage_policy.buffer) == BUFFER


def test_gdumb_trains_the_buffer_for_its_own_epochs():
    from clbench.strategies.gdumb import GDumbArgs

    entry = STRATEGIES.get("gdumb")
    assert build_strategy(entry, _context(), GDumbArgs()).train_epochs == 1  # the run's epochs per task
    assert build_strategy(entry, _context(), GDumbArgs(buffer_epochs=7)).train_epochs == 7


def _gdumb_run(tmp_path, train_at):
    """A 3-task GDumb run through the CLI, with a plugin counting its optimiser steps per task."""
    config = {
        "name": "gdumb",
        "benchmarks": [{"name": "synthetic", "args": {"n_tasks": 3, "n_classes": N_CLASSES, "train_per_class": 20}}],
        "strategies": [{"name": "gdumb", "args": {"buffer_epochs": 2, "train_at": train_at}}],
        "buffer_sizes": [BUFFER],
        "seeds": [1231],
        "backbone": {"name": "mlp", "args": {"hidden": [16]}},
        "training": {"epochs": 1, "batch_size": 8},
        "device": "cpu",
    }
    path = tmp_path / f"{train_at}.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / train_at
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    (result,) = map(load_result, out.glob("*.json"))
    return result


def test_gdumb_trained_at_the_last_task_trains_once_on_the_full_buffer_and_is_evaluated_once(tmp_path):
    every = _gdumb_run(tmp_path, "every_task")
    last = _gdumb_run(tmp_path, "last_task")
    assert every["evaluated_after_task"] == [0, 1, 2]
    assert last["evaluated_after_task"] == [2]
    assert last["metrics"]["class_il"]["A1"] is None and last["metrics"]["class_il"]["Ainf"] is not None
    assert "train_at" not in every["run_id"] and every["config"]["strategy"]["args"] == {"buffer_epochs": 2}


def test_gdumb_trained_at_the_last_task_takes_every_task_into_its_buffer():
    from clbench.strategies.gdumb import GDumbArgs

    ctx = _context()
    strategy = build_strategy(STRATEGIES.get("gdumb"), ctx, GDumbArgs(train_at="last_task"))
    steps = []
    strategy.plugins.append(_Counter(steps))
    for experience in ctx.benchmark.scenario.train_stream:
        strategy.train(experience)
    plugin = next(p for p in strategy.plugins if type(p).__name__ == "GDumbPlugin")
    stored = {int(y) for y in plugin.storage_policy.buffer.targets}
    assert stored == set(range(N_CLASSES))
    assert steps == [2] * -(-BUFFER // ctx.training.batch_size)  # one epoch of the buffer, in the last task only


def test_gdumb_clips_the_gradient_norm_before_each_update():
    from types import SimpleNamespace

    from clbench.errors import ConfigError
    from clbench.strategies.gdumb import ClipGradNorm, GDumbArgs

    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    (model(torch.randn(4, 8) * 100).sum() * 100).backward()
    norm = lambda: float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())  # noqa: E731
    assert norm() > 10
    ClipGradNorm(10.0).before_update(SimpleNamespace(model=model))
    assert norm() == pytest.approx(10.0, rel=1e-5)
    ClipGradNorm(10.0).before_update(SimpleNamespace(model=model))  # a shorter gradient is left as it is
    assert norm() == pytest.approx(10.0, rel=1e-5)
    entry = STRATEGIES.get("gdumb")
    built = build_strategy(entry, _context(), GDumbArgs(clip_grad_norm=10.0))
    assert any(isinstance(p, ClipGradNorm) for p in built.plugins)
    assert not any(isinstance(p, ClipGradNorm) for p in build_strategy(entry, _context(), GDumbArgs()).plugins)
    with pytest.raises(ConfigError, match=r"clip_grad_norm must be > 0, got 0\.0"):
        build_strategy(entry, _context(), GDumbArgs(clip_grad_norm=0.0))


class _Counter(SupervisedPlugin):
    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def after_training_iteration(self, strategy, **kwargs):
        self.steps.append(strategy.clock.train_exp_counter)


def test_agem_trains_past_more_tasks_than_examples_in_its_reference_batch():
    # Avalanche's draw takes sample_size // n_past_tasks examples a task: none from the
    # third task on with sample_size 2 (it crashed on 20-task Split CIFAR-100 at task 12).
    from clbench.strategies.agem import AGEMArgs

    ctx = _context(n_tasks=6)
    strategy = build_strategy(STRATEGIES.get("agem"), ctx, AGEMArgs(sample_size=2))
    plugin = _plugin(strategy, "AGEMPlugin")
    for experience in ctx.benchmark.scenario.train_stream:
        strategy.train(experience)
    assert len(plugin.buffers) == 6
    x, y, task = plugin.sample_from_memory()
    assert x.shape[0] == y.shape[0] == task.shape[0] == 2
    seen = {int(label) for _ in range(50) for label in plugin.sample_from_memory()[1]}
    assert len(seen) > 2  # drawn from more than two past tasks over the draws


def _anchor_output_change(anchor_weight):
    """How far one HAL step moves the anchors' outputs on a seeded tanh MLP."""
    from clbench.strategies.hal import HALArgs

    torch.manual_seed(0)
    ctx = _context()
    ctx.model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, N_CLASSES))
    ctx.optimizer = torch.optim.SGD(ctx.model.parameters(), lr=0.5)
    hal = build_strategy(STRATEGIES.get("hal"), ctx, HALArgs(anchor_weight=anchor_weight))
    hal.anchors = torch.randn(3, 1, 8, 8)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, N_CLASSES, (16,))
    before = ctx.model(hal.anchors).detach()
    hal.optimizer.zero_grad()
    hal.loss = nn.functional.cross_entropy(ctx.model(x), y)
    hal.loss.backward()
    hal.after_loss_backward()
    hal.optimizer.step()
    return float((ctx.model(hal.anchors).detach() - before).norm())


def test_hal_anchor_term_resists_the_change_of_the_anchors_outputs():
    plain = _anchor_output_change(0.0)
    assert _anchor_output_change(0.3) < 0.9 * plain
    assert _anchor_output_change(1.0) < _anchor_output_change(0.3)


class _FeatureNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, N_CLASSES)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def test_hal_feature_mean_update_leaves_batchnorm_statistics_alone():
    ctx = _context()
    ctx.model = _FeatureNet()
    ctx.optimizer = torch.optim.SGD(ctx.model.parameters(), lr=0.1)
    hal = build_strategy(STRATEGIES.get("hal"), ctx, STRATEGIES.get("hal").args())
    hal.mbatch = [torch.randn(8, 1, 8, 8) + 3, torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long)]
    hal._n_new = 8
    batchnorm = ctx.model.body[2]
    mean, tracked = batchnorm.running_mean.clone(), int(batchnorm.num_batches_tracked)
    hal.after_step()
    assert hal.mean_features is not None and hal.mean_features.shape == (16,)
    assert torch.equal(batchnorm.running_mean, mean) and int(batchnorm.num_batches_tracked) == tracked


def test_every_rehearsal_memory_but_gss_shares_one_interface():
    from clbench.training.memory import ReplayMemory

    def build(name, **args):
        entry = STRATEGIES.get(name)
        return build_strategy(entry, _context(), entry.args(**args))

    memories = {
        "er": _plugin(build("er", replay_forward="separate"), "SeparateForwardReplay").memory,
        "er_every_batch": _plugin(
            build("er", replay_forward="separate", memory_update="every_batch"), "SeparateForwardReplay"
        ).memory,
        "mir": _plugin(build("mir"), "MIRPlugin").memory,
        "mir_reservoir": _plugin(build("mir", memory="reservoir"), "MIRPlugin").memory,
        "gmed": build("gmed").storage,
        "hal": build("hal").storage,
        "metasp": build("metasp").storage,
        "metasp_rehsel": build("metasp_rehsel").storage,
    }
    for name, memory in memories.items():
        assert isinstance(memory, ReplayMemory), name
        assert len(memory) == 0, name
