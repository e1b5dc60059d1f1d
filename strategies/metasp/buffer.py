"""MetaSP's rehearsal buffers: the paper's "Ours" buffer and RehSel, as Avalanche storage.

After task t (1-based) the buffer of size M gives ``r = M // t`` slots to the new task;
the remaining ``M - r`` slots are shared evenly by the old classes, and the new task's
slots evenly by its classes, so the buffer stays class-balanced. A *selection* decides
which old examples each class keeps and which new examples each new class adds:

========== ================================= =========================================
selection  old classes keep                  new classes add
========== ================================= =========================================
random     a random subset                   a random subset (the paper's "Ours")
influence  the least harmful (mean I*)       the most beneficial (lowest mean I*)
cluster    a random subset                   the example nearest each K-means centroid
rehsel     the least harmful (mean I*)       per K-means cluster, its most beneficial
========== ================================= =========================================

Influence is MetaSP's fused influence I* (negative = beneficial), averaged per example
over every MetaSP step of the latest task that saw it (:class:`InfluenceLedger`; the
``influence_window`` argument keeps means over all tasks instead). Examples never seen
count as neutral (0). Clusters are computed per new class (so class balance holds) on flattened
normalised pixels (the paper) or penultimate-layer features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from avalanche.training.storage_policy import ExemplarsBuffer

from clbench.registry import Registry
from clbench.training.memory import DatasetMemory
from clbench.training.modes import evaluation_mode

FeatureKind = Literal["pixels", "penultimate"]
InfluenceWindow = Literal["task", "all"]
Key = tuple[int, int]  # (task index, index in that task's training dataset)


class InfluenceLedger:
    """Running mean of each training example's fused influence, keyed by (task, index)."""

    def __init__(self) -> None:
        self._sum: dict[int, npt.NDArray[np.float64]] = {}
        self._count: dict[int, npt.NDArray[np.int64]] = {}

    def add(self, tasks: Sequence[int], indices: Sequence[int], values: Sequence[float]) -> None:
        """Record one influence value per (task, index)."""
        for task in set(tasks):
            if task not in self._sum:
                size = 1 + max(i for t, i in zip(tasks, indices, strict=True) if t == task)
                self._sum[task] = np.zeros(size)
                self._count[task] = np.zeros(size, dtype=np.int64)
        for task, index, value in zip(tasks, indices, values, strict=True):
            sums, counts = self._sum[task], self._count[task]
            if index >= len(sums):
                grow = index + 1 - len(sums)
                self._sum[task] = sums = np.concatenate([sums, np.zeros(grow)])
                self._count[task] = counts = np.concatenate([counts, np.zeros(grow, dtype=np.int64)])
            sums[index] += value
            counts[index] += 1

    def recorded(self, task: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The indices of ``task``'s examples that have a recorded value, and their mean values."""
        counts = self._count.get(task)
        if counts is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        indices = np.flatnonzero(counts > 0)
        return indices, self._sum[task][indices] / counts[indices]

    def clear(self) -> None:
        """Forget every recorded value."""
        self._sum.clear()
        self._count.clear()

    def mean(self, keys: Sequence[Key]) -> npt.NDArray[np.float64]:
        """Mean influence of each key; 0 (neutral) for keys never recorded."""
        result = np.zeros(len(keys))
        for j, (task, index) in enumerate(keys):
            counts = self._count.get(task)
            if counts is not None and index < len(counts) and counts[index] > 0:
                result[j] = self._sum[task][index] / counts[index]
        return result


@dataclass
class Candidates:
    """Examples of one class among which a selection chooses.

    Attributes:
        positions: Positions of the examples in the caller's list.
        influence: Mean fused influence of each (negative = beneficial).
        features: Callable returning an (n, d) feature array of these examples.
        rng: Random generator of the run.
    """

    positions: npt.NDArray[np.int64]
    influence: npt.NDArray[np.float64]
    features: Callable[[], npt.NDArray[np.float32]]
    rng: np.random.Generator


SelectFn = Callable[[Candidates, int], npt.NDArray[np.int64]]


@dataclass(frozen=True)
class Selection:
    """How old classes keep and new classes add examples; each returns chosen positions."""

    keep_old: SelectFn
    add_new: SelectFn


SELECTIONS: Registry[Callable[[], Selection]] = Registry(
    "buffer selection", "clbench.selections", builtin_modules=("clbench.strategies.metasp.buffer",)
)


def random_subset(candidates: Candidates, k: int) -> npt.NDArray[np.int64]:
    """``k`` positions drawn uniformly without replacement."""
    return candidates.rng.permutation(candidates.positions)[:k]


def least_harmful(candidates: Candidates, k: int) -> npt.NDArray[np.int64]:
    """The ``k`` positions with the lowest mean influence (drops the most harmful)."""
    order = np.argsort(candidates.influence, kind="stable")
    return candidates.positions[order[:k]]


def _kmeans_labels(features: npt.NDArray[np.float32], k: int, rng: np.random.Generator) -> tuple[Any, Any]:
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=1, max_iter=100, random_state=int(rng.integers(2**31 - 1)))
    labels = model.fit_predict(features)
    distances = np.linalg.norm(features - model.cluster_centers_[labels], axis=1)
    return labels, distances


