"""DER/DER++, ER-ACE, iCaRL, LwF, online EWC and SCR: each point where they differ from Avalanche 0.6.0."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from tiny_strategies import tiny_strategy, two_tasks
from torch import nn

from clbench.backbones import MLP, CosineClassifier
from clbench.strategies.der import DERArgs
from clbench.strategies.er_ace import ERACEArgs, asymmetric_cross_entropy
from clbench.strategies.ewc import weighted_fisher_diagonal
from clbench.strategies.icarl import ICaRLArgs, herding_order
from clbench.strategies.lwf import LwFArgs
from clbench.strategies.scr import contrastive_views, supervised_contrastive_loss
from clbench.training import STRATEGIES
from clbench.training.ncm import NO_MEAN_SCORE, ncm_scores


def _mlp(bench, seed=0, batchnorm=False):
    torch.manual_seed(seed)
    model = MLP(int(np.prod(bench.input_shape)), bench.n_classes, hidden=(16,))
    if batchnorm:
        model.body = nn.Sequential(model.body, nn.BatchNorm1d(16))  # type: ignore[attr-defined]
    return model


class _Outputs(SupervisedPlugin):
    """Records each training step's output and the model forwards it made."""

    def __init__(self):
        super().__init__()
        self.inputs, self.outputs, self.memory_sizes = [], [], []

    def after_forward(self, strategy, **kwargs):
        if strategy.is_training:
            self.inputs.append(strategy.mb_x.detach().clone())
            self.outputs.append(strategy.mb_output.detach().float().clone())
            memory = strategy.memory if hasattr(strategy, "memory") else strategy.plugins[0].memory
            self.memory_sizes.append(len(memory))


def test_der_stores_the_logits_of_the_step_that_saw_the_example_and_replays_from_the_first_task():
    # Avalanche's DER fills its buffer after each experience with the end-of-task logits, and
    # replays from the second experience on: both assertions fail there.
    bench = two_tasks()
    recorder = _Outputs()
    strategy = tiny_strategy("der", bench, _mlp(bench), plugins=[recorder])
    strategy.train(bench.scenario.train_stream[0])
    memory = strategy.plugins[0].memory
    seen_x, seen_logits = torch.cat(recorder.inputs), torch.cat(recorder.outputs)
    for x, logits in zip(memory.x[: len(memory)], memory.extra["logits"], strict=True):
        step_row = (seen_x == x).flatten(1).all(1).nonzero().flatten()
        assert len(step_row) == 1 and torch.equal(seen_logits[step_row[0]], logits)
    assert recorder.memory_sizes[1] == 4  # the second step already replays the first batch


@pytest.mark.parametrize(("beta", "forwards"), [(0.0, 2), (0.5, 3)])
def test_der_plus_plus_forwards_two_independent_memory_draws(beta, forwards):
    bench = two_tasks()
    model = _mlp(bench)
    calls = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    strategy = tiny_strategy("der", bench, model, args=DERArgs(beta=beta))
    strategy.train(bench.scenario.train_stream[0])
    steps = len(bench.scenario.train_stream[0].dataset) // 4
    replayed_steps = steps - 1  # the memory is empty for the first step only
    assert len(calls) == steps + (forwards - 1) * replayed_steps


def test_asymmetric_cross_entropy_keeps_present_and_unseen_classes_only():
    # 6 classes, seen so far up to class 3, a batch of classes 2 and 3: the softmax runs over
    # {2, 3, 4, 5}. Avalanche's ACE criterion keeps {2, 3} only (unseen classes left out).
    torch.manual_seed(0)
    logits = torch.randn(4, 6)
    labels = torch.tensor([2, 3, 2, 3])
    expected = F.cross_entropy(logits[:, 2:], labels - 2)
    assert torch.allclose(asymmetric_cross_entropy(logits, labels, seen_max=3), expected, atol=1e-6)
    moved_old, moved_unseen = logits.clone(), logits.clone()
    moved_old[:, 0] += 5.0
    moved_unseen[:, 5] += 5.0
    assert torch.allclose(asymmetric_cross_entropy(moved_old, labels, 3), expected, atol=1e-6)
    assert asymmetric_cross_entropy(moved_unseen, labels, 3) > expected + 0.1


def test_er_ace_replays_during_the_first_task_with_the_cosine_head_of_its_reference():
    bench = two_tasks()
    recorder = _Outputs()
    strategy = tiny_strategy("er_ace", bench, _mlp(bench), plugins=[recorder])
    assert isinstance(strategy.model.classifier, CosineClassifier)
    assert all(p is not None for p in strategy.optimizer.param_groups[0]["params"])
    head = strategy.model.classifier.weight
    assert any(p is head for p in strategy.optimizer.param_groups[0]["params"])
    strategy.train(bench.scenario.train_stream[0])
    assert recorder.memory_sizes[1] > 0
    linear = tiny_strategy("er_ace", bench, _mlp(bench), args=ERACEArgs(classifier="linear"))
    assert isinstance(linear.model.classifier, nn.Linear)


