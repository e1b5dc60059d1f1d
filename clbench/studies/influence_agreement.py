"""How faithful ``meta_lastlayer`` is to the exact ``meta`` influence on a real MetaSP run.

``clbench influence-agreement`` trains MetaSP (exact influence) on a benchmark and, at the
start of every task's MetaSP epochs, saves the model as a checkpoint and draws MetaSP
batches from it as a MetaSP step does (B_new and V_new from the task, B_old and V_old
from the memory). On each batch both estimators see the same model and sets, and the
command reports per task: the sign agreement of the stability, plasticity and fused
influence, the Spearman correlation of the fused influence (= of the MetaSP weights,
which are monotone in it), and the mean relative difference of the MetaSP weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from clbench.influence.estimators import make_estimator
from clbench.influence.meta import meta_influence


@dataclass(frozen=True)
class AgreementArgs:
    """Arguments of ``clbench influence-agreement``."""

    benchmark: str = field(default="split_cifar10", metadata={"help": "registered benchmark"})
    benchmark_args: dict[str, Any] = field(
        default_factory=lambda: {"source": "folder", "train_per_class": 500},
        metadata={"help": "the benchmark's arguments"},
    )
    data_root: str = field(default="data", metadata={"help": "dataset root"})
    backbone: str = field(default="resnet18", metadata={"help": "registered backbone"})
    backbone_args: dict[str, Any] = field(default_factory=lambda: {"nf": 20}, metadata={"help": "its arguments"})
    epochs: int = field(default=3, metadata={"help": "epochs per task"})
    meta_epochs: int = field(default=1, metadata={"help": "MetaSP epochs at the end of tasks 2.."})
    buffer_size: int = field(default=500, metadata={"help": "memory size (|V| = buffer_size / 10)"})
    batch_size: int = field(default=32, metadata={"help": "B_new and B_old size"})
    batches_per_task: int = field(default=20, metadata={"help": "MetaSP batches compared at each checkpoint"})
    seed: int = field(default=1231, metadata={"help": "random seed"})
    device: str = field(default="cpu", metadata={"help": "torch device"})


def compare_batch(model: torch.nn.Module, batch: Any, sets: list[Any], lr: float) -> dict[str, float]:
    """Exact ``meta`` vs ``meta_lastlayer`` influence on one MetaSP batch."""
    from clbench.strategies.metasp import MetaSPArgs, fuse_influence

    exact = meta_influence(model, batch, sets, lr=lr)
    last = make_estimator("meta_lastlayer")(model, batch, sets, lr)
    fused_exact, fused_last = fuse_influence(exact, MetaSPArgs()), fuse_influence(last, MetaSPArgs())
    row: dict[str, float] = {}
    for name, a, b in (
        ("S", exact.influence[0], last.influence[0]),
        ("P", exact.influence[1], last.influence[1]),
        ("SP", fused_exact.fused, fused_last.fused),
    ):
        row[f"sign_agreement_{name}"] = float((torch.sign(a) == torch.sign(b)).float().mean())
    row["spearman_SP"] = float(spearmanr(fused_exact.fused.cpu().numpy(), fused_last.fused.cpu().numpy())[0])
    weights_exact, weights_last = fused_exact.weights, fused_last.weights
    row["weight_rel_diff"] = float(((weights_last - weights_exact).abs() / weights_exact.abs()).mean())
    return row


def run_agreement(args: AgreementArgs, out: Path) -> list[dict[str, float]]:
    """Train MetaSP, compare the estimators at each checkpoint, return one row per task."""
    from avalanche.core import SupervisedPlugin

    from clbench.backbones import BACKBONES
    from clbench.config import TrainingConfig, from_mapping
    from clbench.datasets.base import DataContext, load_benchmark
    from clbench.runner import resolve_device, seed_everything
    from clbench.training.context import STRATEGIES, StrategyContext, build_strategy

    device = resolve_device(args.device)
    seed_everything(args.seed, True)
    benchmark = load_benchmark(args.benchmark, args.benchmark_args, DataContext(Path(args.data_root), args.seed))
    entry = BACKBONES.get(args.backbone)
    typed_backbone: Any = from_mapping(entry.args, args.backbone_args, "backbone")
    model = entry.factory(typed_backbone, benchmark.input_shape, benchmark.n_classes)
    model = model.to(device)
    training = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, replay_batch_size=args.batch_size)
    rows: list[dict[str, float]] = []
    out.mkdir(parents=True, exist_ok=True)

    class Checkpoints(SupervisedPlugin):  # type: ignore[misc]
        def before_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
            if strategy.phase() != "meta" or strategy.clock.train_exp_epochs != args.epochs - args.meta_epochs:
                return
            task = int(strategy.experience.current_experience)
            torch.save(strategy.model.state_dict(), out / f"checkpoint_task{task + 1}.pt")
            rows.append({"task": task + 1, **_compare_at(strategy, args)})

    context = StrategyContext.for_training(
        model,
        training,
        benchmark=benchmark,
        device=device,
        seed=args.seed,
        buffer_size=args.buffer_size,
        plugins=[Checkpoints()],
    )
    metasp = STRATEGIES.get("metasp")
    strategy = build_strategy(metasp, context, from_mapping(metasp.args, {"meta_epochs": args.meta_epochs}, "metasp"))
    for experience in benchmark.scenario.train_stream:
        strategy.train(experience, eval_streams=[])
    return rows


def _compare_at(strategy: Any, args: AgreementArgs) -> dict[str, float]:
    """Mean agreement over ``batches_per_task`` MetaSP batches drawn at the strategy's state."""
    dataset = strategy.experience.dataset
    lr = float(strategy.optimizer.param_groups[0]["lr"])
    per_batch = []
    for _ in range(args.batches_per_task):
        new_x, new_y = strategy.fetch_examples(
            dataset, torch.randperm(len(dataset))[: args.batch_size].tolist(), augment=True
        )
        old_x, old_y, _ = strategy.sample_memory(args.batch_size, train=True)
        v_old = strategy.sample_memory(strategy.val_size, train=False)[:2]
        v_new = strategy.fetch_examples(
            dataset, torch.randperm(len(dataset))[: strategy.val_size].tolist(), augment=False
        )
        batch = (torch.cat([new_x, old_x]).float(), torch.cat([new_y, old_y]))
        sets = [(v_old[0].float(), v_old[1]), (v_new[0].float(), v_new[1])]
        per_batch.append(compare_batch(strategy.model, batch, sets, lr))
    return {key: float(np.mean([row[key] for row in per_batch])) for key in per_batch[0]}
