"""MetaSP's buffers on a crafted dataset whose best and worst examples are known."""

from types import SimpleNamespace

import numpy as np
import pytest

from clbench.datasets.base import ImageArrays, ImageSplits, build_benchmark
from clbench.strategies.metasp.buffer import InfluenceLedger, MetaSPBuffer, balanced_quotas

PER_CLASS = 10
SIZE = 4


def _crafted_splits(n_classes=4):
    """Each class: ids 0-4 dark (cluster A), ids 5-9 bright (cluster B); pixel (0,0) = example id."""
    images, labels = [], []
    for cls in range(n_classes):
        for k in range(PER_CLASS):
            base = 20 if k < 5 else 230
            image = np.full((SIZE, SIZE, 1), base, dtype=np.uint8)
            image[1:, 1:, 0] += np.uint8(k % 5)  # small spread inside a cluster
            image[0, 0, 0] = cls * PER_CLASS + k
            images.append(image)
            labels.append(cls)
    arrays = ImageArrays(np.stack(images), np.asarray(labels, dtype=np.int64), tuple(f"c{c}" for c in range(n_classes)))
    return ImageSplits(train=arrays, test=arrays, mean=(0.0,), std=(1.0,), augment=False)


def _benchmark(n_classes=4, n_tasks=2):
    return build_benchmark("crafted", _crafted_splits(n_classes), n_tasks, "fixed", seed=0)


def _example_ids(dataset):
    """Crafted example id of each index of a task's dataset (read back from pixel (0,0))."""
    return [round(float(dataset[i][0][0, 0, 0]) * 255) for i in range(len(dataset))]


def _ledger_from(task, dataset, influence_by_id):
    ledger = InfluenceLedger()
    ids = _example_ids(dataset)
    indices = list(range(len(ids)))
    ledger.add([task] * len(ids), indices, [influence_by_id.get(i, 0.0) for i in ids])
    return ledger


def _buffer_ids(buffer):
    return sorted(_example_ids(buffer.buffer.eval()))


# class 0: ids 0-9. A-cluster best is id 3, B-cluster best is id 8; the overall two best (id 3,
# id 1) are both in cluster A, so influence ranking and RehSel must differ.
# class 1: ids 10-19, best per cluster 12 and 16.
INFLUENCE = {3: -5.0, 1: -4.5, 8: -3.0, 12: -2.0, 11: -1.9, 16: -1.0, 5: 2.0}


def _fill(selection, seed=0, max_size=4):
    bench = _benchmark()
    exp = bench.scenario.train_stream[0]
    ledger = _ledger_from(0, exp.dataset, INFLUENCE)
    buffer = MetaSPBuffer(max_size, selection, ledger, seed=seed)
    buffer.post_adapt(SimpleNamespace(), exp)
    return buffer, ledger, bench


def test_rehsel_takes_the_most_beneficial_example_of_each_cluster():
    buffer, _, _ = _fill("rehsel")
    assert _buffer_ids(buffer) == [3, 8, 12, 16]


def test_influence_ranking_ignores_clusters():
    buffer, _, _ = _fill("influence")
    assert _buffer_ids(buffer) == [1, 3, 11, 12]


def test_cluster_selection_takes_centroid_neighbours():
    buffer, _, _ = _fill("cluster")
    ids = _buffer_ids(buffer)
    # one from each brightness cluster of each class, chosen by distance, not influence
    assert [sum(1 for i in ids if lo <= i < lo + 5) for lo in (0, 5, 10, 15)] == [1, 1, 1, 1]
    assert ids != [3, 8, 12, 16]


def test_ablation_modes_differ():
    chosen = {name: tuple(_buffer_ids(_fill(name)[0])) for name in ("random", "influence", "cluster", "rehsel")}
    assert len(set(chosen.values())) == 4, chosen


