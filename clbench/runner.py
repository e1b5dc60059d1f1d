"""Run one config end to end, and expand and run a grid of them.

A run: seed everything, build the benchmark, the backbone and the strategy, then train
task by task; after each task one evaluation pass over every task's test set fills a row
of the class-IL and of the task-IL accuracy matrix. The result is written atomically to
``<output_dir>/<run_id>.json``; a grid skips runs whose file is already complete.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import random
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clbench.backbones import BACKBONES
from clbench.claims import release, try_claim
from clbench.config import (
    OMIT_AT_DEFAULT,
    ComponentSpec,
    ExperimentConfig,
    RunConfig,
    TrainingConfig,
    config_to_dict,
    from_mapping,
)
from clbench.datasets.base import BENCHMARKS, Benchmark, DataContext, load_benchmark
from clbench.datasets.sources import default_data_root
from clbench.errors import ClbenchError, ConfigError
from clbench.evaluation import AccuracyCollector, AccuracyRow
from clbench.fastdata import DevicePathOptions, Precision
from clbench.loggers import LOGGERS
from clbench.metrics import summarize, summarize_final_only
from clbench.results import SCHEMA_VERSION, result_status, write_json_atomic
from clbench.strategies.base import STRATEGIES, StrategyContext


def _resolved(spec: ComponentSpec, args_type: type, where: str) -> ComponentSpec:
    typed: Any = from_mapping(args_type, spec.args, where)
    plain = config_to_dict(typed)
    for f in dataclasses.fields(typed):
        if f.metadata.get(OMIT_AT_DEFAULT) and getattr(typed, f.name) == f.default:
            plain.pop(f.name)
    return ComponentSpec(spec.name, plain)


def expand_grid(experiment: ExperimentConfig) -> list[RunConfig]:
    """All runs of an experiment: benchmark x strategy x buffer size x seed.

    Strategies without a buffer (Fine-tune, Joint) run once per benchmark and seed, with
    ``buffer_size`` 0. Every component's arguments are validated and filled with their
    defaults here, before anything runs, so a typo fails at once.

    Raises:
        UnknownNameError: A benchmark, strategy, backbone or logger name is not registered.
        ConfigError: Some component's arguments do not validate.
    """
    for name in experiment.loggers:
        LOGGERS.get(name)
    device_path_options(experiment.training, 0)  # fails now on device-only settings without the device path
    runs: list[RunConfig] = []
    for bench_spec in experiment.benchmarks:
        bench_entry = BENCHMARKS.get(bench_spec.name)
        benchmark = _resolved(bench_spec, bench_entry.args, f"benchmark {bench_spec.name}")
        backbone_spec = experiment.backbone or ComponentSpec(bench_entry.traits["default_backbone"])
        backbone = _resolved(backbone_spec, BACKBONES.get(backbone_spec.name).args, f"backbone {backbone_spec.name}")
        for strat_spec in experiment.strategies:
            entry = STRATEGIES.get(strat_spec.name)
            strategy = _resolved(
                ComponentSpec(strat_spec.name, strat_spec.args), entry.args, f"strategy {strat_spec.name}"
            )
            own_sizes = strat_spec.buffer_sizes
            sizes = own_sizes or experiment.buffer_sizes
            if not entry.traits.get("uses_buffer", False):
                sizes = (0,)
            for size in sizes:
                for seed in experiment.seeds:
                    runs.append(
                        RunConfig(
                            experiment=experiment.name,
                            benchmark=benchmark,
                            strategy=strategy,
                            backbone=backbone,
                            buffer_size=size,
                            seed=seed,
                            training=experiment.training,
                            device=experiment.device,
                            deterministic=experiment.deterministic,
                            strategy_revision=int(entry.traits.get("revision", 1)),
                        )
                    )
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ClbenchError(f"the grid lists run {duplicate} twice (a strategy or seed is repeated)")
    return runs


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


@dataclass
class GridSummary:
    """What a grid run did."""

    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def output_dir_for(experiment: ExperimentConfig, override: str | None = None) -> Path:
    """``--out``, else the config's ``output_dir``, else ``runs/<name>``."""
    return Path(override or experiment.output_dir or Path("runs") / experiment.name)


@contextmanager
def _quiet_avalanche() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


CLAIMED = "claimed or finished by another process"
"""What :func:`_execute_and_write` returns for a run another process holds or finished."""