def test_er_ace_sums_the_stream_and_memory_losses():
    # Avalanche's ACE criterion returns their mean, half the step of both.
    bench = two_tasks()
    strategy = tiny_strategy("er_ace", bench, _mlp(bench), args=ERACEArgs(classifier="linear"))
    strategy.train(bench.scenario.train_stream[0])
    memory_x, memory_y = strategy.memory.x[:4], strategy.memory.y[:4]
    strategy.memory.draw = lambda *args, **kwargs: (memory_x, memory_y, torch.arange(4))
    x, y = memory_x[:2], torch.tensor([2, 3])
    strategy.is_training = True
    strategy.mbatch = [x, y, torch.zeros(2, dtype=torch.long)]
    with torch.no_grad():
        strategy.mb_output = strategy.model(x)
        loss = strategy.criterion()
        stream = asymmetric_cross_entropy(strategy.mb_output, y, seen_max=3)
        replay = F.cross_entropy(strategy.model(memory_x), memory_y)
    assert torch.allclose(loss, stream + replay, atol=1e-6)


def test_online_ewc_fisher_is_the_per_example_one_not_the_squared_batch_gradient():
    # Avalanche squares the mini-batch mean gradient, about 1/B of the per-example Fisher here.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(5, 3))
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for xi, yi in zip(x, y, strict=True):
        model.zero_grad()
        log_p = -F.cross_entropy(model(xi[None]), yi[None])
        log_p.backward()
        for name, p in model.named_parameters():
            expected[name] += log_p.exp().detach() * p.grad**2
    fisher = weighted_fisher_diagonal(model, x, y)
    for name in expected:
        assert torch.allclose(fisher[name], expected[name], rtol=1e-4, atol=1e-7), name
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    batch_squared = model[1].weight.grad ** 2 * len(y)
    assert not torch.allclose(batch_squared, fisher["1.weight"], rtol=0.1)


def test_ewc_penalty_pulls_toward_the_first_task_s_weights_on_the_second():
    bench = two_tasks()
    strategy = tiny_strategy("ewc", bench, _mlp(bench))
    strategy.train(bench.scenario.train_stream[0])
    plugin = strategy.plugins[0]
    assert plugin.penalty(strategy.model).item() == 0.0
    with torch.no_grad():
        for p in strategy.model.parameters():
            p.add_(0.1)
    assert plugin.penalty(strategy.model).item() > 0.0


def test_lwf_s_teacher_keeps_its_running_statistics_while_the_next_task_trains():
    # Avalanche's LwF copies the model in training mode: its BatchNorm statistics drift with every step.
    bench = two_tasks()
    strategy = tiny_strategy("lwf", bench, _mlp(bench, batchnorm=True))
    strategy.train(bench.scenario.train_stream[0])
    teacher = strategy.plugins[0].previous
    before = teacher.body[1].running_mean.clone()
    strategy.train(bench.scenario.train_stream[1])
    assert torch.equal(teacher.body[1].running_mean, before)
    assert strategy.plugins[0].old_classes == [0, 1, 2, 3]


def test_lwf_as_the_survey_s_code_weights_by_tasks_and_distils_every_output_from_a_training_mode_teacher():
    # RaptorMai/online-continual-learning agents/lwf.py: 1/(t+1) CE + t/(t+1) T² KD over the full
    # logits of a deep copy taken in training mode (kd_manager.py).
    bench = two_tasks()
    recorder = _LossAtBackward()
    args = LwFArgs(weighting="task_ratio", distilled_outputs="all", teacher_mode="train")
    strategy = tiny_strategy("lwf", bench, _mlp(bench, batchnorm=True), plugins=[recorder], args=args)
    strategy.train(bench.scenario.train_stream[0])
    teacher = copy.deepcopy(strategy.plugins[0].previous)
    assert teacher.training
    strategy.train(bench.scenario.train_stream[1])
    loss, x, y, model = recorder.steps[1]
    with torch.no_grad():
        logits, old_logits = model(x), teacher(x)  # both normalise the batch by its own statistics
        kd = 4 * F.kl_div(F.log_softmax(logits / 2, dim=1), F.softmax(old_logits / 2, dim=1), reduction="batchmean")
        expected = F.cross_entropy(logits, y) / 2 + kd / 2
    assert loss == pytest.approx(float(expected), rel=1e-5)
    first_loss, first_x, first_y, first_model = recorder.steps[0]  # first task: no teacher, the plain CE
    with torch.no_grad():
        assert first_loss == pytest.approx(float(F.cross_entropy(first_model(first_x), first_y)), rel=1e-5)


