"""A tiny synthetic image benchmark for tests and smoke runs.

Each class is a fixed random prototype image; examples are the prototype plus Gaussian
pixel noise. The data depend only on ``data_seed``, never on the run seed, so different
seeds of a run see the same data and differ only in training randomness.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clbench.datasets.base import BENCHMARKS, ClassOrder, DataContext, ImageArrays, ImageSplits
from clbench.datasets.label_noise import NoisyLabelsArgs


@dataclass(frozen=True)
class SyntheticArgs(NoisyLabelsArgs):
    """Arguments of the synthetic benchmark."""

    n_tasks: int = field(default=3, metadata={"help": "number of tasks; classes are split evenly"})
    n_classes: int = field(default=6, metadata={"help": "number of classes"})
    class_order: ClassOrder = field(default="fixed", metadata={"help": "fixed or shuffle (seeded by the run seed)"})
    train_per_class: int = field(default=40, metadata={"help": "training examples per class"})
    test_per_class: int = field(default=20, metadata={"help": "test examples per class"})
    image_size: int = field(default=8, metadata={"help": "side of the square images"})
    channels: int = field(default=1, metadata={"help": "image channels"})
    noise: float = field(default=0.6, metadata={"help": "pixel noise std as a fraction of 255"})
    data_seed: int = field(default=0, metadata={"help": "seed of the prototypes and noise"})
    augment: bool = field(default=False, metadata={"help": "random crop (pad 4) + horizontal flip"})


def make_synthetic(args: SyntheticArgs) -> ImageSplits:
    """Generate the synthetic train and test splits."""
    rng = np.random.default_rng(args.data_seed)
    shape = (args.image_size, args.image_size, args.channels)
    prototypes = rng.uniform(0, 255, size=(args.n_classes, *shape))
    names = tuple(f"class{c}" for c in range(args.n_classes))

    def sample(per_class: int) -> ImageArrays:
        labels = np.repeat(np.arange(args.n_classes, dtype=np.int64), per_class)
        noise = rng.normal(0.0, args.noise * 255, size=(len(labels), *shape))
        images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
        return ImageArrays(images, labels, names)

    train = sample(args.train_per_class)
    test = sample(args.test_per_class)
    return ImageSplits(
        train=train, test=test, mean=(0.5,) * args.channels, std=(0.3,) * args.channels, augment=args.augment
    )


@BENCHMARKS.register(
    "synthetic",
    args=SyntheticArgs,
    help="tiny synthetic images for tests (3 tasks x 2 classes)",
    default_backbone="mlp",
)
def synthetic(args: SyntheticArgs, context: DataContext) -> ImageSplits:
    """Build the synthetic benchmark (needs no files)."""
    return make_synthetic(args)
