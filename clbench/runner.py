"""One run end to end: seed, build the benchmark, backbone and strategy, train task by task.

After each task one evaluation pass over every task's test set fills a row of the class-IL
and of the task-IL accuracy matrix; :func:`execute_run` returns the result record (the grid
and its launchers are in :mod:`clbench.grid` and :mod:`clbench.launch`).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clbench.backbones import BACKBONES
from clbench.config import (
    RunConfig,
    TrainingConfig,
    config_to_dict,
    from_mapping,
)
from clbench.datasets.base import Benchmark, DataContext, load_benchmark
from clbench.errors import ClbenchError, ConfigError
from clbench.evaluation import AccuracyCollector, AccuracyRow
from clbench.fastdata import DevicePathOptions, Precision
from clbench.loggers import LOGGERS
from clbench.metrics import summarize, summarize_final_only
from clbench.results import SCHEMA_VERSION
from clbench.strategies.base import STRATEGIES, StrategyContext


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU.

    Raises:
        ClbenchError: The device string is invalid or names a CUDA device that is not there.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ClbenchError(f"invalid device {name!r}; valid choices: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ClbenchError(f"device {name!r} requested but CUDA is not available; valid choices here: auto, cpu")
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and PyTorch; optionally ask PyTorch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def environment_info(device: torch.device) -> dict[str, Any]:
    """Versions and hardware recorded with every result."""

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "clbench": version("clbench"),
        "torch": torch.__version__,
        "torchvision": version("torchvision"),
        "avalanche": version("avalanche-lib"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
    }


class _EpochProgress:
    """Forwards each finished training epoch to a callback (for progress bars)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        from avalanche.core import SupervisedPlugin

        self._callback = callback
        outer = self

        class Plugin(SupervisedPlugin):  # type: ignore[misc]
            def after_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
                outer._callback()

        self.plugin = Plugin()


def _make_evaluator(loggers: list[Any]) -> Any:
    from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
    from avalanche.training.plugins import EvaluationPlugin

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        return EvaluationPlugin(
            accuracy_metrics(epoch=True, experience=True),
            loss_metrics(epoch=True, experience=True),
            loggers=loggers,
        )


@dataclass
class _Matrices:
    class_il: list[list[float]] = field(default_factory=list)
    task_il: list[list[float]] = field(default_factory=list)
    after_task: list[int] = field(default_factory=list)

    def add(self, task: int, row: AccuracyRow) -> None:
        self.class_il.append(row.class_il)
        self.task_il.append(row.task_il)
        self.after_task.append(task)


def _log_row(loggers: list[Any], task: int, row: AccuracyRow) -> None:
    for logger in loggers:
        for k, (cil, til) in enumerate(zip(row.class_il, row.task_il, strict=True)):
            logger.log_single_metric(f"clbench/class_il/task{k:02d}", cil, task)
            logger.log_single_metric(f"clbench/task_il/task{k:02d}", til, task)
        seen = row.class_il[: task + 1]
        logger.log_single_metric("clbench/class_il/average_seen", sum(seen) / len(seen), task)


def device_path_options(training: TrainingConfig, seed: int) -> DevicePathOptions | None:
    """The device path's settings, or None for Avalanche's loaders.

    Raises:
        ConfigError: A device-path-only setting is asked for on the Avalanche path.
    """
    if training.data_path == "avalanche":
        if training.channels_last or training.precision != "fp32":
            raise ConfigError(
                f"training.channels_last={training.channels_last} / training.precision={training.precision} "
                "need training.data_path=device; valid choices on the avalanche path: false / fp32"
            )
        return None
    precision: Precision = "bf16" if training.precision == "bf16" else "fp32"
    return DevicePathOptions(channels_last=bool(training.channels_last), precision=precision, seed=seed)


