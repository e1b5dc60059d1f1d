"""Loaders on small image-folder and IDX fixtures the tests create."""

import numpy as np
import pytest
import torch
from idx_files import write_idx
from PIL import Image

from clbench.datasets.base import DataContext, load_benchmark
from clbench.datasets.cifar import CIFAR10_CLASSES, CIFAR10_STATS
from clbench.datasets.sources import read_idx
from clbench.errors import DataError

CLASSES = list(CIFAR10_CLASSES)


def _write_images(folder, classes, per_class, size, seed=0, fmt="png"):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            pixels = np.full((size, size, 3), (40 * c) % 250, dtype=np.uint8) + rng.integers(
                0, 5, (size, size, 3), dtype=np.uint8
            )
            Image.fromarray(pixels).save(target / f"{k:03d}.{fmt}")


def _split_folder(root, classes, n_train, n_test, size=32):
    _write_images(root / "train", classes, n_train, size)
    _write_images(root / "test", classes, n_test, size, seed=1)


def test_split_cifar10_reads_image_folder(tmp_path):
    _split_folder(tmp_path / "cifar10", CLASSES, 3, 2)
    bench = load_benchmark("split_cifar10", {"source": "folder", "n_tasks": 5}, DataContext(tmp_path, seed=1231))
    assert bench.task_classes == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    assert bench.n_classes == 10 and bench.input_shape == (3, 32, 32)
    assert bench.class_names == tuple(CLASSES)
    train = bench.scenario.train_stream
    assert [len(e.dataset) for e in train] == [6] * 5
    x, y, *_ = train[1].dataset[0]
    assert x.shape == (3, 32, 32) and x.dtype.is_floating_point and y in (2, 3)
    assert [len(e.dataset) for e in bench.scenario.test_stream] == [4] * 5


def test_shuffled_class_order_depends_on_seed(tmp_path):
    _split_folder(tmp_path / "cifar10", CLASSES, 1, 1)
    orders = {
        load_benchmark(
            "split_cifar10", {"source": "folder", "n_tasks": 2, "class_order": "shuffle"}, DataContext(tmp_path, seed)
        ).task_classes
        for seed in range(6)
    }
    assert len(orders) > 1
    for order in orders:
        assert sorted(c for task in order for c in task) == list(range(10))


def test_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError) as info:
        load_benchmark("split_cifar10", {"source": "folder"}, DataContext(tmp_path, 1))
    message = str(info.value)
    assert "\n" not in message
    assert f"{tmp_path}/cifar10/train/<class>" in message


def test_corrupt_image_names_the_file(tmp_path):
    _split_folder(tmp_path / "cifar10", CLASSES, 2, 1)
    broken = tmp_path / "cifar10" / "train" / "cat" / "001.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"corrupt image file .*001\.png"):
        load_benchmark("split_cifar10", {"source": "folder", "n_tasks": 2}, DataContext(tmp_path, 1))


def test_uneven_task_split_lists_valid_task_counts(tmp_path):
    _split_folder(tmp_path / "cifar10", CLASSES, 1, 1)
    from clbench.errors import ConfigError

    with pytest.raises(ConfigError, match="invalid n_tasks 3 for 10 classes; valid choices: 1, 2, 5, 10"):
        load_benchmark("split_cifar10", {"source": "folder", "n_tasks": 3}, DataContext(tmp_path, 1))


def test_decoded_images_are_cached(tmp_path):
    _split_folder(tmp_path / "cifar10", CLASSES, 2, 1)
    load_benchmark("split_cifar10", {"source": "folder", "n_tasks": 2}, DataContext(tmp_path, 1))
    assert len(list((tmp_path / "decoded").glob("*.npz"))) == 2


def test_miniimagenet_single_folder_is_split_per_class_and_resized(tmp_path):
    classes = [f"n0{i}" for i in range(4)]
    _write_images(tmp_path / "miniimagenet", classes, 5, 84, fmt="jpg")
    bench = load_benchmark(
        "split_miniimagenet",
        {"n_tasks": 2, "train_per_class": 4, "test_per_class": 1},
        DataContext(tmp_path, 1),
    )
    assert bench.input_shape == (3, 32, 32)
    assert [len(e.dataset) for e in bench.scenario.train_stream] == [8, 8]
    assert [len(e.dataset) for e in bench.scenario.test_stream] == [2, 2]