def test_herding_picks_the_examples_whose_running_mean_follows_the_class_mean():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.6], [0.9, 0.1]])
    # mean (0.625, 0.425): first the closest single point (0.6, 0.6) then the one that brings
    # the two-point mean closest to it, (0.9, 0.1) -> (0.75, 0.35), rather than (1, 0) -> (0.8, 0.3).
    assert herding_order(features, 2).tolist() == [2, 3]


def test_nearest_mean_scores_pick_the_nearest_mean_within_any_allowed_classes():
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [float("nan"), float("nan")], [-1.0, 0.0]])
    features = F.normalize(torch.tensor([[0.9, 0.2], [-0.8, 0.3]]), dim=1)
    scores = ncm_scores(features, means)
    assert scores[:, 2].eq(NO_MEAN_SCORE).all()
    assert scores.argmax(1).tolist() == [0, 3]  # class-IL: all classes
    assert scores[:, [0, 1]].argmax(1).tolist() == [0, 1]  # task-IL of task {0, 1}: nearest among its means


def test_icarl_evaluates_by_the_nearest_mean_of_its_herded_exemplars():
    bench = two_tasks()
    strategy = tiny_strategy("icarl", bench, _mlp(bench))
    for experience in bench.scenario.train_stream:
        strategy.train(experience)
    memory = strategy.memory
    assert len(memory) == 8 and sorted(memory.y.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]  # 8 // 4 classes
    strategy.model.eval()
    with torch.no_grad():
        f_mem = F.normalize(strategy.model.features(memory.x), dim=1)
        means = torch.stack([F.normalize(f_mem[memory.y == c].mean(0), dim=0) for c in range(4)])
        x = memory.x[:3]
        expected = -(torch.cdist(F.normalize(strategy.model.features(x), dim=1), means) ** 2)
    strategy.is_training = False
    strategy.mbatch = [x, torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)]
    strategy.nearest_mean.invalidate()
    assert torch.allclose(strategy.forward(), expected, atol=1e-5)