def test_rehsel_drops_the_most_harmful_memory_examples():
    buffer, ledger, bench = _fill("rehsel")
    assert _buffer_ids(buffer) == [3, 8, 12, 16]
    # During task 2, id 3 and id 16 turn out harmful; each old class keeps one example
    # (r = 4 // 2 = 2 slots go to task 2), so the harmful ones must go.
    positions = {_example_ids(buffer.buffer.eval())[p]: p for p in range(len(buffer))}
    for example_id in (3, 16):
        task, index = buffer.keys[positions[example_id]]
        ledger.add([task] * 3, [index] * 3, [10.0, 10.0, 10.0])
    buffer.post_adapt(SimpleNamespace(), bench.scenario.train_stream[1])
    ids = _buffer_ids(buffer)
    assert len(ids) == 4
    assert [i for i in ids if i < 20] == [8, 12]
    assert len([i for i in ids if i >= 20]) == 2


@pytest.mark.parametrize("selection", ["random", "influence", "cluster", "rehsel"])
@pytest.mark.parametrize("max_size", [5, 8, 13])
def test_buffer_never_exceeds_its_size_and_stays_class_balanced(selection, max_size):
    bench = _benchmark(n_classes=6, n_tasks=3)
    ledger = InfluenceLedger()
    buffer = MetaSPBuffer(max_size, selection, ledger, seed=3)
    for t, exp in enumerate(bench.scenario.train_stream):
        ledger.add([t] * len(exp.dataset), list(range(len(exp.dataset))), np.linspace(-1, 1, len(exp.dataset)))
        buffer.post_adapt(SimpleNamespace(), exp)
        assert len(buffer) == max_size == len(buffer.buffer)
        counts = np.bincount(buffer.labels, minlength=2 * (t + 1))
        old, new = counts[: 2 * t], counts[2 * t : 2 * (t + 1)]
        assert new.sum() == max_size // (t + 1) or t == 0
        for group in (old, new):
            if group.size:
                assert group.max() - group.min() <= 1, counts


def test_new_task_smaller_than_its_share_leaves_slots_to_old_classes():
    bench = _benchmark()
    ledger = InfluenceLedger()
    buffer = MetaSPBuffer(50, "rehsel", ledger, seed=0)  # r = 50 > 20 examples of task 1
    buffer.post_adapt(SimpleNamespace(), bench.scenario.train_stream[0])
    assert len(buffer) == 20
    buffer.post_adapt(SimpleNamespace(), bench.scenario.train_stream[1])
    assert len(buffer) == 40  # everything fits: r = 25 > 20 new, old keep all 20


def test_balanced_quotas_handles_rare_classes():
    assert balanced_quotas(10, {0: 100, 1: 100, 2: 1}) == {0: 5, 1: 4, 2: 1}
    assert balanced_quotas(10, {0: 2, 1: 2}) == {0: 2, 1: 2}
    assert balanced_quotas(7, {0: 5, 1: 5}) == {0: 4, 1: 3}
    assert balanced_quotas(0, {0: 5}) == {0: 0}


@pytest.mark.parametrize(("window", "remembered"), [("task", False), ("all", True)])
def test_influence_window_decides_whether_earlier_tasks_count(window, remembered):
    bench = _benchmark()
    ledger = InfluenceLedger()
    buffer = MetaSPBuffer(4, "rehsel", ledger, seed=0, influence_window=window)
    first = bench.scenario.train_stream[0]
    ledger.add([0] * len(first.dataset), list(range(len(first.dataset))), [1.0] * len(first.dataset))
    buffer.post_adapt(SimpleNamespace(), first)
    kept = buffer.keys
    assert bool(np.all(ledger.mean(kept) == 1.0)) is remembered
    assert bool(np.all(ledger.mean(kept) == 0.0)) is not remembered


def test_the_ledger_gives_a_task_s_recorded_indices_and_their_mean_values():
    ledger = InfluenceLedger()
    ledger.add([1, 1, 1, 0], [4, 2, 4, 2], [1.0, -2.0, 3.0, 5.0])
    indices, means = ledger.recorded(1)
    assert indices.tolist() == [2, 4] and means.tolist() == [-2.0, 2.0]
    assert ledger.recorded(3)[0].size == 0
