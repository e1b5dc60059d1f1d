"""The training loss of a run, per task, and the stop on a non-finite one.

A diverged run (an lr far too large, a strategy term that overflows) otherwise trains on
NaN and records chance-level accuracies as a result. :class:`LossTrace` reads
``strategy.loss`` after every training iteration, keeps it on the device (one
synchronisation every :data:`CHECK_EVERY` iterations and at the end of each task, not one
a step) and raises :class:`~clbench.errors.DivergenceError` naming the task, the
iteration and the loss; the run then fails, writes no result and the grid ends with exit
status 1. Each task's summary (mean, last, and a short curve of per-interval means) goes to
the result's ``training_loss``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from avalanche.core import SupervisedPlugin

from clbench.errors import DivergenceError

CHECK_EVERY = 50
"""Iterations between two finiteness checks (each a device synchronisation)."""

CURVE_POINTS = 20
"""Per-interval means kept per task."""


def loss_summary(values: list[float]) -> dict[str, Any]:
    """Mean, last value and up to :data:`CURVE_POINTS` per-interval means of one task's losses."""
    points = min(CURVE_POINTS, len(values))
    bounds = [round(k * len(values) / points) for k in range(points + 1)]
    curve = [sum(values[a:b]) / (b - a) for a, b in itertools.pairwise(bounds) if b > a]
    return {"mean": sum(values) / len(values), "last": values[-1], "curve": curve}


class LossTrace(SupervisedPlugin):  # type: ignore[misc]
    """Records each training iteration's loss; stops the run at the first non-finite one."""

    def __init__(self) -> None:
        """An empty trace."""
        super().__init__()
        self.tasks: list[dict[str, Any]] = []
        self._pending: list[torch.Tensor] = []
        self._values: list[float] = []

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        """Keep the iteration's loss; check the kept ones every :data:`CHECK_EVERY` iterations."""
        loss = getattr(strategy, "loss", None)
        if isinstance(loss, torch.Tensor):
            self._pending.append(loss.detach().float().reshape(()))
            if len(self._pending) >= CHECK_EVERY:
                self._flush(strategy)

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        """Check the task's remaining losses and close its summary."""
        self._flush(strategy)
        if self._values:
            self.tasks.append({"task": int(strategy.experience.current_experience), **loss_summary(self._values)})
        self._values = []

    def _flush(self, strategy: Any) -> None:
        if not self._pending:
            return
        values = torch.stack(self._pending).cpu().tolist()
        self._pending = []
        for value in values:
            self._values.append(value)
            if not math.isfinite(value):
                task = int(strategy.experience.current_experience)
                lr = float(strategy.optimizer.param_groups[0]["lr"])
                raise DivergenceError(
                    f"training diverged: task {task}, iteration {len(self._values)}, loss {value}; "
                    f"lower training.lr (now {lr:g}) or the strategy's loss weights"
                )