class _LossAtBackward(SupervisedPlugin):
    """Records the first training step's loss, batch and network of each experience."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def before_backward(self, strategy, **kwargs):
        if len(self.steps) < strategy.clock.train_exp_counter + 1:
            model = copy.deepcopy(strategy.model)
            self.steps.append((float(strategy.loss.detach()), strategy.mb_x.clone(), strategy.mb_y.clone(), model))


def test_icarl_as_er_ace_s_code_sums_the_stream_bce_and_the_memory_s_distillation_over_all_outputs():
    # pclucas14/AML methods/icarl.py: BCE(sum) / n over every output for the stream batch
    # (one-hot), and for a memory batch of earlier tasks, forwarded apart, toward the
    # previous network's sigmoid outputs.
    bench = two_tasks()
    recorder = _LossAtBackward()
    args = ICaRLArgs(memory="reservoir_past_tasks", loss="split", ncm_features="raw")
    strategy = tiny_strategy("icarl", bench, _mlp(bench), plugins=[recorder], args=args)
    strategy.train(bench.scenario.train_stream[0])
    memory = strategy.memory
    assert len(memory) == 8 and set(memory.y.tolist()) == {0, 1}  # the first task, offered once learned
    replay_x = memory.x[:4].clone()
    memory.draw = lambda strategy, count, augment: (replay_x, memory.y[:4], torch.arange(4))
    previous = copy.deepcopy(strategy.model).eval()
    strategy.train(bench.scenario.train_stream[1])
    loss, x, y, model = recorder.steps[1]
    with torch.no_grad():
        stream = F.binary_cross_entropy_with_logits(model(x), F.one_hot(y, 4).float(), reduction="sum") / len(y)
        target = torch.sigmoid(previous(replay_x))
        replay = F.binary_cross_entropy_with_logits(model(replay_x), target, reduction="sum") / 4
    assert len(x) == 4  # the memory batch is not joined to the stream batch
    assert loss == pytest.approx(float(stream + replay), rel=1e-5)
    first_loss, first_x, first_y, first_model = recorder.steps[0]  # first task: no previous network, no replay
    with torch.no_grad():
        first_stream = F.binary_cross_entropy_with_logits(
            first_model(first_x), F.one_hot(first_y, 4).float(), reduction="sum"
        )
    assert first_loss == pytest.approx(float(first_stream) / len(first_y), rel=1e-5)


def test_icarl_s_raw_nearest_mean_uses_unnormalised_features_and_means():
    bench = two_tasks()
    args = ICaRLArgs(memory="reservoir_past_tasks", ncm_features="raw")
    strategy = tiny_strategy("icarl", bench, _mlp(bench), args=args)
    for experience in bench.scenario.train_stream:
        strategy.train(experience)
    memory = strategy.memory
    strategy.model.eval()
    with torch.no_grad():
        f_mem = strategy.model.features(memory.x)
        present = sorted(set(memory.y.tolist()))
        means = torch.stack([f_mem[memory.y == c].mean(0) for c in present])
        x = memory.x[:3]
        expected = -(torch.cdist(strategy.model.features(x), means) ** 2)
    strategy.is_training = False
    strategy.mbatch = [x, torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)]
    strategy.nearest_mean.invalidate()
    assert torch.allclose(strategy.forward()[:, present], expected, atol=1e-4)


def _naive_supcon(views, labels, temperature):
    z = torch.cat([views[:, 0], views[:, 1]])
    y = labels.repeat(2)
    total = 0.0
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        denominator = torch.logsumexp(torch.stack([z[i] @ z[a] / temperature for a in others]), 0)
        positives = [p for p in others if y[p] == y[i]]
        total += -sum(z[i] @ z[p] / temperature - denominator for p in positives) / len(positives)
    return total / len(z)


def test_supervised_contrastive_loss_matches_its_definition():
    torch.manual_seed(0)
    views = F.normalize(torch.randn(6, 2, 4), dim=2)
    labels = torch.tensor([0, 1, 0, 2, 1, 2])
    expected = _naive_supcon(views, labels, 0.07)
    assert torch.allclose(supervised_contrastive_loss(views, labels, 0.07), expected, rtol=1e-5)


def test_scr_views_stay_images_of_the_same_range_and_differ_from_the_input():
    torch.manual_seed(0)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    x = (torch.rand(8, 3, 16, 16) - mean) / std
    views = contrastive_views(x, mean, std)
    pixels = views * std + mean
    assert views.shape == x.shape
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert (views - x).abs().mean() > 0.05


def test_scr_trains_its_projection_head_and_not_the_classifier():
    bench = two_tasks()
    strategy = tiny_strategy("scr", bench, _mlp(bench))
    classifier_before = strategy.model.classifier.weight.detach().clone()
    head_before = strategy.model.head[0].weight.detach().clone()
    strategy.train(bench.scenario.train_stream[0])
    assert torch.equal(strategy.model.classifier.weight, classifier_before)
    assert not torch.equal(strategy.model.head[0].weight, head_before)


@pytest.mark.parametrize("name", ["der", "er_ace", "icarl", "scr"])
def test_the_new_replay_strategies_declare_their_buffer(name):
    assert STRATEGIES.get(name).traits.get("uses_buffer")


@pytest.mark.parametrize("name", ["er_ace", "icarl", "scr"])
def test_a_backbone_without_features_and_classifier_is_refused_in_one_line(name):
    from clbench.config import TrainingConfig
    from clbench.errors import ConfigError
    from clbench.training import StrategyContext, build_strategy

    bench = two_tasks()
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(bench.input_shape)), bench.n_classes))
    ctx = StrategyContext.for_training(
        model, TrainingConfig(), benchmark=bench, device=torch.device("cpu"), seed=0, buffer_size=8
    )
    entry = STRATEGIES.get(name)
    with pytest.raises(ConfigError, match="needs a backbone with features"):
        build_strategy(entry, ctx, entry.args())


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("der", {"alpha": -1.0}, "der: alpha must be at least 0, got -1.0"),
        ("ewc", {"decay": 1.5}, r"ewc: decay must be in \[0, 1\], got 1.5"),
        ("lwf", {"temperature": 0.0}, "lwf: temperature must be positive, got 0.0"),
        ("scr", {"memory_batch_size": 0}, "scr: memory_batch_size must be at least 1, got 0"),
        ("icarl", {"memory": "ring"}, "icarl"),
        ("er_ace", {"classifier": "cos"}, "er_ace"),
    ],
)
def test_bad_arguments_fail_when_the_grid_is_expanded(name, args, message):
    from clbench.config import experiment_from_mapping
    from clbench.errors import ConfigError
    from clbench.grid import expand_grid

    config = {"name": "t", "benchmarks": [{"name": "synthetic"}], "strategies": [{"name": name, "args": args}]}
    with pytest.raises(ConfigError, match=message):
        expand_grid(experiment_from_mapping(config))
