"""Launching a grid's runs: inline, in a process pool (``--jobs N``), or as submitit jobs.

Every launcher goes through :func:`execute_and_write` (claim, run, atomic write, release)
and :func:`settle` (what a finished, skipped or failed run adds to the summary), so a
result file is the same however it was launched.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from clbench.claims import heartbeat, release, try_claim
from clbench.config import ExperimentConfig, RunConfig
from clbench.datasets.base import Benchmark, DataContext, load_benchmark
from clbench.errors import ClbenchError
from clbench.grid import GridSummary, prepare_grid, run_from_dict
from clbench.results import result_status, write_json_atomic
from clbench.runner import TrainingProgress, execute_run
from clbench.slurm import check_resources, in_squeue, read_nodes, wait_for_jobs
from clbench.training.context import STRATEGIES

CLAIMED = "claimed or finished by another process"
"""What :func:`execute_and_write` returns for a run another process holds or finished."""


Payload = tuple[dict[str, Any], str, tuple[str, ...], str]
"""What a worker process or a submitted job receives: (run config, data root, loggers, output folder)."""


def _payloads(todo: list[RunConfig], root: Path, loggers: tuple[str, ...], output_dir: Path) -> list[Payload]:
    return [(run.to_dict(), str(root), loggers, str(output_dir)) for run in todo]


def settle(
    summary: GridSummary, run_id: str, failure: str | None, output_dir: Path, echo: Callable[[str], None] | None
) -> None:
    """Record what happened to one run (every launcher); say so through ``echo`` when given."""
    if failure == CLAIMED:
        summary.skipped.append(run_id)
        message = f"run {run_id}: {CLAIMED}, skipped"
    elif failure is None:
        summary.finished.append(run_id)
        return
    else:
        summary.failed[run_id] = failure
        message = f"run {run_id} failed: {failure} (traceback in {output_dir / (run_id + '.error.txt')})"
    if echo is not None:
        echo(message)


def _ignore_avalanche_warnings() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


@contextmanager
def _quiet_avalanche() -> Iterator[None]:
    with warnings.catch_warnings():
        _ignore_avalanche_warnings()
        yield


def execute_and_write(
    run: RunConfig,
    root: Path,
    loggers: tuple[str, ...],
    output_dir: Path,
    progress: TrainingProgress | None = None,
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
        with heartbeat(lock):
            return _run_claimed(run, output_dir, root, loggers, progress, benchmark)
    finally:
        release(lock)


def _run_claimed(
    run: RunConfig,
    output_dir: Path,
    root: Path,
    loggers: tuple[str, ...],
    progress: TrainingProgress | None,
    benchmark: Benchmark | None,
) -> str | None:
    """The body of :func:`execute_and_write` once the run is claimed."""
    if result_status(output_dir / f"{run.run_id}.json") == "finished":
        return CLAIMED  # another process finished it since the grid was listed
    try:
        result = execute_run(run, root, loggers, output_dir / "logs", progress, benchmark)
    except ClbenchError:
        raise
    except Exception as exc:  # one crashing run must not stop the grid
        (output_dir / f"{run.run_id}.error.txt").write_text(traceback.format_exc())
        return f"{exc.__class__.__name__}: {exc}"
    write_json_atomic(output_dir / f"{run.run_id}.json", result.to_json())
    (output_dir / f"{run.run_id}.error.txt").unlink(missing_ok=True)
    return None


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
    _ignore_avalanche_warnings()  # for the worker's whole life, not only inside a with block
    for plugin in plugin_files:
        load_plugin_file(plugin)


def _worker(payload: Payload) -> tuple[str, str | None, str | None]:
    """Run one config in a worker process; returns (run id, failure, user error)."""
    import multiprocessing

    raw, root, loggers, output_dir = payload
    run = run_from_dict(raw)
    if run.device in ("auto", "cuda") and torch.cuda.is_available():
        identity = multiprocessing.current_process()._identity
        slot = (identity[0] - 1) if identity else 0
        run = dataclasses.replace(run, device=f"cuda:{slot % torch.cuda.device_count()}")
    try:
        return run.run_id, execute_and_write(run, Path(root), loggers, Path(output_dir)), None
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

    root, summary, todo = prepare_grid(experiment, output_dir, data_root)
    if summary.skipped:
        echo(f"skipping {len(summary.skipped)} finished run(s) in {output_dir}")

    with _quiet_avalanche(), tqdm(total=len(todo), desc="runs", unit="run", disable=not progress, position=0) as bar:
        launch = _Launch(root, experiment.loggers, output_dir, summary, echo, progress, bar)
        if jobs > 1 and len(todo) > 1:
            _run_in_pool(todo, launch, jobs, plugin_files)
        else:
            _run_inline(todo, launch)
    return summary


@dataclass(frozen=True)
class _Launch:
    """Where a local launcher's runs read and write, and how it reports them."""

    root: Path
    loggers: tuple[str, ...]
    output_dir: Path
    summary: GridSummary
    echo: Callable[[str], None]
    progress: bool
    bar: Any

    def settle(self, run_id: str, failure: str | None) -> None:
        settle(self.summary, run_id, failure, self.output_dir, self.echo)
        self.bar.update(1)


