"""Figures (matplotlib, PNG and PDF): learning curves, accuracy heatmaps, influence counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clbench.report.tables import SETTING_NAMES


def _save(figure: Any, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".pdf"):
        target = path.with_suffix(suffix)
        # no creation date: a report rebuilt from the same runs writes the same bytes
        metadata = {"CreationDate": None} if suffix == ".pdf" else {}
        figure.savefig(target, bbox_inches="tight", dpi=120, metadata=metadata)
        written.append(target)
    return written


def _average_seen(matrix: list[list[float]], after: list[int]) -> list[float]:
    return [float(np.mean(row[: task + 1])) for row, task in zip(matrix, after, strict=True)]


def curve_title(benchmark: str, setting: str, buffer_size: int) -> str:
    """A learning-curve figure's title: benchmark, setting (class-IL and task-IL apart) and memory size."""
    memory = f", M={buffer_size}" if buffer_size else ""
    return f"{benchmark}, {SETTING_NAMES[setting]}{memory}"


def learning_curves(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Average accuracy over seen tasks after each task, mean ± std over seeds, per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    sequential = runs[runs["evaluated_after_task"].map(len) > 1]
    for (protocol, benchmark), block in sequential.groupby(["protocol", "benchmark"]):
        buffers = sorted(b for b in block["buffer_size"].unique() if b > 0) or [0]
        for setting in SETTING_NAMES:
            for buffer_size in buffers:
                chosen = block[block["buffer_size"].isin([0, buffer_size])]
                figure, axis = plt.subplots(figsize=(5, 3.5))
                for strategy, group in chosen.groupby("strategy"):
                    curves = np.asarray(
                        [
                            _average_seen(m, a)
                            for m, a in zip(group[setting], group["evaluated_after_task"], strict=True)
                        ]
                    )
                    tasks = np.arange(1, curves.shape[1] + 1)
                    mean, std = curves.mean(0), curves.std(0, ddof=1) if len(curves) > 1 else np.zeros(curves.shape[1])
                    axis.plot(tasks, mean, marker="o", label=strategy)
                    axis.fill_between(tasks, mean - std, mean + std, alpha=0.2)
                axis.set_xticks(range(1, int(block["evaluated_after_task"].map(len).max()) + 1))
                axis.set_xlabel("tasks learned")
                axis.set_ylabel(f"average {SETTING_NAMES[setting]} accuracy (%)")
                axis.set_title(curve_title(benchmark, setting, buffer_size))
                axis.legend(fontsize=7)
                name = f"{benchmark}_{protocol}_{setting}_M{buffer_size}_curve"
                written += _save(figure, out / "figures" / name)
                plt.close(figure)
    return written


def _text_colour(value: float) -> str:
    """Black on viridis' light (yellow-green) upper range, white on its dark lower range."""
    return "black" if value >= 60 else "white"


def heatmaps(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Mean accuracy matrix (over seeds) of each strategy, per protocol, setting and buffer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    sequential = runs[runs["evaluated_after_task"].map(len) > 1]
    for (protocol, benchmark, strategy, buffer_size), group in sequential.groupby(
        ["protocol", "benchmark", "strategy", "buffer_size"]
    ):
        for setting in SETTING_NAMES:
            matrix = np.mean(np.asarray(list(group[setting]), dtype=float), axis=0)
            figure, axis = plt.subplots(figsize=(3.6, 3.2))
            image = axis.imshow(matrix, vmin=0, vmax=100, cmap="viridis")
            for (i, j), value in np.ndenumerate(matrix):
                if np.isfinite(value):
                    axis.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=6, color=_text_colour(value))
            tasks = range(matrix.shape[0])
            axis.set_xticks(list(tasks), [str(t + 1) for t in tasks])  # tasks from 1, as in the curves
            axis.set_yticks(list(tasks), [str(t + 1) for t in tasks])
            axis.set_xlabel("evaluated task")
            axis.set_ylabel("after training task")
            axis.set_title(f"{strategy} M={buffer_size}\n{SETTING_NAMES[setting]}", fontsize=8)
            figure.colorbar(image, ax=axis, fraction=0.046)
            safe = strategy.replace("(", "_").replace(")", "").replace("=", "-").replace(", ", "_")
            written += _save(figure, out / "figures" / f"{benchmark}_{protocol}_{setting}_M{buffer_size}_{safe}_matrix")
            plt.close(figure)
    return written


def influence_counts(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Positive and negative influence counts on S, P and SP per task (MetaSP runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    with_stats = runs[runs["extras"].map(lambda e: bool(e.get("influence")) if isinstance(e, dict) else False)]
    for (protocol, benchmark, strategy, buffer_size), group in with_stats.groupby(
        ["protocol", "benchmark", "strategy", "buffer_size"]
    ):
        logs = list(group["extras"].map(lambda e: e["influence"]))
        tasks = [entry["task"] for entry in logs[0] if entry["meta_steps"]]
        if not tasks:
            continue
        figure, axes = plt.subplots(1, 3, figsize=(10, 3), sharey=True)
        for axis, objective in zip(axes, ("S", "P", "SP"), strict=True):
            for offset, sign in ((-0.2, "negative"), (0.2, "positive")):
                counts = [
                    np.mean([next(e for e in log if e["task"] == t)[objective][sign] for log in logs]) for t in tasks
                ]
                axis.bar(np.asarray(tasks) + 1 + offset, counts, width=0.4, label=sign)
            axis.set_title(f"influence on {objective}")
            axis.set_xlabel("task")
        axes[0].set_ylabel("examples (mean over seeds)")
        axes[0].legend(fontsize=7)
        figure.suptitle(f"{benchmark} {strategy} M={buffer_size}", fontsize=9)
        safe = strategy.replace("(", "_").replace(")", "").replace("=", "-").replace(", ", "_")
        written += _save(figure, out / "figures" / f"{benchmark}_{protocol}_M{buffer_size}_{safe}_influence")
        plt.close(figure)
    return written