def test_miniimagenet_split_folder_and_class_subset(tmp_path):
    classes = [f"n0{i}" for i in range(6)]
    _split_folder(tmp_path / "mini", classes, 2, 1, size=84)
    bench = load_benchmark(
        "split_miniimagenet", {"path": "mini", "n_tasks": 2, "n_classes": 4}, DataContext(tmp_path, 1)
    )
    assert bench.n_classes == 4 and bench.task_classes == ((0, 1), (2, 3))


def test_miniimagenet_too_few_images_a_class(tmp_path):
    _write_images(tmp_path / "miniimagenet", ["n01", "n02"], 3, 84)
    with pytest.raises(DataError, match="has 3 images, needs train_per_class"):
        load_benchmark("split_miniimagenet", {"n_tasks": 1}, DataContext(tmp_path, 1))


def _fashion_fixture(folder, per_class=3):
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", per_class), ("t10k", 1)):
        labels = np.repeat(np.arange(10), n)
        images = np.stack([np.full((28, 28), 20 * label, np.uint8) for label in labels])
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)


def test_fashion_mnist_reads_idx_files(tmp_path):
    _fashion_fixture(tmp_path / "fmnist")
    bench = load_benchmark(
        "split_fmnist", {"path": str(tmp_path / "fmnist"), "train_per_class": 2}, DataContext(tmp_path, 1)
    )
    assert bench.n_tasks == 5 and bench.input_shape == (1, 28, 28)
    assert [len(e.dataset) for e in bench.scenario.train_stream] == [4] * 5


def test_idx_reader_round_trip_and_corruption(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "plain", array, compress=False)
    assert np.array_equal(read_idx(tmp_path / "plain"), array)
    truncated = tmp_path / "trunc"
    truncated.write_bytes((tmp_path / "plain").read_bytes()[:-3])
    with pytest.raises(DataError, match="expected 24 values, found 21"):
        read_idx(truncated)
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "absent")


def test_missing_fashion_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_benchmark("split_fmnist", {"path": str(tmp_path / "none")}, DataContext(tmp_path, 1))


@pytest.mark.parametrize("name", ["split_cifar10", "split_cifar100"])
def test_missing_torchvision_files_are_a_one_line_error(tmp_path, name):
    with pytest.raises(DataError) as info:
        load_benchmark(name, {"source": "torchvision", "download": False}, DataContext(tmp_path, 1))
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and "source: folder" in message


def test_split_cifar100_reads_image_folder(tmp_path):
    classes = [f"c{i:02d}" for i in range(100)]
    _split_folder(tmp_path / "cifar100", classes, 1, 1, size=8)
    bench = load_benchmark("split_cifar100", {"source": "folder"}, DataContext(tmp_path, 1))
    assert bench.n_tasks == 10 and bench.task_classes[3] == tuple(range(30, 40))


def test_a_missing_class_folder_is_named_instead_of_a_smaller_benchmark(tmp_path):
    # with 9 class folders and n_tasks 3 this trained a nine-class "Split CIFAR-10" in silence
    _split_folder(tmp_path / "cifar10", CLASSES[:-1], 1, 1, size=8)
    with pytest.raises(DataError) as info:
        load_benchmark("split_cifar10", {"source": "folder", "n_tasks": 3}, DataContext(tmp_path, 1))
    message = str(info.value)
    assert "\n" not in message and "missing truck" in message and str(tmp_path / "cifar10" / "train") in message
    _split_folder(tmp_path / "cifar100", [f"c{i:02d}" for i in range(99)], 1, 1, size=8)
    with pytest.raises(DataError, match="holds 99 class folders; expected 100"):
        load_benchmark("split_cifar100", {"source": "folder"}, DataContext(tmp_path, 1))


def test_cifar_without_normalisation_serves_pixels_in_unit_range(tmp_path):
    _split_folder(tmp_path / "cifar10", CLASSES, 2, 1)
    args = {"source": "folder", "n_tasks": 2}
    plain = load_benchmark("split_cifar10", {**args, "normalize": False}, DataContext(tmp_path, seed=1))
    normalised = load_benchmark("split_cifar10", args, DataContext(tmp_path, seed=1))
    # the test split: the training one is randomly cropped and flipped on reading
    x_plain, y_plain, *_ = plain.scenario.test_stream[0].dataset[0]
    x_norm, y_norm, *_ = normalised.scenario.test_stream[0].dataset[0]
    assert y_plain == y_norm
    assert float(x_plain.min()) >= 0.0 and float(x_plain.max()) <= 1.0
    assert float(x_norm.min()) < 0.0  # the dark fixture images fall below CIFAR-10's channel means
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in CIFAR10_STATS)
    assert torch.allclose((x_plain - mean) / std, x_norm, atol=1e-5)
