"""Split CIFAR-10 (5 tasks x 2 classes) and Split CIFAR-100 (10 tasks x 10 classes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from clbench.config import OMIT_AT_DEFAULT
from clbench.datasets.base import BENCHMARKS, ClassOrder, DataContext, ImageSplits, first_per_class
from clbench.datasets.label_noise import NoisyLabelsArgs
from clbench.datasets.sources import read_split_folder, read_torchvision_cifar

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


@dataclass(frozen=True)
class CifarArgs(NoisyLabelsArgs):
    """Arguments of the Split CIFAR benchmarks."""

    n_tasks: int = field(default=5, metadata={"help": "number of tasks; classes are split evenly"})
    class_order: ClassOrder = field(
        default="fixed", metadata={"help": "fixed (0,1 | 2,3 | ...) or shuffle (seeded by the run seed)"}
    )
    source: Literal["torchvision", "folder"] = field(
        default="torchvision",
        metadata={"help": "torchvision: download into <data_root>; folder: <path>/train|test/<class>/*"},
    )
    path: str | None = field(
        default=None, metadata={"help": "data folder; default <data_root> (torchvision) or <data_root>/<name>"}
    )
    download: bool = field(default=True, metadata={"help": "let torchvision download missing files"})
    augment: bool = field(default=True, metadata={"help": "random crop (pad 4) + horizontal flip"})
    train_per_class: int | None = field(
        default=None, metadata={"help": "keep only the first n training images of each class (reduced protocols)"}
    )
    normalize: bool = field(
        default=True,
        metadata={
            "help": "per-channel mean/std normalisation; false: pixels scaled to [0, 1] only (ToTensor)",
            OMIT_AT_DEFAULT: True,
        },
    )


@dataclass(frozen=True)
class Cifar100Args(CifarArgs):
    """Arguments of Split CIFAR-100 (10 tasks by default)."""

    n_tasks: int = field(default=10, metadata={"help": "number of tasks; classes are split evenly"})


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
"""CIFAR-10's class names (torchvision's, and the class folders of an image-folder copy)."""


def _load(
    name: str, args: CifarArgs, context: DataContext, stats: tuple[tuple[float, ...], tuple[float, ...]]
) -> ImageSplits:
    if args.source == "folder":
        root = context.data_root / name if args.path is None else context.data_root / args.path
        expected = CIFAR10_CLASSES if name == "cifar10" else 100
        train, test = read_split_folder(root, None, context.data_root / "decoded", f"split_{name}", expected)
    else:
        root = context.data_root if args.path is None else context.data_root / args.path
        train, test = read_torchvision_cifar(name, root, args.download)
    train = first_per_class(train, args.train_per_class)
    mean, std = stats if args.normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return ImageSplits(train=train, test=test, mean=mean, std=std, augment=args.augment)


@BENCHMARKS.register(
    "split_cifar10", args=CifarArgs, help="Split CIFAR-10: 5 tasks x 2 classes, 32x32 RGB", default_backbone="resnet18"
)
def split_cifar10(args: CifarArgs, context: DataContext) -> ImageSplits:
    """Load CIFAR-10 for the Split CIFAR-10 benchmark."""
    return _load("cifar10", args, context, CIFAR10_STATS)


@BENCHMARKS.register(
    "split_cifar100",
    args=Cifar100Args,
    help="Split CIFAR-100: 10 tasks x 10 classes, 32x32 RGB",
    default_backbone="resnet18",
)
def split_cifar100(args: Cifar100Args, context: DataContext) -> ImageSplits:
    """Load CIFAR-100 for the Split CIFAR-100 benchmark."""
    return _load("cifar100", args, context, CIFAR100_STATS)
