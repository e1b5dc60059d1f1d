"""Benchmark plumbing shared by every benchmark family.

A benchmark family module turns its typed arguments into :class:`ImageSplits` (uint8
images in memory plus labels); :func:`build_benchmark` turns those into an Avalanche
class-incremental benchmark (``nc_benchmark``) with a fixed or seeded class order, so any
Avalanche strategy runs on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from clbench.errors import ConfigError
from clbench.registry import Registry

ClassOrder = Literal["fixed", "shuffle"]


@dataclass(frozen=True)
class DataContext:
    """What a benchmark needs from outside its own arguments.

    Attributes:
        data_root: Folder under which downloads and offline copies live.
        seed: The run's seed (used for a shuffled class order).
    """

    data_root: Path
    seed: int


@dataclass(frozen=True)
class ImageArrays:
    """Images of one split held in memory.

    Attributes:
        images: ``uint8`` array of shape (N, H, W, C).
        labels: ``int64`` array of shape (N,), class ids in ``range(len(class_names))``.
        class_names: Human names of the classes, indexed by class id.
    """

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 NHWC, got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")


def first_per_class(arrays: ImageArrays, limit: int | None) -> ImageArrays:
    """Keep the first ``limit`` images of every class (in stored order); all when ``limit`` is None.

    Raises:
        ConfigError: ``limit`` is not positive.
    """
    if limit is None:
        return arrays
    if limit < 1:
        raise ConfigError(f"invalid per-class limit {limit}; valid choices: a positive integer or null (all)")
    keep = np.zeros(len(arrays.labels), dtype=bool)
    for label in np.unique(arrays.labels):
        keep[np.flatnonzero(arrays.labels == label)[:limit]] = True
    return ImageArrays(arrays.images[keep], arrays.labels[keep], arrays.class_names)


@dataclass(frozen=True)
class ImageSplits:
    """Train and test splits of one benchmark before it is cut into tasks.

    Attributes:
        train: Training images.
        test: Test images.
        mean: Per-channel mean used for normalisation.
        std: Per-channel standard deviation used for normalisation.
        augment: Whether training images get random crop (pad 4) + horizontal flip.
    """

    train: ImageArrays
    test: ImageArrays
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool


class ImageArrayDataset(Dataset[tuple[torch.Tensor, int]]):
    """A map-style dataset over in-memory images, normalised once, returning CHW float tensors.

    Normalising the whole split up front (one vectorised pass) leaves only the random
    augmentation to per-example transforms; evaluation needs none at all.
    """

    def __init__(self, arrays: ImageArrays, mean: Sequence[float], std: Sequence[float], augment: bool = False) -> None:
        """Convert ``arrays`` to normalised CHW float32 tensors.

        Args:
            arrays: The split's images and labels.
            mean: Per-channel mean for normalisation.
            std: Per-channel standard deviation for normalisation.
            augment: Whether training on this split uses crop + flip (read by the device
                data path, which augments in batch; the Avalanche path uses transforms).
        """
        self.pixels = torch.from_numpy(np.ascontiguousarray(arrays.images.transpose(0, 3, 1, 2)))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = augment
        shift = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        scale = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        self.images = (self.pixels.float().div_(255.0) - shift).div_(scale)
        self.targets: list[int] = arrays.labels.tolist()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.targets[index]


def make_train_transform(splits: ImageSplits) -> Callable[..., Any] | None:
    """Random crop (pad 4) + horizontal flip on normalised CHW tensors, or None.

    The padding is black in pixel space, i.e. (0 - mean) / std after normalisation, as with
    the usual crop-before-normalise pipeline.
    """
    if not splits.augment:
        return None
    from torchvision.transforms import v2

    height = splits.train.images.shape[1]
    black = [(0.0 - m) / s for m, s in zip(splits.mean, splits.std, strict=True)]
    augment: Callable[..., Any] = v2.Compose([v2.RandomCrop(height, padding=4, fill=black), v2.RandomHorizontalFlip()])
    return augment


@dataclass(frozen=True)
class Benchmark:
    """A benchmark ready to train on.

    Attributes:
        name: Registered benchmark name.
        scenario: The Avalanche benchmark (``train_stream`` / ``test_stream``).
        task_classes: Class ids of each task, in task order.
        n_classes: Total number of classes (the model's output size).
        input_shape: (C, H, W) of one input.
        class_names: Human names indexed by class id.
        noisy_train: With ``label_noise``, which training examples (rows of the training
            split) carry a corrupted label; None without label noise.
    """

    name: str
    scenario: Any
    task_classes: tuple[tuple[int, ...], ...]
    n_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    noisy_train: Any = None

    @property
    def n_tasks(self) -> int:
        """Number of tasks."""
        return len(self.task_classes)


def class_order_for(n_classes: int, order: ClassOrder, seed: int) -> list[int]:
    """The class order: 0..C-1 (the paper's code) or a permutation seeded by the run seed."""
    if order == "fixed":
        return list(range(n_classes))
    rng = np.random.default_rng(seed)
    return [int(c) for c in rng.permutation(n_classes)]


def split_into_tasks(class_order: Sequence[int], n_tasks: int) -> tuple[tuple[int, ...], ...]:
    """Cut a class order into ``n_tasks`` equally sized tasks.

    Raises:
        ConfigError: The classes do not divide evenly into ``n_tasks`` tasks.
    """
    n_classes = len(class_order)
    if n_tasks < 1 or n_classes % n_tasks != 0:
        divisors = [d for d in range(1, n_classes + 1) if n_classes % d == 0]
        raise ConfigError(
            f"invalid n_tasks {n_tasks} for {n_classes} classes; valid choices: " + ", ".join(str(d) for d in divisors)
        )
    per_task = n_classes // n_tasks
    return tuple(tuple(class_order[i * per_task : (i + 1) * per_task]) for i in range(n_tasks))


def build_benchmark(name: str, splits: ImageSplits, n_tasks: int, class_order: ClassOrder, seed: int) -> Benchmark:
    """Cut in-memory splits into an Avalanche class-incremental benchmark.

    Args:
        name: Benchmark name (for messages and results).
        splits: Train and test images.
        n_tasks: Number of tasks; the classes must divide evenly.
        class_order: ``fixed`` (0,1 | 2,3 | ...) or ``shuffle`` (seeded by ``seed``).
        seed: The run's seed.

    Returns:
        The benchmark.
    """
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark

    n_classes = len(splits.train.class_names)
    order = class_order_for(n_classes, class_order, seed)
    tasks = split_into_tasks(order, n_tasks)
    scenario = nc_benchmark(
        ImageArrayDataset(splits.train, splits.mean, splits.std, augment=splits.augment),
        ImageArrayDataset(splits.test, splits.mean, splits.std),
        n_experiences=n_tasks,
        task_labels=False,
        fixed_class_order=order,
        train_transform=make_train_transform(splits),
        eval_transform=None,
    )
    _, height, width, channels = splits.train.images.shape
    return Benchmark(
        name=name,
        scenario=scenario,
        task_classes=tasks,
        n_classes=n_classes,
        input_shape=(channels, height, width),
        class_names=splits.train.class_names,
    )


BenchmarkFactory = Callable[[Any, DataContext], ImageSplits]

BENCHMARKS: Registry[BenchmarkFactory] = Registry("benchmark", "clbench.benchmarks", builtin_package="clbench.datasets")
"""Benchmarks by name. Each entry's ``traits``: ``default_backbone`` (name) and
``n_tasks_arg`` is the args field holding the task count."""


def load_benchmark(name: str, args: Any, context: DataContext) -> Benchmark:
    """Build a registered benchmark from its arguments.

    Args:
        name: The registered benchmark name.
        args: Its arguments dataclass as a run carries it (validated once, by the grid), or
            a raw mapping (validated here: the form a script or a test writes).
        context: Data root and seed.

    Raises:
        UnknownNameError: ``name`` is not a registered benchmark.
        ConfigError: ``args`` do not validate.
        DataError: The data is missing or corrupt.
    """
    from clbench.config import from_mapping

    entry = BENCHMARKS.get(name)
    typed: Any = args if isinstance(args, entry.args) else from_mapping(entry.args, args, f"benchmark {name}")
    splits = entry.factory(typed, context)
    noise = getattr(typed, "label_noise", None)
    if noise is None or noise.rate == 0:
        return build_benchmark(name, splits, typed.n_tasks, typed.class_order, context.seed)
    from clbench.datasets.label_noise import corrupt_labels

    train = splits.train
    labels, noisy = corrupt_labels(train.labels, len(train.class_names), noise, context.seed)
    splits = dataclasses.replace(splits, train=dataclasses.replace(train, labels=labels))
    benchmark = build_benchmark(name, splits, typed.n_tasks, typed.class_order, context.seed)
    return dataclasses.replace(benchmark, noisy_train=noisy)
