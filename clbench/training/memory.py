"""The replay memory interface the strategies share.

Every rehearsal memory answers three questions the same way, whatever it stores:
how many examples it holds (``len``), a random draw of ``count`` distinct examples on the
strategy's device (:meth:`ReplayMemory.draw`, through the run's data path), and taking
in the experience just learned (:meth:`ReplayMemory.update`). Avalanche's
``ExemplarsBuffer`` subclasses get it from :class:`DatasetMemory` (mixed in, or wrapped
by :class:`ExemplarsMemory` for buffers Avalanche builds itself); the tensor buffers of
GMED and HAL implement it directly (:class:`clbench.training.tensor_buffer.TensorReservoirBuffer`).
GSS's memory is the exception: it is updated with every incoming batch by its own rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

Drawn = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""Inputs, labels and the memory positions they were drawn from."""


@runtime_checkable
class ReplayMemory(Protocol):
    """A rehearsal memory as the strategies use it."""

    def __len__(self) -> int:
        """Examples held."""
        ...

    def draw(self, strategy: Any, count: int, augment: bool) -> Drawn:
        """``count`` distinct random examples (all if fewer), on ``strategy.device``."""
        ...

    def update(self, strategy: Any) -> None:
        """Take in ``strategy.experience``, the experience just learned."""
        ...


FETCH_CHUNK = 512
"""Examples read through a strategy's data path at once by :func:`fetch_all`."""


def fetch_all(strategy: Any, dataset: Any, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``dataset[indices]`` un-augmented on the strategy's device, read :data:`FETCH_CHUNK` at a time."""
    parts = [
        strategy.fetch_examples(dataset, indices[start : start + FETCH_CHUNK], augment=False)
        for start in range(0, len(indices), FETCH_CHUNK)
    ]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def draw_from_dataset(strategy: Any, dataset: Any, size: int, count: int, augment: bool) -> Drawn:
    """``count`` of the first ``size`` examples of ``dataset``, read by the strategy's data path."""
    positions = torch.randperm(size)[:count]
    x, y = strategy.fetch_examples(dataset, positions.tolist(), augment=augment)
    return x, y, positions


class DatasetMemory:
    """:class:`ReplayMemory` for an Avalanche ``ExemplarsBuffer`` subclass (mixed in front of it)."""

    buffer: Any

    def __len__(self) -> int:
        return len(self.buffer)

    def draw(self, strategy: Any, count: int, augment: bool) -> Drawn:
        """See :class:`ReplayMemory` (training augmentation of the stored examples if ``augment``)."""
        return draw_from_dataset(strategy, self.buffer, len(self), count, augment)

    def update(self, strategy: Any, **kwargs: Any) -> None:
        """See :class:`ReplayMemory`: Avalanche's ``post_adapt`` with the experience."""
        self.post_adapt(strategy, strategy.experience)  # type: ignore[attr-defined]


class ExemplarsMemory(DatasetMemory):
    """:class:`ReplayMemory` over an Avalanche buffer built elsewhere (MIR's class-balanced one)."""

    def __init__(self, storage: Any) -> None:
        """Wrap ``storage``, an Avalanche ``ExemplarsBuffer``."""
        self.storage = storage

    @property
    def buffer(self) -> Any:  # type: ignore[override]
        """The wrapped buffer's dataset."""
        return self.storage.buffer

    def post_adapt(self, agent: Any, exp: Any) -> None:
        """The wrapped buffer's update (so :meth:`DatasetMemory.update` serves both)."""
        self.storage.post_adapt(agent, exp)
