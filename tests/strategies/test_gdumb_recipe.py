"""GDumb's paper recipe as options: its SGDR schedule and CutMix, against their definitions."""

import numpy as np
import pytest
import torch
from avalanche.training.plugins import SupervisedPlugin
from tiny_strategies import tiny_strategy, two_tasks
from torch import nn

from clbench.config import TrainingConfig
from clbench.errors import ConfigError
from clbench.strategies.gdumb import GDumbArgs, cutmix, sgdr_lr
from clbench.training import STRATEGIES, StrategyContext, build_strategy


def test_sgdr_lr_is_torchs_warm_restarts_stepped_as_gdumbs_code_steps_it():
    max_lr, min_lr = 0.05, 0.0005
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=max_lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=1, T_mult=2, eta_min=min_lr)
    for epoch in range(256):
        if epoch == 0:  # GDumb's main.py: one warm-up epoch at a tenth, then the maximum, then the schedule
            optimizer.param_groups[0]["lr"] = max_lr * 0.1
        elif epoch == 1:
            optimizer.param_groups[0]["lr"] = max_lr
        else:
            scheduler.step()
        assert sgdr_lr(epoch, max_lr) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
    assert [e for e in range(1, 256) if sgdr_lr(e, max_lr) == pytest.approx(max_lr)] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert sgdr_lr(255, max_lr) < 1.02 * min_lr  # the 256th epoch ends a cycle at the bottom


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_replaces_one_box_of_each_image_by_its_partner_s_and_weighs_the_labels_by_area(seed):
    x = torch.rand(6, 3, 16, 16)
    original = x.clone()
    y = torch.arange(6)  # labels are the indices, so the partners' labels name the partners
    mixed, partner, kept = cutmix(x, y, torch.Generator().manual_seed(seed))
    assert torch.equal(x, original)  # a new batch
    boxes = []
    for i in (i for i in range(6) if partner[i] != i):
        changed = (mixed[i] != x[i]).any(dim=0)
        assert bool((mixed[i] == x[partner[i]]).all(dim=0)[changed].all())
        boxes.append(changed)
    assert boxes and all(torch.equal(b, boxes[0]) for b in boxes)  # one box for the whole batch
    rows, cols = boxes[0].any(dim=1).nonzero(), boxes[0].any(dim=0).nonzero()
    area = int(rows.max() - rows.min() + 1) * int(cols.max() - cols.min() + 1) if len(rows) else 0
    assert int(boxes[0].sum()) == area  # a rectangle
    assert kept == pytest.approx(1 - area / 256)


def _reference_kept_fraction(rng: np.random.Generator, side: int) -> float:
    """The unchanged fraction of one draw of GDumb's ``rand_bbox`` (alpha 1), written from its definition."""
    cut = int(side * np.sqrt(1.0 - rng.beta(1.0, 1.0)))
    centre_x, centre_y = rng.integers(side), rng.integers(side)
    x1, x2 = np.clip([centre_x - cut // 2, centre_x + cut // 2], 0, side)
    y1, y2 = np.clip([centre_y - cut // 2, centre_y + cut // 2], 0, side)
    return 1.0 - (x2 - x1) * (y2 - y1) / side**2


def test_cutmix_keeps_as_much_of_an_image_on_average_as_gdumbs_boxes():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 1, 32, 32), torch.arange(2)
    kept = np.mean([cutmix(x, y, generator)[2] for _ in range(4000)])
    rng = np.random.default_rng(0)
    reference = np.mean([_reference_kept_fraction(rng, 32) for _ in range(4000)])
    assert kept == pytest.approx(reference, abs=0.02)  # two samples of 4000: std of the difference ~0.006
    assert kept > 0.6  # above 1 - E[lam] = 0.5: boxes are clipped at the border


class _Recorder(SupervisedPlugin):
    """Each epoch's lr and, for each step, whether its batch was cut-mixed."""

    def __init__(self):
        super().__init__()
        self.lrs, self.mixed = [], []

    def before_training_epoch(self, strategy, **kwargs):
        self.lrs.append(strategy.optimizer.param_groups[0]["lr"])

    def before_forward(self, strategy, **kwargs):
        self.mixed.append(strategy.partner_labels is not None)


def _trained(args, seed=0):
    torch.manual_seed(seed)
    recorder = _Recorder()
    bench = two_tasks()
    strategy = tiny_strategy(
        "gdumb", bench, nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), args=args, plugins=[recorder]
    )
    for experience in bench.scenario.train_stream:
        strategy.train(experience)
    return strategy, recorder


def test_gdumb_with_its_paper_recipe_schedules_each_training_and_cut_mixes_its_batches():
    lr = TrainingConfig().lr
    _, recorder = _trained(GDumbArgs(buffer_epochs=3, lr_schedule="sgdr", cutmix_prob=1.0))
    assert recorder.lrs == pytest.approx([sgdr_lr(e, lr) for e in range(3)] * 2)  # restarted for each task's training
    assert recorder.mixed and all(recorder.mixed)
    _, plain = _trained(GDumbArgs(buffer_epochs=3))
    assert plain.lrs == [lr] * 6 and not any(plain.mixed)
    _, half = _trained(GDumbArgs(buffer_epochs=20, cutmix_prob=0.5))
    assert 0.3 < sum(half.mixed) / len(half.mixed) < 0.7


def test_gdumb_s_cut_mixed_loss_is_the_area_weighted_sum_of_the_two_labels_losses():
    strategy, _ = _trained(GDumbArgs(buffer_epochs=1, cutmix_prob=1.0))
    strategy.mb_output = torch.randn(4, 4)
    strategy.mbatch = [torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), torch.zeros(4, dtype=torch.long)]
    strategy.partner_labels, strategy.kept_fraction = torch.tensor([3, 2, 1, 0]), 0.25
    ce = nn.functional.cross_entropy
    expected = 0.25 * ce(strategy.mb_output, strategy.mb_y) + 0.75 * ce(strategy.mb_output, strategy.partner_labels)
    assert float(strategy.criterion()) == pytest.approx(float(expected), rel=1e-6)
    strategy.partner_labels = None
    assert float(strategy.criterion()) == pytest.approx(float(ce(strategy.mb_output, strategy.mb_y)), rel=1e-6)


def test_gdumb_s_cutmix_draws_are_the_seed_s():
    first = _trained(GDumbArgs(buffer_epochs=4, cutmix_prob=0.5))[0].model.state_dict()
    again = _trained(GDumbArgs(buffer_epochs=4, cutmix_prob=0.5))[0].model.state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize(
    ("args", "training", "message"),
    [
        (GDumbArgs(cutmix_prob=1.5), TrainingConfig(), r"cutmix_prob must be in \[0, 1\], got 1\.5"),
        (GDumbArgs(lr_schedule="sgdr"), TrainingConfig(lr_milestones=(2,)), r"lr_schedule=sgdr sets the lr .*"),
    ],
)
def test_gdumb_refuses_a_recipe_out_of_range_in_one_line(args, training, message):
    bench = two_tasks()
    ctx = StrategyContext.for_training(
        nn.Linear(64, 4), training, benchmark=bench, device=torch.device("cpu"), seed=0, buffer_size=8
    )
    with pytest.raises(ConfigError, match=message):
        build_strategy(STRATEGIES.get("gdumb"), ctx, args)
