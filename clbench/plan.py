"""What is left of a grid and about how long it takes (``clbench run --dry-run``).

A run still to do is estimated by the runs of the grid that differ from it by the seed
only and are finished in the output folder: the median of their training plus evaluation
seconds. That is the pace of the machine and the sharing they ran under (two runs on two
cores take longer each than one alone), so the estimate is for the same conditions; a
run with no finished seed to go by is counted apart, never guessed from another strategy.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clbench.claims import is_claimed
from clbench.config import RunConfig
from clbench.errors import ResultsError
from clbench.results import read_result, result_status


@dataclass(frozen=True)
class PlannedRun:
    """One run of the grid: its status and its seconds (its own if finished, else an estimate)."""

    run_id: str
    status: str
    seconds: float | None
    finished_seeds: int


def _seedless(run: RunConfig) -> str:
    """The id the run would have at a fixed seed: runs that differ by the seed only share it."""
    return dataclasses.replace(run, seed=0).run_id


def _run_seconds(path: Path) -> float | None:
    try:
        result = read_result(path)
    except ResultsError:
        return None
    return sum(result.train_seconds) + sum(result.eval_seconds)


def _status(run: RunConfig, out: Path) -> str:
    status = result_status(out / f"{run.run_id}.json")
    if status == "to-run" and is_claimed(out / f"{run.run_id}.lock"):
        return "running"
    return status


def plan_grid(runs: Sequence[RunConfig], out: Path) -> list[PlannedRun]:
    """Each run's status in ``out`` with its seconds, finished or estimated from its finished seeds."""
    statuses = [_status(run, out) for run in runs]
    finished: dict[str, list[float]] = {}
    own: dict[str, float | None] = {}
    for run, status in zip(runs, statuses, strict=True):
        if status == "finished":
            seconds = own[run.run_id] = _run_seconds(out / f"{run.run_id}.json")
            if seconds is not None:
                finished.setdefault(_seedless(run), []).append(seconds)
    plan = []
    for run, status in zip(runs, statuses, strict=True):
        basis = finished.get(_seedless(run), [])
        estimate = statistics.median(basis) if basis else None
        plan.append(PlannedRun(run.run_id, status, own[run.run_id] if status == "finished" else estimate, len(basis)))
    return plan


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def plan_lines(plan: Sequence[PlannedRun]) -> list[str]:
    """One line a run (id, status, seconds) and a closing summary of what is left."""
    lines = []
    for item in plan:
        if item.seconds is None:
            cost = "" if item.status == "finished" else "no finished seed to go by"
        elif item.status == "finished":
            cost = f"took {_duration(item.seconds)}"
        else:
            cost = f"~{_duration(item.seconds)} (median of {item.finished_seeds} finished seed(s))"
        lines.append(f"{item.run_id}  {item.status:8s}  {cost}".rstrip())
    return [*lines, _summary(plan)]


def _summary(plan: Sequence[PlannedRun]) -> str:
    counts = {status: sum(item.status == status for item in plan) for status in ("finished", "running", "corrupt")}
    left = [item for item in plan if item.status in ("to-run", "corrupt")]
    estimated = [item.seconds for item in left if item.seconds is not None]
    line = f"{counts['finished']} finished, {counts['running']} running, {len(left)} to run"
    if counts["corrupt"]:
        line += f" ({counts['corrupt']} of them over a corrupt file)"
    if left:
        line += (
            f"; {len(estimated)} of those to run take about {_duration(sum(estimated))} of run time at their"
            f" finished seeds' pace, {len(left) - len(estimated)} have no finished seed to go by"
        )
    return line
