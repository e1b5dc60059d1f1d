"""What a user reads when a grid ends: the A∞ of what it holds, what is missing, what to run next.

A grid can end without every result even when no run failed: a run claimed by another
process (another ``clbench run``, a Slurm task, a machine that died mid-run) is skipped.
:func:`missing_runs` names them so ``clbench run`` says so and exits non-zero.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from clbench.claims import held_by_another_local_process
from clbench.config import RunConfig, config_to_dict
from clbench.results import load_result, result_status
from clbench.training import STRATEGIES


def missing_runs(runs: Sequence[RunConfig], output_dir: Path) -> list[RunConfig]:
    """The runs of the grid without a finished result in ``output_dir``."""
    return [run for run in runs if result_status(output_dir / f"{run.run_id}.json") != "finished"]


def wait_for_local_claims(runs: Sequence[RunConfig], output_dir: Path, poll_seconds: float = 2.0) -> list[RunConfig]:
    """Wait while other live processes of this machine run missing runs; return what is still missing.

    Two ``clbench run`` processes sharing a folder then both end on a complete grid. A
    claim of another host, or of a process that died, is not waited for.
    """
    announced = False
    while True:
        missing = missing_runs(runs, output_dir)
        held = [run for run in missing if held_by_another_local_process(output_dir / f"{run.run_id}.lock")]
        if not held:
            return missing
        if not announced:
            print(f"waiting for {len(held)} run(s) that another process on this machine is running", flush=True)
            announced = True
        time.sleep(poll_seconds)


def _label(run: RunConfig) -> str:
    """Strategy name, the arguments it changes from its defaults, its memory size."""
    defaults = config_to_dict(STRATEGIES.get(run.strategy.name).args())
    changed = {k: v for k, v in run.strategy.plain_args().items() if defaults.get(k) != v}
    changed.update({f"training.{k}": v for k, v in run.strategy_training.items()})
    args = ", ".join(f"{k}={v}" for k, v in sorted(changed.items()))
    return f"{run.benchmark.name} {run.strategy.name}{f'({args})' if args else ''} M={run.buffer_size}"


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def summary_lines(runs: Sequence[RunConfig], output_dir: Path) -> list[str]:
    """One line per strategy and memory size: class-IL and task-IL A∞ over the finished seeds."""
    groups: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        path = output_dir / f"{run.run_id}.json"
        if result_status(path) != "finished":
            continue
        metrics = load_result(path)["metrics"]
        group = groups.setdefault(_label(run), {"class_il": [], "task_il": []})
        for setting, values in group.items():
            value = metrics[setting]["Ainf"]
            if value is not None:
                values.append(float(value))
    lines = []
    for label, by_setting in groups.items():
        seeds = max(len(by_setting["class_il"]), len(by_setting["task_il"]))
        class_il = _mean_std(by_setting["class_il"]) if by_setting["class_il"] else "—"
        task_il = _mean_std(by_setting["task_il"]) if by_setting["task_il"] else "—"
        lines.append(f"  {label}: A∞ class-IL {class_il}, task-IL {task_il} ({seeds} seed{'s' * (seeds > 1)})")
    return lines