def _run_in_pool(todo: list[RunConfig], launch: _Launch, jobs: int, plugin_files: tuple[str, ...]) -> None:
    """``jobs`` spawned worker processes, CPU threads shared out between them.

    A worker that dies (killed, out of memory) breaks a process pool: every run it had not
    finished fails with it, the healthy workers' included. Those runs are queued again in a
    fresh pool, once; a run whose pool breaks a second time is failed, and the grid goes on.
    """
    threads = max(1, (os.cpu_count() or 1) // jobs)
    attempts: dict[str, int] = {}
    pending = todo
    while pending:
        broken = _pool_round(pending, launch, jobs, (plugin_files, threads))
        pending = []
        for run in broken:
            if result_status(launch.output_dir / f"{run.run_id}.json") == "finished":
                launch.settle(run.run_id, None)  # it was written before its pool broke
                continue
            attempts[run.run_id] = attempts.get(run.run_id, 0) + 1
            if attempts[run.run_id] > 1:
                launch.settle(run.run_id, "its worker process died twice (killed, or out of memory?)")
            else:
                pending.append(run)
        if broken:
            launch.echo(f"clbench: a worker process died; {len(pending)} unfinished run(s) queued again")


def _pool_round(todo: list[RunConfig], launch: _Launch, jobs: int, init: tuple[Any, ...]) -> list[RunConfig]:
    """Run ``todo`` in one process pool; the runs that did not end because the pool broke."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn"), _init_worker, init)
    payloads = _payloads(todo, launch.root, launch.loggers, launch.output_dir)
    broken: list[RunConfig] = []
    try:
        futures = {pool.submit(_worker, payload): run for payload, run in zip(payloads, todo, strict=True)}
        for future in as_completed(futures):
            try:
                run_id, failure, user_error = future.result()
            except BrokenProcessPool:
                broken.append(futures[future])
                continue
            if user_error is not None:
                raise ClbenchError(user_error)
            launch.settle(run_id, failure)
    except BaseException:
        # Ctrl-C or a user error: stop the workers now instead of letting them finish the
        # grid; finished results stay (atomic writes), claims of the killed runs go stale.
        _terminate(pool)
        raise
    if broken:
        _terminate(pool)  # a broken pool's shutdown can wait on its dead worker for minutes
    else:
        pool.shutdown()
    return broken


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (``kill``, Slurm's ``scancel``) unwinds like Ctrl-C: the claim is released, no temporary file is left.

    Python's default for SIGTERM ends the process at once, leaving the run's claim for
    others to wait out. Only the main thread may set a handler; elsewhere nothing changes.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_inline(todo: list[RunConfig], launch: _Launch) -> None:
    """One run after the other in this process, each benchmark built once for its seed."""
    with _sigterm_unwinds():
        _run_inline_loop(todo, launch)


def _run_inline_loop(todo: list[RunConfig], launch: _Launch) -> None:
    from tqdm import tqdm

    cache: dict[tuple[str, str, int], Benchmark] = {}
    for run in todo:
        launch.bar.set_postfix_str(run.run_id)
        key = (run.benchmark.name, repr(run.benchmark.args), run.seed)
        if key not in cache:
            cache.clear()
            cache[key] = load_benchmark(run.benchmark.name, run.benchmark.args, DataContext(launch.root, run.seed))
        benchmark = cache[key]
        joint = STRATEGIES.get(run.strategy.name).traits.get("trains_jointly", False)
        total_epochs = run.trained_with.epochs * (1 if joint else benchmark.n_tasks)
        write = partial(execute_and_write, run, launch.root, launch.loggers, launch.output_dir)
        if launch.progress:
            with (
                tqdm(total=total_epochs, desc="epochs", unit="ep", position=1, leave=False) as epochs,
                tqdm(desc="steps", unit="step", position=2, leave=False) as steps,
            ):
                failure = write(_Bars(epochs, steps), benchmark)
        else:
            failure = write(_EpochLines(run.run_id, total_epochs, launch.echo), benchmark)
        launch.settle(run.run_id, failure)


class _Bars:
    """A :class:`~clbench.runner.TrainingProgress` drawn as an epoch bar and a step bar with the running loss."""

    def __init__(self, epochs: Any, steps: Any) -> None:
        self.epochs, self.steps = epochs, steps

    def epoch_started(self, iterations: int | None) -> None:
        self.steps.reset(total=iterations)

    def iteration_done(self, loss: float | None) -> None:
        self.steps.update(1)
        if loss is not None:
            self.steps.set_postfix_str(f"loss {loss:.3f}")

    def epoch_done(self) -> None:
        self.epochs.update(1)


class _EpochLines:
    """A :class:`~clbench.runner.TrainingProgress` written as one line an epoch, for logs without bars.

    A grid left running under ``nohup ... --no-progress`` would otherwise print nothing until
    its run ends, an hour or more for the costly strategies; a line an epoch (a task, online)
    says how far it is and how fast it goes.
    """

    def __init__(self, run_id: str, total_epochs: int, echo: Callable[[str], None]) -> None:
        self.run_id, self.total_epochs, self.echo = run_id, total_epochs, echo
        self.done = self.steps = 0
        self.started = time.perf_counter()
        self.loss: float | None = None

    def epoch_started(self, iterations: int | None) -> None:
        self.started, self.steps, self.loss = time.perf_counter(), 0, None

    def iteration_done(self, loss: float | None) -> None:
        self.steps += 1
        self.loss = self.loss if loss is None else loss

    def epoch_done(self) -> None:
        self.done += 1
        loss = "" if self.loss is None else f", loss {self.loss:.3f}"
        seconds = time.perf_counter() - self.started
        where = f"{self.run_id}: epoch {self.done}/{self.total_epochs} trained"
        self.echo(f"{where}, {self.steps} steps in {seconds:.0f} s{loss}")
        sys.stdout.flush()  # the echo of a grid under nohup goes to a block-buffered file


def _remote_run(payload: Payload, plugin_files: tuple[str, ...]) -> Any:
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

    root, summary, todo = prepare_grid(experiment, output_dir, data_root)
    if not todo:
        return summary
    slurm = experiment.slurm
    nodes = read_nodes() if cluster == "slurm" else None
    if nodes:
        check_resources(slurm, nodes)
    try:
        executor = submitit.AutoExecutor(folder=output_dir / "submitit", cluster=cluster)
    except RuntimeError as exc:  # no srun / sbatch on this machine
        raise ClbenchError(
            f"--launcher {cluster}: {exc}; valid choices here: --launcher inline (or --jobs N), local"
        ) from None
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
    payloads = _payloads(todo, root, experiment.loggers, output_dir)
    try:
        jobs = executor.map_array(_remote_run, payloads, [plugin_files] * len(payloads))
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as exc:
        raise ClbenchError(_submission_failure(str(exc))) from None
    echo(f"submitted {len(jobs)} run(s) to {cluster}: job {jobs[0].job_id.split('_')[0]}")
    on_slurm = cluster == "slurm"
    vanished = wait_for_jobs(
        jobs, echo, poll_seconds=5.0 if on_slurm else 0.5, in_queue=in_squeue if on_slurm else None
    )
    for run, job in zip(todo, jobs, strict=True):
        if job.job_id in vanished:
            summary.failed[run.run_id] = (
                f"job {job.job_id}: left Slurm's queue without a record (cancelled before it started); "
                "run the same command again to submit it again"
            )
            continue
        try:
            run_id, failure, user_error = job.result()
        except Exception as exc:  # the task itself died (time limit, node failure, cancelled, ...)
            summary.failed[run.run_id] = f"job {job.job_id}: {job_failure(exc)}"
            continue
        if user_error is not None:
            raise ClbenchError(user_error)
        settle(summary, run_id, failure, output_dir, None)
    return summary


def _submission_failure(stderr: str) -> str:
    """One line for a job array sbatch refused, naming Slurm's reason and the settings to change."""
    reasons = [line.strip() for line in stderr.splitlines() if "error" in line.lower()] or [stderr.strip()]
    reason = reasons[0] if reasons else "no reason given"  # sbatch's first error line is the specific one
    if "partition" in reason.lower():
        hint = "name one of the cluster's partitions (sinfo -s): --set slurm.partition=NAME"
    elif any(word in reason.lower() for word in ("gres", "gpu")):
        hint = "this cluster may have no GPUs: --set slurm.gpus_per_task=0"
    else:
        hint = "check the slurm.* settings (partition, gpus_per_task, cpus_per_task, mem_gb, timeout_min)"
    return f"sbatch refused the job array: {reason}; {hint}"


def job_failure(exc: BaseException) -> str:
    """A submitted run that ended without its result, in one line (cancelled, timed out, died)."""
    text = str(exc)
    state = re.search(r"state: ([^)]*)\)", text)
    if state and state.group(1).startswith("CANCELLED"):
        return f"cancelled (Slurm state {state.group(1)}); run the same command again to submit it again"
    if state:
        return f"ended without a result (Slurm state {state.group(1)}); its log is under <out>/submitit/"
    first = text.splitlines()[0] if text else ""
    return f"{exc.__class__.__name__}: {first}"


__all__ = ["CLAIMED", "execute_and_write", "run_grid", "submit_grid"]
