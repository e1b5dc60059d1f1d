"""How clean a replay buffer is, per task, when the benchmark's training labels are noisy.

With ``label_noise`` the benchmark knows which training examples carry a corrupted label
(:attr:`clbench.datasets.base.Benchmark.noisy_train`). After each task (once the strategy
and its plugins have updated their memories) :class:`BufferPurity` finds the memories that
hold examples of the training split as an Avalanche dataset (ER's reservoir, the
class-balanced buffers of MIR and GDumb, MetaSP's buffer, ...), resolves them to their rows
and records the share of clean labels. Memories held as tensors (the per-batch stream
reservoirs of DER, ER-ACE, SCR; GMED's and HAL's) cannot be traced to their rows: their
purity is recorded as null.

When the strategy purifies its memory (:mod:`clbench.training.purify`), each purification
of the task is audited against the noise mask too, under the task's ``purifications``:
how many held examples were scored and how many of them were mislabelled, how many were
evicted and how many of those were mislabelled (the purifier's precision), and the AUROC
of its harm score for telling mislabelled from clean (0.5: chance; 1: every mislabelled
example scored above every clean one). The purifier never sees the mask; this plugin
only reads its decisions.

A strategy that scores its own training examples as it learns (MetaSP's fused influence,
which weights each example's loss) sets ``scored_examples`` (:class:`ScoredExamples`) after
each task; the task's record then holds ``weighting``: the same AUROC for its scores of the
task's examples — whether the examples it weighted down were the mislabelled ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from avalanche.core import SupervisedPlugin

from clbench.data_path import resolve_rows
from clbench.errors import DataError


@dataclass(frozen=True)
class ScoredExamples:
    """A task's training examples that a strategy scored while learning, each by its mean harm."""

    dataset: Any  # the task's training dataset (resolved to the split's rows by the audit)
    indices: npt.NDArray[np.int64]  # positions in ``dataset``
    harm: npt.NDArray[np.float64]  # higher: the strategy thought the example more harmful


def _memories(strategy: Any) -> list[Any]:
    """One memory per owner (the strategy, each plugin): its ``memory``, else ``storage``, else ``storage_policy``.

    The first name wins because a plugin may hold its Avalanche storage policy and a
    :class:`~clbench.training.memory.ReplayMemory` wrapping the same examples (MIR).
    """
    found: list[Any] = []
    for owner in (strategy, *getattr(strategy, "plugins", [])):
        memory = next(
            (m for m in (getattr(owner, n, None) for n in ("memory", "storage", "storage_policy")) if m is not None),
            None,
        )
        if memory is not None and all(memory is not seen for seen in found):  # a purifier shares its memory
            found.append(memory)
    return found


def held_rows(strategy: Any) -> npt.NDArray[np.int64] | None:
    """Rows of the training split that the strategy's memories hold; None if none is traceable to its rows."""
    rows = []
    for memory in _memories(strategy):
        dataset = getattr(memory, "buffer", None)
        if dataset is None or not hasattr(dataset, "__len__"):
            continue
        if len(dataset) == 0:
            rows.append(np.zeros(0, dtype=np.int64))
            continue
        try:
            rows.append(resolve_rows(dataset)[1])
        except DataError:  # a memory of tensors: its examples cannot be traced to their rows
            return None
    return np.concatenate(rows) if rows else None


def harm_auroc(harm: torch.Tensor, noisy: npt.NDArray[np.bool_]) -> float | None:
    """P(a mislabelled example's harm > a clean one's), ties counted half; None without both kinds."""
    flags = torch.as_tensor(noisy, dtype=torch.bool)
    positives, negatives = harm[flags].double(), harm[~flags].double()
    if len(positives) == 0 or len(negatives) == 0:
        return None
    above = (positives[:, None] > negatives[None, :]).double().mean()
    ties = (positives[:, None] == negatives[None, :]).double().mean()
    return float(above + ties / 2)


def _scored(flags: npt.NDArray[np.bool_]) -> dict[str, int]:
    """How many examples a score ranked, and how many of them were mislabelled."""
    return {"scored": len(flags), "noisy_scored": int(flags.sum())}


def audit(decision: Any, noisy: npt.NDArray[np.bool_]) -> dict[str, Any]:
    """What one purification (:class:`clbench.training.purify.Purification`) did to the mislabelled examples."""
    flags = noisy[decision.rows]
    evicted = flags[decision.evicted]
    return {
        **_scored(flags),
        "evicted": len(evicted),
        "noisy_evicted": int(evicted.sum()),
        "auroc": harm_auroc(decision.harm, flags),
    }


def _purifiers(strategy: Any) -> list[Any]:
    from clbench.training.purify import Purifier

    return [p for p in getattr(strategy, "plugins", []) if isinstance(p, Purifier)]


class BufferPurity(SupervisedPlugin):  # type: ignore[misc]
    """Records, after each task, how many examples the memory holds and the share with a clean label."""

    def __init__(self, noisy: npt.NDArray[np.bool_]) -> None:
        """Track purity against ``noisy`` (one flag per row of the training split)."""
        super().__init__()
        self.noisy = noisy
        self.tasks: list[dict[str, Any]] = []
        self._audited = 0

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        """Count the memory's clean labels now that every memory update of the task has run.

        Runs after the strategy's own plugins (the runner's plugins come last), so the
        task's purifications, if any, are done and are audited here too.
        """
        rows = held_rows(strategy)
        task = int(strategy.experience.current_experience)
        if rows is None:
            record: dict[str, Any] = {"task": task, "held": None, "purity": None}
        else:
            purity = float(1.0 - self.noisy[rows].mean()) if len(rows) else None
            record = {"task": task, "held": len(rows), "purity": purity}
        purifiers = _purifiers(strategy)
        if purifiers:
            decisions = [d for p in purifiers for d in p.decisions]
            record["purifications"] = [audit(d, self.noisy) for d in decisions[self._audited :] if d.rows is not None]
            self._audited = len(decisions)
        scored = getattr(strategy, "scored_examples", None)
        if isinstance(scored, ScoredExamples):
            record["weighting"] = self._audit_scores(scored)
        self.tasks.append(record)

    def _audit_scores(self, scored: ScoredExamples) -> dict[str, Any] | None:
        """How the strategy's own scores of the task's examples rank the mislabelled ones (None: untraceable)."""
        try:
            rows = resolve_rows(scored.dataset)[1][scored.indices]
        except DataError:
            return None
        flags = self.noisy[rows]
        return {**_scored(flags), "auroc": harm_auroc(torch.as_tensor(scored.harm), flags)}
