"""Split Mini-ImageNet: 100 classes, by default 5 tasks x 20 classes, images resized to 32x32."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clbench.datasets.base import BENCHMARKS, ClassOrder, DataContext, ImageArrays, ImageSplits
from clbench.datasets.label_noise import NoisyLabelsArgs
from clbench.datasets.sources import decode_files, list_image_folder, read_split_folder
from clbench.errors import DataError

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class MiniImageNetArgs(NoisyLabelsArgs):
    """Arguments of Split Mini-ImageNet.

    The folder is either split already (``path/train/<class>/*``, ``path/test/<class>/*``)
    or holds every class's images in one folder (``path/<class>/*``, the usual 600 images a
    class), which is split per class into the first ``train_per_class`` and the next
    ``test_per_class`` files in sorted order.
    """

    n_tasks: int = field(default=5, metadata={"help": "number of tasks; classes are split evenly"})
    class_order: ClassOrder = field(default="fixed", metadata={"help": "fixed or shuffle (seeded by the run seed)"})
    path: str | None = field(default=None, metadata={"help": "image folder; default <data_root>/miniimagenet"})
    image_size: int = field(default=32, metadata={"help": "images are resized to image_size x image_size"})
    n_classes: int | None = field(default=None, metadata={"help": "use only the first n classes (sorted); default all"})
    train_per_class: int = field(default=480, metadata={"help": "train images per class when the folder is not split"})
    test_per_class: int = field(default=120, metadata={"help": "test images per class when the folder is not split"})
    augment: bool = field(default=True, metadata={"help": "random crop (pad 4) + horizontal flip"})


def _keep_classes(arrays: ImageArrays, n_classes: int) -> ImageArrays:
    keep = arrays.labels < n_classes
    return ImageArrays(arrays.images[keep], arrays.labels[keep], arrays.class_names[:n_classes])


def _split_single_folder(args: MiniImageNetArgs, context: DataContext, root: Path) -> tuple[ImageArrays, ImageArrays]:
    classes, files = list_image_folder(root)
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for path, label in files:
        by_class.setdefault(label, []).append((path, label))
    train_files: list[tuple[Path, int]] = []
    test_files: list[tuple[Path, int]] = []
    for label, items in sorted(by_class.items()):
        needed = args.train_per_class + args.test_per_class
        if len(items) < needed:
            raise DataError(
                f"split_miniimagenet: class folder {root / classes[label]} has {len(items)} images, "
                f"needs train_per_class + test_per_class = {needed}"
            )
        train_files.extend(items[: args.train_per_class])
        test_files.extend(items[args.train_per_class : needed])
    cache = context.data_root / "decoded"
    return (
        decode_files(train_files, classes, args.image_size, cache),
        decode_files(test_files, classes, args.image_size, cache),
    )


@BENCHMARKS.register(
    "split_miniimagenet",
    args=MiniImageNetArgs,
    help="Split Mini-ImageNet: 5 tasks x 20 classes, resized to 32x32 (image folder)",
    default_backbone="resnet18",
)
def split_miniimagenet(args: MiniImageNetArgs, context: DataContext) -> ImageSplits:
    """Load Mini-ImageNet from an image folder."""
    root = context.data_root / (args.path if args.path is not None else "miniimagenet")
    if (root / "train").is_dir() or (root / "test").is_dir():
        train, test = read_split_folder(root, args.image_size, context.data_root / "decoded", "split_miniimagenet")
    elif root.is_dir():
        train, test = _split_single_folder(args, context, root)
    else:
        raise DataError(
            f"split_miniimagenet: no image folder at {root}; expected {root}/train/<class>/*.jpg and "
            f"{root}/test/<class>/*.jpg, or {root}/<class>/*.jpg (set --data-root or the benchmark's path)"
        )
    if args.n_classes is not None:
        if not 0 < args.n_classes <= len(train.class_names):
            raise DataError(
                f"split_miniimagenet: n_classes {args.n_classes} outside 1..{len(train.class_names)} "
                f"(classes found under {root})"
            )
        train, test = _keep_classes(train, args.n_classes), _keep_classes(test, args.n_classes)
    return ImageSplits(train=train, test=test, mean=IMAGENET_STATS[0], std=IMAGENET_STATS[1], augment=args.augment)
