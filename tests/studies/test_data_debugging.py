"""HYDRA's data debugging at toy size: every criterion removes, retrains and reports, and finds noise."""

import numpy as np
import pytest
from idx_files import write_idx

from clbench.cli import main


def _patterns(folder, per_class, seed):
    """Ten classes, each a bright square at its own place on a noisy background."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    images = rng.integers(0, 60, size=(len(labels), 28, 28))
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 5)
        images[i, 4 + 10 * row : 12 + 10 * row, 2 + 5 * col : 7 + 5 * col] = 250
    return images.astype(np.uint8), labels


def _debug(tmp_path, config_text):
    """``clbench influence-debug`` on a config written to tmp_path: its result and rows by criterion."""
    import json

    config = tmp_path / "c.yaml"
    config.write_text(config_text)
    assert main(["influence-debug", str(config), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    return result, {row["criterion"]: row for row in result["rows"]}


def test_influence_debug_removes_retrains_and_finds_the_noisy_labels(tmp_path, capsys):
    result, rows = _debug(
        tmp_path,
        f"name: toy\ndata_path: {_toy_data(tmp_path)}\nn_train: 200\nn_val: 100\nn_test: 100\nnoise_rate: 0.5\n"
        "epochs: 15\nlr: 0.05\ncg_iterations: 5\n",
    )
    assert list(rows) == ["none", "hydra_fast", "cg", "identity", "small_loss"]
    noisy_share = 100 * result["noisy_share"]
    # the model learns the clean majority, so its large losses are mostly the permuted labels
    assert rows["small_loss"]["removed_noisy_pct"] > noisy_share + 20
    assert rows["hydra_fast"]["removed_noisy_pct"] > noisy_share + 20
    assert all(0 <= row["test_accuracy"] <= 100 for row in rows.values())
    assert rows["none"]["published"] == 87.44  # HYDRA's appendix Table 4, no filtering at 50 %
    assert "| hydra_fast" in (tmp_path / "out" / "report.md").read_text()


def test_shipped_debugging_configs_validate():
    from pathlib import Path

    from clbench.studies.data_debugging import load_debug_config

    configs = sorted((Path(__file__).parents[2] / "experiments" / "influence" / "debugging").glob("*.yaml"))
    assert configs
    for path in configs:
        assert load_debug_config(str(path), []).noise_rate > 0


def test_a_study_config_that_is_not_yaml_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    assert main(["influence-debug", str(tmp_path / "bad.yaml")]) == 2
    assert "bad.yaml' is not valid YAML at line" in capsys.readouterr().err


def _toy_data(tmp_path):
    data = tmp_path / "fmnist"
    data.mkdir()
    for prefix, per_class, seed in (("train", 40, 0), ("t10k", 10, 1)):
        images, labels = _patterns(data, per_class, seed)
        write_idx(data / f"{prefix}-images-idx3-ubyte", images)
        write_idx(data / f"{prefix}-labels-idx1-ubyte", labels)
    return data


def test_influence_cluster_separates_the_mislabelled_half_of_each_label(tmp_path):
    import json

    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: toy\ndata_path: {_toy_data(tmp_path)}\nn_train: 200\nn_val: 100\nn_test: 100\nnoise_rate: 0.5\n"
        "noise_kind: symmetric\ncluster_points: 30\nepochs: 15\nlr: 0.05\ncg_iterations: 5\n"
        "criteria: [hydra_fast, cg, identity]\n"
    )
    assert main(["influence-cluster", str(config), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    rows = {row["method"]: row for row in result["rows"]}
    assert list(rows) == ["hydra_fast", "cg", "identity"]
    assert 0.4 < result["noisy_share"] < 0.6
    # on these easy patterns the clean examples agree with the validation points, the wrong ones do not
    assert rows["hydra_fast"]["jaccard_clean"] > 60 and rows["hydra_fast"]["jaccard_mislabelled"] > 60
    assert rows["cg"]["published_clean"] == 41.26  # HYDRA Table 4, influence functions on Fashion-MNIST


def test_jaccard_matches_each_cluster_to_the_part_it_overlaps_best():
    from clbench.studies.data_clustering import cluster_overlap

    noisy = np.array([False] * 6 + [True] * 6)
    perfect = np.vstack([np.tile([1.0, -1.0], (6, 1)), np.tile([-1.0, 1.0], (6, 1))])
    assert cluster_overlap(perfect, np.zeros(12, dtype=int), noisy, seed=0) == (100.0, 100.0)
    one_off = perfect.copy()
    one_off[0] = [-1.0, 1.0]  # a clean example that looks mislabelled
    clean, wrong = cluster_overlap(one_off, np.zeros(12, dtype=int), noisy, seed=0)
    assert (clean, wrong) == pytest.approx((100 * 5 / 6, 100 * 6 / 7))


def _colour_folder(root):
    """A CIFAR-10-shaped image folder: each class a bright square at its own place, 32 x 32 colour."""
    from PIL import Image

    from clbench.datasets.cifar import CIFAR10_CLASSES

    for split, per_class, seed in (("train", 40, 0), ("test", 10, 1)):
        images, labels = _patterns(None, per_class, seed)
        for k, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / CIFAR10_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            padded = np.pad(image, 2)[..., None].repeat(3, axis=2)
            Image.fromarray(padded).save(folder / f"{k:04d}.png")
    return root


def test_influence_debug_reads_cifar10_image_folders(tmp_path):
    result, rows = _debug(
        tmp_path,
        f"name: toy\ndataset: cifar10\ndata_path: {_colour_folder(tmp_path / 'cifar10')}\nn_train: 200\n"
        "n_val: 100\nn_test: 100\nnoise_rate: 0.5\nepochs: 15\nlr: 0.05\ncriteria: [none, hydra_fast, small_loss]\n",
    )
    assert rows["hydra_fast"]["removed_noisy_pct"] > 100 * result["noisy_share"] + 20
    assert rows["none"]["published"] == 68.91  # HYDRA's appendix Table 4, CIFAR-10 at 50 %, no filtering
    assert (tmp_path / "out" / "report.md").read_text().startswith("CIFAR-10, 200 training images")


def test_hessian_aware_criterion_follows_the_same_run_and_finds_the_noise(tmp_path):
    result, rows = _debug(
        tmp_path,
        f"name: toy\ndata_path: {_toy_data(tmp_path)}\nn_train: 200\nn_val: 100\nn_test: 100\nnoise_rate: 0.5\n"
        "epochs: 6\nlr: 0.05\ncriteria: [none, hydra_aware]\n",
    )
    assert rows["hydra_aware"]["removed_noisy_pct"] > 100 * result["noisy_share"] + 20


def test_an_unknown_debugging_criterion_is_one_line(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("criteria: [none, hydra_fst]\n")
    assert main(["influence-debug", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "'hydra_fst'" in err and "hydra_aware" in err and len(err.splitlines()) == 1
