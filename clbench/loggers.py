"""Avalanche loggers selectable by name in a config's ``loggers`` list."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from clbench.registry import Registry

LoggerFactory = Callable[[Path, str], Any]

LOGGERS: Registry[LoggerFactory] = Registry("logger", "clbench.loggers", builtin_modules=("clbench.loggers",))


@LOGGERS.register("interactive", help="Avalanche InteractiveLogger: progress and metrics on stdout")
def interactive(log_dir: Path, run_id: str) -> Any:
    """Print metrics to stdout as training goes."""
    from avalanche.logging import InteractiveLogger

    return InteractiveLogger()


@LOGGERS.register("text", help="Avalanche TextLogger: <output>/logs/<run-id>.log")
def text(log_dir: Path, run_id: str) -> Any:
    """Write metrics to a text file per run."""
    from avalanche.logging import TextLogger

    log_dir.mkdir(parents=True, exist_ok=True)
    return TextLogger(open(log_dir / f"{run_id}.log", "a"))


@LOGGERS.register("csv", help="Avalanche CSVLogger: <output>/logs/<run-id>/*.csv")
def csv(log_dir: Path, run_id: str) -> Any:
    """Write metrics to CSV files per run."""
    from avalanche.logging import CSVLogger

    return CSVLogger(log_folder=str(log_dir / run_id))


@LOGGERS.register("tensorboard", help="Avalanche TensorboardLogger: <output>/logs/tb/<run-id>")
def tensorboard(log_dir: Path, run_id: str) -> Any:
    """Write TensorBoard event files per run."""
    from avalanche.logging import TensorboardLogger

    return TensorboardLogger(tb_log_dir=str(log_dir / "tb" / run_id))


@LOGGERS.register("wandb", help="Avalanche WandBLogger: project 'clbench', run named by its id")
def wandb(log_dir: Path, run_id: str) -> Any:
    """Log to Weights & Biases (needs the wandb package and a login)."""
    from avalanche.logging import WandBLogger

    return WandBLogger(project_name="clbench", run_name=run_id, dir=str(log_dir))