def _per_cluster(
    candidates: Candidates, k: int, score: Callable[[npt.NDArray[np.float64]], Any]
) -> npt.NDArray[np.int64]:
    n = len(candidates.positions)
    if k >= n:
        everything: npt.NDArray[np.int64] = candidates.positions.copy()
        return everything
    if k <= 0:
        return candidates.positions[:0]
    features = candidates.features()
    labels, distances = _kmeans_labels(features, k, candidates.rng)
    chosen: list[int] = []
    for cluster in range(k):
        members = np.flatnonzero(labels == cluster)
        if len(members) == 0:
            continue
        # lexsort: the last key is primary; ties on the primary go to the centroid's nearest
        primary = score(candidates.influence[members])
        best = members[np.lexsort((distances[members], primary))[0]]
        chosen.append(int(best))
    if len(chosen) < k:  # empty clusters: fill with the best remaining by the same score
        rest = np.setdiff1d(np.arange(n), chosen)
        primary = score(candidates.influence[rest])
        chosen.extend(rest[np.lexsort((distances[rest], primary))][: k - len(chosen)].tolist())
    return candidates.positions[np.asarray(chosen, dtype=np.int64)]


def nearest_to_centroids(candidates: Candidates, k: int) -> npt.NDArray[np.int64]:
    """K-means into ``k`` clusters; from each, the example nearest its centroid."""
    return _per_cluster(candidates, k, lambda influence: np.zeros_like(influence))


def most_beneficial_per_cluster(candidates: Candidates, k: int) -> npt.NDArray[np.int64]:
    """K-means into ``k`` clusters; from each, the example of lowest mean influence."""
    return _per_cluster(candidates, k, lambda influence: influence)


@SELECTIONS.register("random", help="old: random subset; new: random subset (the paper's 'Ours')")
def random_selection() -> Selection:
    """Random in, random out."""
    return Selection(keep_old=random_subset, add_new=random_subset)


@SELECTIONS.register("influence", help="old: drop most harmful; new: top-r most beneficial, no clusters")
def influence_selection() -> Selection:
    """Influence ranking only."""
    return Selection(keep_old=least_harmful, add_new=least_harmful)


@SELECTIONS.register("cluster", help="old: random subset; new: nearest to each K-means centroid, no influence")
def cluster_selection() -> Selection:
    """Clusters only."""
    return Selection(keep_old=random_subset, add_new=nearest_to_centroids)


@SELECTIONS.register("rehsel", help="old: drop most harmful; new: most beneficial of each K-means cluster")
def rehsel_selection() -> Selection:
    """RehSel: clusters ranked by influence."""
    return Selection(keep_old=least_harmful, add_new=most_beneficial_per_cluster)


def balanced_quotas(total: int, available: dict[int, int]) -> dict[int, int]:
    """Split ``total`` slots as evenly as possible over classes, never above what a class has.

    Slots a small class cannot use go to the others; remainders go to classes in id order.
    """
    quotas = dict.fromkeys(available, 0)
    remaining = min(total, sum(available.values()))
    open_classes = sorted(c for c, n in available.items() if n > 0)
    while remaining > 0 and open_classes:
        share, extra = divmod(remaining, len(open_classes))
        for j, cls in enumerate(open_classes):
            give = min(share + (1 if j < extra else 0), available[cls] - quotas[cls])
            quotas[cls] += give
            remaining -= give
        open_classes = [c for c in open_classes if quotas[c] < available[c]]
    return quotas