def _execute_and_write(
    run: RunConfig,
    root: Path,
    loggers: tuple[str, ...],
    output_dir: Path,
    on_epoch: Callable[[], None] | None = None,
    benchmark: Benchmark | None = None,
) -> str | None:
    """Run one config and write its JSON; on a crash write ``<run_id>.error.txt``.

    Returns:
        None on success, :data:`CLAIMED` when another process holds or finished the run,
        else the one-line failure message.

    Raises:
        ClbenchError: An error the user caused (it would fail every run alike).
    """
    lock = output_dir / f"{run.run_id}.lock"
    if not try_claim(lock):
        return CLAIMED
    try:
        if result_status(output_dir / f"{run.run_id}.json") == "finished":
            return CLAIMED  # another process finished it since the grid was listed
        try:
            record = execute_run(run, root, loggers, output_dir / "logs", on_epoch, benchmark)
        except ClbenchError:
            raise
        except Exception as exc:  # one crashing run must not stop the grid
            (output_dir / f"{run.run_id}.error.txt").write_text(traceback.format_exc())
            return f"{exc.__class__.__name__}: {exc}"
        write_json_atomic(output_dir / f"{run.run_id}.json", record)
        (output_dir / f"{run.run_id}.error.txt").unlink(missing_ok=True)
        return None
    finally:
        release(lock)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _die_with_parent() -> None:
    """End this worker when the grid's process goes, even by ``kill -9``.

    Linux delivers SIGTERM on the parent's death (``PR_SET_PDEATHSIG``); elsewhere a
    daemon thread notices the parent's pid change. Ctrl-C is the parent's to handle: it
    terminates the workers itself, so they ignore SIGINT instead of printing tracebacks.
    """
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM (from the parent, or its death) unwinds normally: claims are released and a
    # half-written result's temporary file is removed.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _init_worker(plugin_files: tuple[str, ...], threads: int) -> None:
    from clbench.registry import load_plugin_file

    _die_with_parent()
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for plugin in plugin_files:
        load_plugin_file(plugin)


def _worker(payload: tuple[dict[str, Any], str, tuple[str, ...], str]) -> tuple[str, str | None, str | None]:
    """Run one config in a worker process; returns (run id, failure, user error)."""
    import multiprocessing

    raw, root, loggers, output_dir = payload
    run = from_mapping(RunConfig, raw, "run")
    if run.device in ("auto", "cuda") and torch.cuda.is_available():
        identity = multiprocessing.current_process()._identity
        slot = (identity[0] - 1) if identity else 0
        run = dataclasses.replace(run, device=f"cuda:{slot % torch.cuda.device_count()}")
    try:
        return run.run_id, _execute_and_write(run, Path(root), loggers, Path(output_dir)), None
    except ClbenchError as exc:
        return run.run_id, None, str(exc)
    except SystemExit as exc:  # SIGTERM, after the claim and any temporary file were cleaned up
        os._exit(exc.code if isinstance(exc.code, int) else 1)  # not back to the pool for the next run


def _terminate(pool: Any, grace_seconds: float = 5.0) -> None:
    """Kill a process pool's workers and drop its queued runs.

    SIGTERM first (a worker cleans its claim and temporary file), SIGKILL for any still
    alive after ``grace_seconds``: the interpreter's exit joins the pool's threads, which
    must not wait on a live worker.
    """
    processes = list(getattr(pool, "_processes", {}).values())
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)
    pool.shutdown(wait=False, cancel_futures=True)


def _prepare_grid(
    experiment: ExperimentConfig, output_dir: Path, data_root: Path | None
) -> tuple[Path, GridSummary, list[RunConfig]]:
    """Expand the grid, save the resolved config, and split finished from unfinished runs."""
    import yaml

    runs = expand_grid(experiment)
    root = data_root or (Path(experiment.data_root) if experiment.data_root else default_data_root())
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "experiment.resolved.yaml").write_text(yaml.safe_dump(config_to_dict(experiment), sort_keys=False))
    summary = GridSummary()
    todo = []
    for run in runs:
        status = result_status(output_dir / f"{run.run_id}.json")
        if status == "finished":
            summary.skipped.append(run.run_id)
            continue
        if status == "corrupt":
            print(f"re-running {run.run_id}: its result file is corrupt", file=sys.stderr)
        todo.append(run)
    return root, summary, todo


