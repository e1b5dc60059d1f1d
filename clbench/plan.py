"""What is left of a grid and about how long it takes (``clbench run --dry-run``).

A run still to do is estimated by the finished runs in the output folder that differ from
it by the seed only (those of the grid or of any other grid written there): the median of
their training plus evaluation seconds. That is the pace of the machine and the sharing
they ran under (two runs on two cores take longer each than one alone), so the estimate is
for the same conditions; a run with no finished seed to go by is counted apart, never
guessed from another strategy.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clbench.claims import is_claimed, read_claim
from clbench.config import RunConfig, config_digest
from clbench.errors import ResultsError
from clbench.results import read_result, result_status


@dataclass(frozen=True)
class PlannedRun:
    """One run of the grid: its status and its seconds (its own if finished, else an estimate)."""

    run_id: str
    status: str
    seconds: float | None
    finished_seeds: int
    running_for: float | None = None
    holder: str | None = None


def _seedless(plain: Mapping[str, Any]) -> str:
    """The digest the run would have at seed 0: runs that differ by the seed only share it."""
    return config_digest({**plain, "seed": 0})


def _finished_seconds(out: Path) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Each readable result in ``out``: its seconds by run id, and all seconds by seedless digest."""
    by_run: dict[str, float] = {}
    by_seedless: dict[str, list[float]] = {}
    for path in sorted(out.glob("*.json")) if out.is_dir() else []:
        try:
            result = read_result(path)
        except ResultsError:
            continue
        seconds = sum(result.train_seconds) + sum(result.eval_seconds)
        by_run[result.run_id] = seconds
        by_seedless.setdefault(_seedless(result.config), []).append(seconds)
    return by_run, by_seedless


def _status(run: RunConfig, out: Path) -> str:
    status = result_status(out / f"{run.run_id}.json")
    if status == "to-run" and is_claimed(out / f"{run.run_id}.lock"):
        return "running"
    return status


def _claim_of(out: Path, run: RunConfig, status: str) -> tuple[float | None, str | None]:
    """A running run's seconds since it was claimed and who holds it (host, pid, heartbeat age)."""
    if status != "running":
        return None, None
    info = read_claim(out / f"{run.run_id}.lock")
    if info is None:
        return None, None  # it ended while we looked
    lock_time = time.time() - info.heartbeat_age
    running_for = max(0.0, time.time() - (info.started if info.started is not None else lock_time))
    return running_for, f"held by {info.describe()}"


def plan_grid(runs: Sequence[RunConfig], out: Path) -> list[PlannedRun]:
    """Each run's status in ``out`` with its seconds, finished or estimated from its finished seeds."""
    by_run, by_seedless = _finished_seconds(out)
    plan = []
    for run in runs:
        status = _status(run, out)
        basis = by_seedless.get(_seedless(run.to_dict()), [])
        seconds = by_run.get(run.run_id) if status == "finished" else (statistics.median(basis) if basis else None)
        plan.append(PlannedRun(run.run_id, status, seconds, len(basis), *_claim_of(out, run, status)))
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
        if item.running_for is not None:
            cost = f"for {_duration(item.running_for)} ({item.holder}); {cost}"
        lines.append(f"{item.run_id}  {item.status:8s}  {cost}".rstrip())
    return [*lines, _summary(plan)]


def _summary(plan: Sequence[PlannedRun]) -> str:
    counts = {status: sum(item.status == status for item in plan) for status in ("finished", "running", "corrupt")}
    left = [item for item in plan if item.status in ("to-run", "corrupt")]
    estimated = [item.seconds for item in left if item.seconds is not None]
    line = f"{counts['finished']} finished, {counts['running']} running, {len(left)} to run"
    if counts["corrupt"]:
        line += f" ({counts['corrupt']} of them over a corrupt file)"
    if estimated:
        line += (
            f"; {len(estimated)} of those to run take about {_duration(sum(estimated))} of run time at their"
            f" finished seeds' pace, {len(left) - len(estimated)} have no finished seed to go by"
        )
    elif left:
        line += "; none has a finished seed to go by"
    return line