class MetaSPBuffer(DatasetMemory, ExemplarsBuffer):  # type: ignore[misc]
    """Class-balanced buffer updated after each task by a :class:`Selection`.

    Holds (task, index) keys into each task's training dataset; :attr:`buffer` is the
    matching Avalanche dataset (training transforms), so Avalanche replay plugins can use it.
    """

    def __init__(
        self,
        max_size: int,
        selection: str,
        ledger: InfluenceLedger,
        seed: int,
        features: FeatureKind = "pixels",
        influence_window: InfluenceWindow = "task",
    ) -> None:
        """Create an empty buffer of ``max_size`` examples.

        Args:
            max_size: Capacity in examples.
            selection: Name of the selection (``SELECTIONS``).
            ledger: Where the strategy records each example's fused influence.
            seed: Seed of the selection's random choices.
            features: K-means features: flattened pixels or penultimate-layer features.
            influence_window: ``task``: rank by influence measured while learning the
                latest task (the ledger is cleared after each update, as the paper's code
                resets its scores), so memory examples are judged under the current model;
                ``all``: running means over every task.
        """
        super().__init__(max_size)
        self.selection = SELECTIONS.get(selection).factory()
        self.selection_name = selection
        self.ledger = ledger
        self.feature_kind = features
        self.influence_window = influence_window
        self.rng = np.random.default_rng(seed)
        self.keys: list[Key] = []
        self.labels: list[int] = []
        self._datasets: dict[int, Any] = {}
        self._evicted = 0  # slots freed by a purifier since the last update, given to the next task

    def __len__(self) -> int:
        return len(self.keys)

    def resize(self, strategy: Any, new_size: int) -> None:
        """Change the capacity; shrinking keeps a class-balanced subset by the selection."""
        self.max_size = new_size
        if len(self.keys) > new_size:
            self._rebuild(self._keep_old(new_size))

    def evict(self, positions: list[int]) -> None:
        """Remove the examples at ``positions`` (buffer order); the next update adds as many new ones."""
        dropped = set(positions)
        self._rebuild([key for p, key in enumerate(self.keys) if p not in dropped])
        self._evicted += len(dropped)

    def _features(
        self, task: int, indices: npt.NDArray[np.int64], model: torch.nn.Module | None
    ) -> npt.NDArray[np.float32]:
        dataset = self._datasets[task].eval()
        inputs = torch.stack([dataset[int(i)][0] for i in indices])
        if self.feature_kind == "penultimate" and model is not None:
            device = next(model.parameters()).device
            with evaluation_mode(model), torch.no_grad():
                parts = [model.features(chunk.to(device)).cpu() for chunk in inputs.split(256)]  # type: ignore[operator]
            inputs = torch.cat(parts)
        return inputs.flatten(1).numpy().astype(np.float32)

    def _choose(
        self, keys: list[Key], labels: list[int], quotas: dict[int, int], pick: SelectFn, model: torch.nn.Module | None
    ) -> list[int]:
        keys_array = np.asarray(keys, dtype=np.int64).reshape(-1, 2)
        labels_array = np.asarray(labels)
        influence = self.ledger.mean(keys)
        chosen: list[int] = []
        for cls, quota in sorted(quotas.items()):
            positions = np.flatnonzero(labels_array == cls)
            if quota <= 0 or len(positions) == 0:
                continue

            def features(positions: npt.NDArray[np.int64] = positions) -> npt.NDArray[np.float32]:
                rows = keys_array[positions]
                parts = [self._features(int(t), rows[rows[:, 0] == t, 1], model) for t in np.unique(rows[:, 0])]
                return np.concatenate(parts)

            order = np.lexsort((keys_array[positions, 1], keys_array[positions, 0]))
            positions = positions[order]  # features() stacks rows grouped by task, in index order
            candidates = Candidates(positions, influence[positions], features, self.rng)
            chosen.extend(int(p) for p in pick(candidates, quota))
        return chosen

    def _keep_old(self, slots: int, model: torch.nn.Module | None = None) -> list[Key]:
        available: dict[int, int] = {}
        for label in self.labels:
            available[label] = available.get(label, 0) + 1
        quotas = balanced_quotas(slots, available)
        kept = self._choose(self.keys, self.labels, quotas, self.selection.keep_old, model)
        return [self.keys[p] for p in kept]

    def _rebuild(self, keys: list[Key]) -> None:
        from avalanche.benchmarks.utils.utils import concat_datasets

        keys = sorted(keys)
        self.keys = keys
        self.labels = [int(self._datasets[t].targets[i]) for t, i in keys]
        parts = []
        for task in sorted({t for t, _ in keys}):
            indices = [i for t, i in keys if t == task]
            parts.append(self._datasets[task].subset(indices))
        self.buffer = concat_datasets(parts)

    def post_adapt(self, agent: Any, exp: Any) -> None:
        """Update the buffer after training on ``exp``."""
        task = int(exp.current_experience)
        dataset = exp.dataset
        self._datasets[task] = dataset
        new_slots = self.max_size // (task + 1) + self._evicted
        self._evicted = 0
        new_labels = [int(y) for y in dataset.targets]
        available_new: dict[int, int] = {}
        for label in new_labels:
            available_new[label] = available_new.get(label, 0) + 1
        new_quotas = balanced_quotas(new_slots, available_new)
        taken_new = sum(new_quotas.values())
        model = getattr(agent, "model", None)
        kept_old = self._keep_old(self.max_size - taken_new, model) if self.keys else []
        new_keys = [(task, i) for i in range(len(new_labels))]
        added = self._choose(new_keys, new_labels, new_quotas, self.selection.add_new, model)
        self._rebuild(kept_old + [new_keys[p] for p in added])
        if self.influence_window == "task":
            self.ledger.clear()