def execute_run(
    run: RunConfig,
    data_root: Path,
    loggers: tuple[str, ...] = (),
    log_dir: Path | None = None,
    on_epoch: Callable[[], None] | None = None,
    benchmark: Benchmark | None = None,
) -> dict[str, Any]:
    """Train and evaluate one run; return its result record (not yet written).

    Args:
        run: The resolved run config.
        data_root: Root for dataset downloads and offline copies.
        loggers: Names of Avalanche loggers to attach.
        log_dir: Where file-based loggers write.
        on_epoch: Called after every training epoch (progress display).
        benchmark: A benchmark already built for this run (same name, args and seed).

    Returns:
        The result record following :data:`clbench.results.SCHEMA_VERSION`.
    """
    from avalanche.training.plugins import LRSchedulerPlugin

    started = datetime.now(timezone.utc)
    device = resolve_device(run.device)
    seed_everything(run.seed, run.deterministic)
    if benchmark is None:
        benchmark = load_benchmark(run.benchmark.name, run.benchmark.args, DataContext(data_root, run.seed))
    seed_everything(run.seed, run.deterministic)

    backbone_entry = BACKBONES.get(run.backbone.name)
    model = backbone_entry.factory(
        from_mapping(backbone_entry.args, run.backbone.args, "backbone"), benchmark.input_shape, benchmark.n_classes
    ).to(device)
    training = run.training
    device_path = device_path_options(training, run.seed)
    if training.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=training.lr, momentum=training.momentum, weight_decay=training.weight_decay
    )
    collector = AccuracyCollector(benchmark.task_classes)
    plugins: list[Any] = [collector]
    if training.lr_milestones:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(training.lr_milestones), training.lr_gamma)
        plugins.append(LRSchedulerPlugin(scheduler, reset_scheduler=True, reset_lr=True))
    if on_epoch is not None:
        plugins.append(_EpochProgress(on_epoch).plugin)
    logger_objects = [LOGGERS.get(name).factory(log_dir or Path("logs"), run.run_id) for name in loggers]

    strategy_entry = STRATEGIES.get(run.strategy.name)
    context = StrategyContext(
        model=model,
        optimizer=optimizer,
        criterion=torch.nn.CrossEntropyLoss(),
        training=training,
        buffer_size=run.buffer_size,
        device=device,
        benchmark=benchmark,
        seed=run.seed,
        plugins=plugins,
        evaluator=_make_evaluator(logger_objects),
        device_path=device_path,
    )
    strategy = strategy_entry.factory(context, from_mapping(strategy_entry.args, run.strategy.args, "strategy"))

    train_stream = benchmark.scenario.train_stream
    test_stream = benchmark.scenario.test_stream
    matrices = _Matrices()
    train_seconds: list[float] = []
    eval_seconds: list[float] = []
    eval_kwargs = {"num_workers": training.num_workers}

    def evaluate(after_task: int, seen: list[int]) -> None:
        tic = time.perf_counter()
        collector.expect(seen)
        strategy.eval(test_stream, **eval_kwargs)
        row = collector.row()
        eval_seconds.append(time.perf_counter() - tic)
        matrices.add(after_task, row)
        _log_row(logger_objects, after_task, row)

    if strategy_entry.traits.get("trains_jointly", False):
        tic = time.perf_counter()
        strategy.train(train_stream, eval_streams=[], num_workers=training.num_workers)
        train_seconds.append(time.perf_counter() - tic)
        evaluate(benchmark.n_tasks - 1, [c for task in benchmark.task_classes for c in task])
        metrics = {
            "class_il": summarize_final_only(matrices.class_il[-1]),
            "task_il": summarize_final_only(matrices.task_il[-1]),
        }
    else:
        seen: list[int] = []
        for task, experience in enumerate(train_stream):
            tic = time.perf_counter()
            strategy.train(experience, eval_streams=[], num_workers=training.num_workers)
            train_seconds.append(time.perf_counter() - tic)
            seen.extend(benchmark.task_classes[task])
            evaluate(task, seen)
        metrics = {"class_il": summarize(matrices.class_il), "task_il": summarize(matrices.task_il)}

    for logger in logger_objects:
        close = getattr(logger, "close", None)
        if callable(close):
            close()
    extras_fn = getattr(strategy, "clbench_extras", None)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.run_id,
        "config": run.to_dict(),
        "task_classes": [list(c) for c in benchmark.task_classes],
        "evaluated_after_task": matrices.after_task,
        "accuracy": {"class_il": matrices.class_il, "task_il": matrices.task_il},
        "metrics": metrics,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "environment": environment_info(device),
        "extras": extras_fn() if callable(extras_fn) else {},
        "strategy_defaults": config_to_dict(strategy_entry.args()),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


__all__ = ["device_path_options", "environment_info", "execute_run", "resolve_device", "seed_everything"]
