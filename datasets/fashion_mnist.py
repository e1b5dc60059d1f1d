"""Split Fashion-MNIST: 5 tasks x 2 classes of 28x28 grey images, from IDX files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from clbench.datasets.base import BENCHMARKS, ClassOrder, DataContext, ImageArrays, ImageSplits, first_per_class
from clbench.datasets.label_noise import NoisyLabelsArgs
from clbench.datasets.sources import read_idx
from clbench.errors import DataError

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class FashionMnistArgs(NoisyLabelsArgs):
    """Arguments of Split Fashion-MNIST."""

    n_tasks: int = field(default=5, metadata={"help": "number of tasks; classes are split evenly"})
    class_order: ClassOrder = field(default="fixed", metadata={"help": "fixed or shuffle (seeded by the run seed)"})
    source: Literal["idx", "torchvision"] = field(
        default="idx", metadata={"help": "idx: IDX files in path; torchvision: download into <data_root>"}
    )
    path: str = field(
        default=DEBIAN_FASHION_MNIST,
        metadata={"help": "folder of the IDX files (Debian's dataset-fashion-mnist puts them here)"},
    )
    train_per_class: int | None = field(default=None, metadata={"help": "keep only the first n train images a class"})
    test_per_class: int | None = field(default=None, metadata={"help": "keep only the first n test images a class"})


def read_idx_pair(folder: str, prefix: str) -> ImageArrays:
    """The images and labels of ``<prefix>-images-idx3-ubyte`` / ``-labels-idx1-ubyte`` in ``folder`` (gz or not)."""
    from pathlib import Path

    root = Path(folder)
    if not root.is_dir():
        raise DataError(
            f"split_fmnist: folder {root} not found; expected the IDX files {prefix}-images-idx3-ubyte.gz "
            f"and {prefix}-labels-idx1-ubyte.gz there (apt-get install dataset-fashion-mnist)"
        )
    images = read_idx(root / f"{prefix}-images-idx3-ubyte")
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte")
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"split_fmnist: IDX files {prefix}-* in {root} do not form an image/label pair")
    return ImageArrays(images[..., None].copy(), labels.astype(np.int64), FASHION_CLASSES)


@BENCHMARKS.register(
    "split_fmnist",
    args=FashionMnistArgs,
    help="Split Fashion-MNIST: 5 tasks x 2 classes, 28x28 grey",
    default_backbone="mlp",
)
def split_fmnist(args: FashionMnistArgs, context: DataContext) -> ImageSplits:
    """Load Fashion-MNIST from IDX files or through torchvision."""
    if args.source == "idx":
        folder = str(context.data_root / args.path)
        train, test = read_idx_pair(folder, "train"), read_idx_pair(folder, "t10k")
    else:
        from torchvision import datasets

        splits = []
        for is_train in (True, False):
            try:
                data = datasets.FashionMNIST(str(context.data_root), train=is_train, download=True)
            except (RuntimeError, OSError) as exc:
                raise DataError(f"split_fmnist: torchvision download into {context.data_root} failed ({exc})") from None
            splits.append(
                ImageArrays(data.data.numpy()[..., None], data.targets.numpy().astype(np.int64), FASHION_CLASSES)
            )
        train, test = splits
    train = first_per_class(train, args.train_per_class)
    test = first_per_class(test, args.test_per_class)
    return ImageSplits(train=train, test=test, mean=(0.2860,), std=(0.3530,), augment=False)