def run_grid(
    experiment: ExperimentConfig,
    output_dir: Path,
    data_root: Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    jobs: int = 1,
    plugin_files: tuple[str, ...] = (),
) -> GridSummary:
    """Run every unfinished run of an experiment, inline or ``jobs`` at a time.

    Finished runs (a complete result file exists) are skipped, so an interrupted grid
    resumes. A run that crashes is reported, its traceback written beside the results as
    ``<run_id>.error.txt``, and the grid goes on; errors a user caused
    (:class:`ClbenchError`) stop the grid. With ``jobs > 1`` runs go to worker processes
    (spawned; CPU threads shared out, GPUs assigned round-robin when the device is
    ``auto`` or ``cuda``); the results are the same files.
    """
    from tqdm import tqdm

    root, summary, todo = _prepare_grid(experiment, output_dir, data_root)
    if summary.skipped:
        echo(f"skipping {len(summary.skipped)} finished run(s) in {output_dir}")

    def settle(run_id: str, failure: str | None) -> None:
        if failure == CLAIMED:
            summary.skipped.append(run_id)
            echo(f"run {run_id}: {CLAIMED}, skipped")
        elif failure is None:
            summary.finished.append(run_id)
        else:
            summary.failed[run_id] = failure
            echo(f"run {run_id} failed: {failure} (traceback in {output_dir / (run_id + '.error.txt')})")

    with _quiet_avalanche(), tqdm(total=len(todo), desc="runs", unit="run", disable=not progress, position=0) as bar:
        if jobs > 1 and len(todo) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            threads = max(1, (os.cpu_count() or 1) // jobs)
            payloads = [(run.to_dict(), str(root), experiment.loggers, str(output_dir)) for run in todo]
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(jobs, context, _init_worker, (plugin_files, threads))
            try:
                futures = [pool.submit(_worker, payload) for payload in payloads]
                for future in as_completed(futures):
                    run_id, failure, user_error = future.result()
                    if user_error is not None:
                        raise ClbenchError(user_error)
                    settle(run_id, failure)
                    bar.update(1)
            except BaseException:
                # Ctrl-C or a user error: stop the workers now instead of letting them finish the
                # grid; finished results stay (atomic writes), claims of the killed runs go stale.
                _terminate(pool)
                raise
            pool.shutdown()
            return summary
        cache: dict[tuple[str, str, int], Benchmark] = {}
        for run in todo:
            bar.set_postfix_str(run.run_id)
            key = (run.benchmark.name, repr(sorted(run.benchmark.args.items())), run.seed)
            if key not in cache:
                cache.clear()
                cache[key] = load_benchmark(run.benchmark.name, run.benchmark.args, DataContext(root, run.seed))
            benchmark = cache[key]
            joint = STRATEGIES.get(run.strategy.name).traits.get("trains_jointly", False)
            total_epochs = run.training.epochs * (1 if joint else benchmark.n_tasks)
            with tqdm(
                total=total_epochs, desc="epochs", unit="ep", leave=False, disable=not progress, position=1
            ) as epochs:
                failure = _execute_and_write(
                    run, root, experiment.loggers, output_dir, lambda: epochs.update(1), benchmark
                )
            settle(run.run_id, failure)
            bar.update(1)
    return summary


def _remote_run(payload: tuple[dict[str, Any], str, tuple[str, ...], str], plugin_files: tuple[str, ...]) -> Any:
    """Entry point of one submitted run (a Slurm array task or a local process)."""
    _init_worker(plugin_files, torch.get_num_threads())
    return _worker(payload)


def submit_grid(
    experiment: ExperimentConfig,
    output_dir: Path,
    cluster: str = "slurm",
    data_root: Path | None = None,
    echo: Callable[[str], None] = print,
    plugin_files: tuple[str, ...] = (),
) -> GridSummary:
    """Submit every unfinished run as one task of a submitit job array and wait for them.

    Each task writes the same ``<run_id>.json`` as an inline run; submitit's logs go to
    ``<output_dir>/submitit/``. Interrupting the wait leaves the jobs running; re-running the
    command later submits only what is still missing. ``cluster`` is ``slurm``, or ``local``
    (submitit's local executor, used by the tests).
    """
    import submitit

    root, summary, todo = _prepare_grid(experiment, output_dir, data_root)
    if not todo:
        return summary
    slurm = experiment.slurm
    executor = submitit.AutoExecutor(folder=output_dir / "submitit", cluster=cluster)
    parameters: dict[str, Any] = {
        "timeout_min": slurm.timeout_min,
        "gpus_per_node": slurm.gpus_per_task,
        "cpus_per_task": slurm.cpus_per_task,
        "slurm_array_parallelism": slurm.array_parallelism,
        "name": f"clbench-{experiment.name}",
    }
    if slurm.partition:
        parameters["slurm_partition"] = slurm.partition
    if slurm.mem_gb:
        parameters["mem_gb"] = slurm.mem_gb
    if cluster == "local":
        parameters["gpus_per_node"] = min(slurm.gpus_per_task, torch.cuda.device_count())
    executor.update_parameters(**parameters)
    payloads = [(run.to_dict(), str(root), experiment.loggers, str(output_dir)) for run in todo]
    jobs = executor.map_array(_remote_run, payloads, [plugin_files] * len(payloads))
    echo(f"submitted {len(jobs)} run(s) to {cluster}: job {jobs[0].job_id.split('_')[0]}")
    for run, job in zip(todo, jobs, strict=True):
        try:
            run_id, failure, user_error = job.result()
        except Exception as exc:  # the task itself died (time limit, node failure, ...)
            summary.failed[run.run_id] = f"job {job.job_id}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
            continue
        if user_error is not None:
            raise ClbenchError(user_error)
        if failure == CLAIMED:
            summary.skipped.append(run_id)
        elif failure is None:
            summary.finished.append(run_id)
        else:
            summary.failed[run_id] = failure
    return summary


__all__ = ["GridSummary", "execute_run", "expand_grid", "output_dir_for", "run_grid", "submit_grid"]
