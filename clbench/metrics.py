"""Continual-learning metrics as pure functions of an accuracy matrix.

The matrix ``acc[t][k]`` is the accuracy (in percent) on task ``k``'s test set after
training on task ``t``; it is square (T x T) for a sequential run. All functions use
0-based task indices and read the diagonal and below only, so a run that evaluated the
tasks learned so far (``None`` above the diagonal) has the same metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import numpy.typing as npt

Matrix = Sequence[Sequence[float | None]] | npt.NDArray[np.float64]


class MetricValues(TypedDict):
    """The four summary metrics of one accuracy matrix (``None`` where undefined)."""

    A1: float | None
    Ainf: float | None
    Am: float | None
    BWT: float | None


def _square(acc: Matrix) -> npt.NDArray[np.float64]:
    matrix = np.asarray(acc, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"expected a non-empty square accuracy matrix, got shape {matrix.shape}")
    return matrix


def a1(acc: Matrix) -> float:
    """Mean accuracy on each task right after learning it: mean_t acc[t][t]."""
    return float(np.mean(np.diag(_square(acc))))


def a_final(acc: Matrix) -> float:
    """Average accuracy over all tasks after the last one (A-infinity)."""
    return float(np.mean(_square(acc)[-1]))


def a_mean(acc: Matrix) -> float:
    """Mean over tasks t of the average accuracy on tasks 0..t after training task t."""
    matrix = _square(acc)
    return float(np.mean([matrix[t, : t + 1].mean() for t in range(matrix.shape[0])]))


def bwt(acc: Matrix) -> float | None:
    """Backward transfer: mean_{k<T-1} (acc[T-1][k] - acc[k][k]); ``None`` for one task."""
    matrix = _square(acc)
    n_tasks = matrix.shape[0]
    if n_tasks < 2:
        return None
    return float(np.mean(matrix[-1, :-1] - np.diag(matrix)[:-1]))


def summarize(acc: Matrix) -> MetricValues:
    """All four metrics of a sequential run's square accuracy matrix."""
    return MetricValues(A1=a1(acc), Ainf=a_final(acc), Am=a_mean(acc), BWT=bwt(acc))


def summarize_final_only(final_row: Sequence[float | None]) -> MetricValues:
    """Metrics of a run evaluated once after training on everything (e.g. Joint).

    Only A-infinity is defined: there is no accuracy right after each task.
    """
    if len(final_row) == 0:
        raise ValueError("expected a non-empty final accuracy row")
    return MetricValues(A1=None, Ainf=float(np.mean(np.asarray(final_row, dtype=np.float64))), Am=None, BWT=None)
