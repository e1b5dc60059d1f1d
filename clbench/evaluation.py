"""Class-IL and task-IL accuracy from one pass of logits.

Class-IL predicts by argmax over every class seen so far; task-IL by argmax over the
classes of the example's own task. Both come from the same logits, so one evaluation pass
fills both accuracy matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from avalanche.core import SupervisedPlugin


def masked_correct(logits: torch.Tensor, targets: torch.Tensor, allowed_classes: Sequence[int]) -> int:
    """Number of correct argmax predictions when only ``allowed_classes`` may be predicted.

    Args:
        logits: (N, C) scores over all classes.
        targets: (N,) true class ids.
        allowed_classes: Class ids that the prediction may take.

    Returns:
        How many predictions equal the target.
    """
    if len(allowed_classes) == 0:
        return 0
    allowed = torch.as_tensor(list(allowed_classes), device=logits.device, dtype=torch.long)
    predictions = allowed[logits.index_select(1, allowed).argmax(dim=1)]
    return int((predictions == targets).sum().item())


@dataclass
class _Counts:
    class_il: int = 0
    task_il: int = 0
    total: int = 0


@dataclass
class AccuracyRow:
    """Accuracies (percent) on every task's test set at one point in training."""

    class_il: list[float | None] = field(default_factory=list)
    task_il: list[float | None] = field(default_factory=list)


class AccuracyCollector(SupervisedPlugin):  # type: ignore[misc]
    """Collects class-IL and task-IL accuracy from the strategy's own evaluation pass.

    The runner calls :meth:`expect` before ``strategy.eval(test_stream)`` and :meth:`row`
    after it. The plugin only reads ``mb_output`` and ``mb_y``; it changes nothing.
    """

    def __init__(self, task_classes: Sequence[Sequence[int]]) -> None:
        """Collect for a benchmark whose task ``k`` holds ``task_classes[k]``."""
        super().__init__()
        self.task_classes = [list(c) for c in task_classes]
        self._seen: list[int] = []
        self._counts: dict[int, _Counts] = {}
        self._active = False

    def expect(self, seen_classes: Sequence[int], tasks: Sequence[int] | None = None) -> None:
        """Start collecting; class-IL predictions are restricted to ``seen_classes``.

        ``tasks``: the tasks the pass evaluates (default all); the others' accuracies are ``None``.
        """
        self._seen = list(seen_classes)
        evaluated = range(len(self.task_classes)) if tasks is None else tasks
        self._counts = {k: _Counts() for k in evaluated}
        self._active = True

    def after_eval_iteration(self, strategy: Any, **kwargs: Any) -> None:
        """Count correct predictions of the mini-batch just evaluated."""
        if not self._active:
            return
        task = int(strategy.experience.current_experience)
        logits = strategy.mb_output.detach()
        targets = strategy.mb_y
        counts = self._counts[task]
        counts.class_il += masked_correct(logits, targets, self._seen)
        counts.task_il += masked_correct(logits, targets, self.task_classes[task])
        counts.total += int(targets.shape[0])

    def row(self) -> AccuracyRow:
        """Accuracies of the finished pass, in task order.

        Raises:
            RuntimeError: Some task's test set was not evaluated.
        """
        self._active = False
        missing = [k for k, c in self._counts.items() if c.total == 0]
        if missing:
            raise RuntimeError(f"evaluation pass did not cover tasks {missing}")
        result = AccuracyRow()
        for k in range(len(self.task_classes)):
            counts = self._counts.get(k)
            result.class_il.append(None if counts is None else 100.0 * counts.class_il / counts.total)
            result.task_il.append(None if counts is None else 100.0 * counts.task_il / counts.total)
        return result
