"""Label noise as a benchmark option: rates, kinds, determinism, clean tests, buffer purity."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tiny_configs import run_one_noisy

from clbench.config import from_mapping
from clbench.datasets.base import DataContext, load_benchmark
from clbench.datasets.label_noise import LabelNoise, corrupt_labels
from clbench.datasets.synthetic import SyntheticArgs, make_synthetic
from clbench.errors import ConfigError

LABELS = np.repeat(np.arange(5, dtype=np.int64), 40)


@pytest.mark.parametrize("kind", ["symmetric", "pair"])
def test_per_class_kinds_corrupt_round_r_n_of_every_class(kind):
    noisy, mask = corrupt_labels(LABELS, 5, LabelNoise(kind, 0.3), seed=1231)
    for c in range(5):
        assert mask[np.equal(LABELS, c)].sum() == 12
    assert (noisy[mask] != LABELS[mask]).all() and (noisy[~mask] == LABELS[~mask]).all()
    if kind == "pair":
        assert ((noisy[mask] - LABELS[mask]) % 5 == 1).all()
    else:  # uniform over the other classes: every offset is drawn
        assert set(((noisy[mask] - LABELS[mask]) % 5).tolist()) == {1, 2, 3, 4}


def test_permute_shuffles_the_labels_of_r_n_examples_among_themselves():
    noisy, mask = corrupt_labels(LABELS, 5, LabelNoise("permute", 0.5), seed=1231)
    assert np.array_equal(np.bincount(noisy), np.bincount(LABELS))  # a permutation keeps the label counts
    assert 0.3 * len(LABELS) < mask.sum() <= 0.5 * len(LABELS)  # ~4/5 of the drawn labels change
    assert np.array_equal(mask, noisy != LABELS)


def test_noise_is_drawn_from_the_seed():
    first = corrupt_labels(LABELS, 5, LabelNoise("symmetric", 0.2), seed=1231)
    again = corrupt_labels(LABELS, 5, LabelNoise("symmetric", 0.2), seed=1231)
    other = corrupt_labels(LABELS, 5, LabelNoise("symmetric", 0.2), seed=1232)
    assert np.array_equal(first[0], again[0]) and not np.array_equal(first[0], other[0])
    assert not corrupt_labels(LABELS, 5, LabelNoise("symmetric", 0.0), seed=1)[1].any()


@pytest.mark.parametrize(
    ("noise", "message"),
    [({"rate": 1.0}, r"rate: must be in \[0, 1\), got 1.0"), ({"rate": -0.1}, "got -0.1"), ({"kind": "flip"}, "flip")],
)
def test_bad_noise_is_a_one_line_error(noise, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(SyntheticArgs, {"label_noise": noise}, "benchmark synthetic")


def _context(seed: int = 1231) -> DataContext:
    return DataContext(Path("/nonexistent"), seed)


def test_training_labels_are_noisy_and_test_labels_clean():
    from clbench.data_path import resolve_rows

    clean = make_synthetic(SyntheticArgs())
    bench = load_benchmark("synthetic", {"label_noise": {"kind": "symmetric", "rate": 0.25}}, _context())
    test_targets = np.concatenate([np.asarray(e.dataset.targets) for e in bench.scenario.test_stream])
    assert bench.noisy_train.mean() == 0.25
    assert sorted(test_targets.tolist()) == sorted(clean.test.labels.tolist())
    for experience in bench.scenario.train_stream:  # each example's given label is noisy exactly where the mask says
        rows = resolve_rows(experience.dataset)[1]
        differs = np.asarray(experience.dataset.targets) != clean.train.labels[rows]
        assert np.array_equal(differs, bench.noisy_train[rows])
    assert load_benchmark("synthetic", {}, _context()).noisy_train is None


def test_buffer_purity_counts_the_clean_labels_a_memory_holds():
    from clbench.buffer_purity import BufferPurity
    from clbench.data_path import resolve_rows

    clean = make_synthetic(SyntheticArgs()).train.labels
    bench = load_benchmark("synthetic", {"label_noise": {"kind": "symmetric", "rate": 0.5}}, _context())
    dataset = bench.scenario.train_stream[0].dataset
    held = dataset.subset(list(range(0, len(dataset), 3)))
    rows = resolve_rows(held)[1]
    truth = float(np.mean(np.asarray(held.targets) == clean[rows]))  # the given label is the true one
    strategy = SimpleNamespace(
        storage=SimpleNamespace(buffer=held), plugins=[], experience=SimpleNamespace(current_experience=0)
    )
    purity = BufferPurity(bench.noisy_train)
    purity.after_training_exp(strategy)
    assert purity.tasks == [{"task": 0, "held": len(rows), "purity": pytest.approx(truth)}]
    assert 0.3 < truth < 0.7


def test_a_noisy_run_records_purity_per_task_and_its_noise_in_the_run_id(tmp_path):
    from clbench.cli import main

    config = tmp_path / "noisy.yaml"
    config.write_text(
        "name: noisy\n"
        "benchmarks:\n"
        "  - {name: synthetic, args: {label_noise: {kind: pair, rate: 0.2}}}\n"
        "  - synthetic\n"
        "strategies: [er, der]\nbuffer_sizes: [12]\nseeds: [1231]\n"
        "backbone: {name: mlp, args: {hidden: [16]}}\n"
        "training: {epochs: 1, batch_size: 8, replay_batch_size: 8, lr: 0.05}\n"
    )
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    import json

    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").glob("*.json"))]
    noisy = {r["config"]["strategy"]["name"]: r for r in results if "label_noise" in r["config"]["benchmark"]["args"]}
    clean = [r for r in results if "label_noise" not in r["config"]["benchmark"]["args"]]
    assert len(noisy) == 2 and len(clean) == 2 and all("buffer_purity" not in r for r in clean)
    er = noisy["er"]["buffer_purity"]
    assert [t["task"] for t in er] == [0, 1, 2] and all(t["held"] == 12 and 0 <= t["purity"] <= 1 for t in er)
    assert all(t["purity"] is None for t in noisy["der"]["buffer_purity"])  # a memory of tensors


def test_a_strategy_s_own_scores_of_its_task_are_audited_against_the_noise():
    """MetaSP's weighting: the AUROC of its scores of the task's examples, on the split's rows."""
    from clbench.buffer_purity import BufferPurity, ScoredExamples, harm_auroc
    from clbench.data_path import resolve_rows

    bench = load_benchmark("synthetic", {"label_noise": {"kind": "symmetric", "rate": 0.5}}, _context())
    dataset = bench.scenario.train_stream[1].dataset
    indices = np.arange(0, len(dataset), 2)
    rows = resolve_rows(dataset)[1][indices]
    harm = np.where(bench.noisy_train[rows], 1.0, 0.0) + np.linspace(0.0, 1.5, len(indices))
    strategy = SimpleNamespace(
        storage=SimpleNamespace(buffer=dataset.subset([])),
        plugins=[],
        experience=SimpleNamespace(current_experience=1),
        scored_examples=ScoredExamples(dataset, indices, harm),
    )
    purity = BufferPurity(bench.noisy_train)
    purity.after_training_exp(strategy)
    weighting = purity.tasks[0]["weighting"]
    flags = bench.noisy_train[rows]
    assert weighting["scored"] == len(indices) and weighting["noisy_scored"] == int(flags.sum()) > 0
    import torch

    assert weighting["auroc"] == pytest.approx(harm_auroc(torch.as_tensor(harm), flags))
    assert 0.5 < weighting["auroc"] < 1.0  # mostly above, not all: the ramp reorders some pairs


def test_a_noisy_metasp_run_records_how_its_influence_ranks_the_mislabelled_examples(tmp_path):
    result = run_one_noisy(tmp_path, "{name: metasp, args: {influence: meta_lastlayer}}", 12)
    first, *later = [t["weighting"] for t in result["buffer_purity"]]
    assert first == {"scored": 0, "noisy_scored": 0, "auroc": None}  # task 1 trains without the buffer
    assert later and all(w["scored"] > 0 and w["noisy_scored"] > 0 and 0 <= w["auroc"] <= 1 for w in later)
