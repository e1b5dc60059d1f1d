"""Label noise on a benchmark's training labels, drawn from the run's seed.

``label_noise: {kind: symmetric | pair | permute, rate: r}`` is an argument of every
built-in benchmark (:class:`NoisyLabelsArgs`, which their argument classes extend):

- ``symmetric``: in every class, round(r x its size) examples get a label drawn uniformly
  from the other classes (the noisy-label literature's symmetric noise);
- ``pair``: in every class c, round(r x its size) examples get label c + 1 (mod C), a fixed
  neighbour (pair-flip noise);
- ``permute``: round(r x N) examples, chosen over the whole training set, have their labels
  permuted among themselves (HYDRA's data-debugging setting); an example that draws its own
  label back is not noisy, so the realised rate is a little below r.

The noise is applied to the whole training set before it is cut into tasks, so each task
holds the examples whose *given* label is one of its classes (a mislabelled image of a
later task's class may arrive early), as a noisy stream would deliver them. Test labels
stay clean. The mask of corrupted examples travels with the benchmark, so a run can count
how clean its replay buffer is (:mod:`clbench.buffer_purity`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from clbench.config import OMIT_AT_DEFAULT
from clbench.errors import ConfigError

NoiseKind = Literal["symmetric", "pair", "permute"]

NOISE_STREAM = 0x4E4F495345
"""Mixed into the run's seed, so the noise is its own random stream (training draws are unchanged)."""


@dataclass(frozen=True)
class LabelNoise:
    """Which training labels are corrupted, and how."""

    kind: NoiseKind = field(default="symmetric", metadata={"help": "symmetric, pair or permute (see the module)"})
    rate: float = field(default=0.0, metadata={"help": "share of training labels corrupted, in [0, 1)"})

    def __post_init__(self) -> None:
        """Check the rate.

        Raises:
            ConfigError: ``rate`` outside [0, 1).
        """
        if not 0 <= self.rate < 1:
            raise ConfigError(f"label_noise.rate: must be in [0, 1), got {self.rate}")


@dataclass(frozen=True)
class NoisyLabelsArgs:
    """The argument every built-in benchmark takes for label noise (absent from run ids when unset)."""

    label_noise: LabelNoise | None = field(
        default=None,
        metadata={
            "help": "corrupt training labels: {kind: symmetric | pair | permute, rate: r}, drawn from the run's seed",
            OMIT_AT_DEFAULT: True,
        },
    )


def corrupt_labels(
    labels: npt.NDArray[np.int64], n_classes: int, noise: LabelNoise, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """The noisy labels and the mask of examples whose label changed."""
    rng = np.random.default_rng([seed, NOISE_STREAM])
    noisy = labels.copy()
    if noise.kind == "permute":
        chosen = rng.choice(len(labels), size=round(noise.rate * len(labels)), replace=False)
        noisy[chosen] = labels[rng.permutation(chosen)]
        return noisy, noisy != labels
    for c in range(n_classes):
        members = np.flatnonzero(labels == c)
        chosen = rng.choice(members, size=round(noise.rate * len(members)), replace=False)
        if noise.kind == "pair":
            noisy[chosen] = (c + 1) % n_classes
        else:
            noisy[chosen] = (c + rng.integers(1, n_classes, size=len(chosen))) % n_classes
    return noisy, noisy != labels
