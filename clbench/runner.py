"""One run end to end: seed, build the benchmark, backbone and strategy, train task by task.

:func:`execute_run` builds the run (:func:`_build`), trains it task by task with one
evaluation pass over every task's test set after each (:func:`_train_and_evaluate`: a row
of the class-IL and of the task-IL accuracy matrix each time) and returns its
:class:`~clbench.results.RunResult`. The grid and its launchers are in :mod:`clbench.grid`
and :mod:`clbench.launch`.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from clbench.backbones import BACKBONES
from clbench.buffer_purity import BufferPurity
from clbench.config import RunConfig, config_to_dict
from clbench.datasets.base import Benchmark, DataContext, load_benchmark
from clbench.errors import ClbenchError
from clbench.evaluation import AccuracyCollector, AccuracyRow
from clbench.loggers import LOGGERS
from clbench.loss_trace import LossTrace
from clbench.metrics import MetricValues, summarize, summarize_final_only
from clbench.results import RunResult
from clbench.training.context import STRATEGIES, StrategyContext, build_strategy


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


def cpu_description() -> str:
    """The CPU's model name and the instruction set torch's kernels use on it, e.g. ``... (AVX512)``.

    Recorded because the kernels, and so the last digits of a run, differ between instruction
    sets (bf16 is native on AVX-512-bf16 / AMX and emulated on AVX2).
    """
    model = platform.processor()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model or 'cpu'} ({torch.backends.cpu.get_cpu_capability()})"


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
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_description(),
        "torch_threads": torch.get_num_threads(),
    }


class TrainingProgress(Protocol):
    """What a progress display is told while a run trains (:class:`clbench.launch` draws bars from it)."""

    def epoch_started(self, iterations: int | None) -> None:
        """A training epoch of ``iterations`` steps (None: unknown) begins."""

    def iteration_done(self, loss: float | None) -> None:
        """A step ended; ``loss`` every :data:`LOSS_EVERY` steps, else None (no device sync)."""

    def epoch_done(self) -> None:
        """The epoch ended."""


LOSS_EVERY = 10
"""Steps between two losses read for the progress display (each read synchronises the device)."""


def _progress_plugin(progress: TrainingProgress) -> Any:
    """An Avalanche plugin that tells ``progress`` about epochs and steps."""
    from avalanche.core import SupervisedPlugin

    class Plugin(SupervisedPlugin):  # type: ignore[misc]
        steps = 0

        def before_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
            try:
                progress.epoch_started(len(strategy.dataloader))
            except TypeError:
                progress.epoch_started(None)

        def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
            self.steps += 1
            loss = getattr(strategy, "loss", None)
            if self.steps % LOSS_EVERY == 0 and isinstance(loss, torch.Tensor):
                progress.iteration_done(float(loss.detach()))
            else:
                progress.iteration_done(None)

        def after_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
            progress.epoch_done()

    return Plugin()


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
class _Trace:
    """What the train/evaluate loop records: accuracy matrices and timings."""

    class_il: list[list[float | None]] = field(default_factory=list)
    task_il: list[list[float | None]] = field(default_factory=list)
    after_task: list[int] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)

    def add(self, task: int, row: AccuracyRow) -> None:
        self.class_il.append(row.class_il)
        self.task_il.append(row.task_il)
        self.after_task.append(task)


def _log_row(loggers: list[Any], task: int, row: AccuracyRow) -> None:
    for logger in loggers:
        for k, (cil, til) in enumerate(zip(row.class_il, row.task_il, strict=True)):
            if cil is not None and til is not None:
                logger.log_single_metric(f"clbench/class_il/task{k:02d}", cil, task)
                logger.log_single_metric(f"clbench/task_il/task{k:02d}", til, task)
        seen = [value for value in row.class_il[: task + 1] if value is not None]
        logger.log_single_metric("clbench/class_il/average_seen", sum(seen) / len(seen), task)


@dataclass
class _Run:
    """A run built and ready to train: its benchmark, strategy and evaluation plumbing."""

    config: RunConfig
    device: torch.device
    benchmark: Benchmark
    strategy: Any
    trains_jointly: bool
    collector: AccuracyCollector
    loggers: list[Any]
    loss_trace: LossTrace
    purity: BufferPurity | None


def _build(
    run: RunConfig,
    data_root: Path,
    loggers: tuple[str, ...],
    log_dir: Path | None,
    progress: TrainingProgress | None,
    benchmark: Benchmark | None,
) -> _Run:
    """Seed, then build the benchmark, backbone and strategy of ``run`` (see :func:`execute_run`)."""
    from avalanche.training.plugins import LRSchedulerPlugin

    device = resolve_device(run.device)
    seed_everything(run.seed, run.deterministic)
    if benchmark is None:
        benchmark = load_benchmark(run.benchmark.name, run.benchmark.args, DataContext(data_root, run.seed))
    # Seeded again so that the backbone's initialisation does not depend on how the data were built.
    seed_everything(run.seed, run.deterministic)
    backbone_entry = BACKBONES.get(run.backbone.name)
    model = backbone_entry.factory(run.backbone.args, benchmark.input_shape, benchmark.n_classes).to(device)
    collector = AccuracyCollector(benchmark.task_classes)
    loss_trace = LossTrace()
    entry = STRATEGIES.get(run.strategy.name)
    uses_buffer = bool(entry.traits.get("uses_buffer", False))
    purity = BufferPurity(benchmark.noisy_train) if benchmark.noisy_train is not None and uses_buffer else None
    logger_objects = [LOGGERS.get(name).factory(log_dir or Path("logs"), run.run_id) for name in loggers]
    training = run.trained_with
    context = StrategyContext.for_training(
        model,
        training,
        benchmark=benchmark,
        device=device,
        seed=run.seed,
        buffer_size=run.buffer_size,
        plugins=[collector, loss_trace, *([purity] if purity else [])],
        evaluator=_make_evaluator(logger_objects),
        uses_buffer=uses_buffer,
        strategy_name=run.strategy.name,
    )
    if training.lr_milestones:
        schedule = torch.optim.lr_scheduler.MultiStepLR(
            context.optimizer, list(training.lr_milestones), training.lr_gamma
        )
        context.plugins.append(LRSchedulerPlugin(schedule, reset_scheduler=True, reset_lr=True))
    if progress is not None:
        context.plugins.append(_progress_plugin(progress))
    strategy = build_strategy(entry, context, run.strategy.args)
    jointly = bool(entry.traits.get("trains_jointly", False))
    return _Run(run, device, benchmark, strategy, jointly, collector, logger_objects, loss_trace, purity)


def _extras(strategy: Any) -> dict[str, Any]:
    """What the strategy's and its plugins' ``clbench_extras()`` return, merged (the strategy's first)."""
    extras: dict[str, Any] = {}
    for owner in (strategy, *getattr(strategy, "plugins", [])):
        extras_fn = getattr(owner, "clbench_extras", None)
        if callable(extras_fn):
            extras.update(extras_fn())
    return extras


def _evaluate(built: _Run, trace: _Trace, after_task: int, seen: list[int]) -> None:
    """One evaluation pass over every task's test set (or the tasks learned so far): a row of both matrices."""
    tic = time.perf_counter()
    stream = built.benchmark.scenario.test_stream
    if built.config.trained_with.eval_tasks == "seen":
        stream = stream[: after_task + 1]
    built.collector.expect(seen, tasks=range(len(stream)))
    built.strategy.eval(stream, num_workers=built.config.trained_with.num_workers)
    row = built.collector.row()
    trace.eval_seconds.append(time.perf_counter() - tic)
    trace.add(after_task, row)
    _log_row(built.loggers, after_task, row)


def _train_and_evaluate(built: _Run) -> _Trace:
    """Train task by task, evaluating after each (Joint: once on the whole stream, evaluated once)."""
    trace = _Trace()
    benchmark, workers = built.benchmark, built.config.trained_with.num_workers
    train_stream = benchmark.scenario.train_stream
    if built.trains_jointly:
        tic = time.perf_counter()
        built.strategy.train(train_stream, eval_streams=[], num_workers=workers)
        trace.train_seconds.append(time.perf_counter() - tic)
        _evaluate(built, trace, benchmark.n_tasks - 1, [c for task in benchmark.task_classes for c in task])
        return trace
    # A strategy with a trained model after some tasks only (GDumb trained at the end) says which.
    evaluates_after = getattr(built.strategy, "clbench_evaluates_after", lambda task: True)
    seen: list[int] = []
    for task, experience in enumerate(train_stream):
        tic = time.perf_counter()
        built.strategy.train(experience, eval_streams=[], num_workers=workers)
        trace.train_seconds.append(time.perf_counter() - tic)
        seen.extend(benchmark.task_classes[task])
        if evaluates_after(task):
            _evaluate(built, trace, task, seen)
    return trace


def _summaries(trace: _Trace, trains_jointly: bool, n_tasks: int) -> dict[str, MetricValues]:
    """A1, Ainf, Am and BWT of both settings (only the final accuracy for a joint run, or one evaluated at the end)."""
    if trains_jointly or len(trace.after_task) < n_tasks:
        final_rows = {"class_il": trace.class_il[-1], "task_il": trace.task_il[-1]}
        return {setting: summarize_final_only(row) for setting, row in final_rows.items()}
    return {"class_il": summarize(trace.class_il), "task_il": summarize(trace.task_il)}


def execute_run(
    run: RunConfig,
    data_root: Path,
    loggers: tuple[str, ...] = (),
    log_dir: Path | None = None,
    progress: TrainingProgress | None = None,
    benchmark: Benchmark | None = None,
) -> RunResult:
    """Train and evaluate one run; return its result record (not yet written).

    Args:
        run: The resolved run config.
        data_root: Root for dataset downloads and offline copies.
        loggers: Names of Avalanche loggers to attach.
        log_dir: Where file-based loggers write.
        progress: Told about every training epoch and step (progress display).
        benchmark: A benchmark already built for this run (same name, args and seed).
    """
    started = datetime.now(timezone.utc)
    built = _build(run, data_root, loggers, log_dir, progress, benchmark)
    trace = _train_and_evaluate(built)
    for logger in built.loggers:
        close = getattr(logger, "close", None)
        if callable(close):
            close()
    return RunResult(
        run_id=run.run_id,
        config=run.to_dict(),
        task_classes=[list(c) for c in built.benchmark.task_classes],
        evaluated_after_task=trace.after_task,
        accuracy={"class_il": trace.class_il, "task_il": trace.task_il},
        metrics=_summaries(trace, built.trains_jointly, built.benchmark.n_tasks),
        train_seconds=trace.train_seconds,
        eval_seconds=trace.eval_seconds,
        environment=environment_info(built.device),
        extras=_extras(built.strategy),
        training_loss=built.loss_trace.tasks,
        buffer_purity=built.purity.tasks if built.purity else None,
        strategy_defaults=config_to_dict(STRATEGIES.get(run.strategy.name).args()),
        started_at=started.isoformat(timespec="seconds"),
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


__all__ = ["environment_info", "execute_run", "resolve_device", "seed_everything"]
