"""Reservoir buffers that store their examples as tensors, so strategies can draw and edit them in batches."""

from __future__ import annotations

from typing import Any

import torch
from avalanche.training.storage_policy import ExemplarsBuffer


class TensorStore(ExemplarsBuffer):  # type: ignore[misc]
    """An ``ExemplarsBuffer`` whose first ``len(self)`` rows of ``x`` / ``y`` are its examples.

    The tensors are the source of truth: Avalanche's ``buffer`` dataset is built from them
    on demand, and replay draws rows in one indexing operation.
    """

    x: torch.Tensor
    y: torch.Tensor

    @property
    def buffer(self) -> Any:
        """The stored examples as an Avalanche dataset (built on demand)."""
        from avalanche.benchmarks.utils.classification_dataset import (
            _make_taskaware_tensor_classification_dataset,
        )

        x, y = self.x[: len(self)].cpu(), self.y[: len(self)].cpu()
        return _make_taskaware_tensor_classification_dataset(x, y, targets=y.tolist())

    @buffer.setter
    def buffer(self, value: Any) -> None:
        # Avalanche's base class assigns an empty dataset at construction; the tensors rule.
        pass

    def sample(self, count: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` random stored examples (without replacement) and their positions."""
        positions = torch.randperm(len(self))[:count]
        return self.x[positions].to(device), self.y[positions].to(device), positions

    def draw(self, strategy: Any, count: int, augment: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The :class:`~clbench.training.memory.ReplayMemory` draw: :meth:`sample` on the strategy's device.

        The stored inputs are un-augmented; with ``augment`` they get the run's training
        augmentation afresh, drawn per example and per draw
        (:meth:`clbench.data_path.ExampleFetch.augment_like_training`; nothing when the run
        does not augment). GMED and HAL draw without it: their inputs are edited in place.
        """
        x, y, positions = self.sample(count, strategy.device)
        return (strategy.augment_like_training(x) if augment else x), y, positions


class TensorReservoirBuffer(TensorStore):
    """Reservoir sampling over the stream, holding inputs and labels as tensors.

    Updated after each experience: every example seen so far has the same chance to be
    in the buffer (random keys; the ``max_size`` largest are kept), as in Avalanche's
    ``ReservoirSamplingBuffer``. Inputs are stored without training augmentation (the
    experience's evaluation view) so that in-place edits persist.
    """

    def __init__(self, max_size: int) -> None:
        """Create an empty buffer of ``max_size`` examples."""
        super().__init__(max_size)
        self.x = torch.zeros(0)
        self.y = torch.zeros(0, dtype=torch.long)
        self.edit_counts = torch.zeros(0, dtype=torch.long)
        self._keys = torch.zeros(0)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def update(self, strategy: Any, **kwargs: Any) -> None:
        """The :class:`~clbench.training.memory.ReplayMemory` update: reservoir over the experience."""
        self.post_adapt(strategy, strategy.experience)

    def write(self, positions: torch.Tensor, x: torch.Tensor) -> None:
        """Replace the stored inputs at ``positions`` and count the edit."""
        self.x[positions] = x.detach().to(self.x.device, self.x.dtype)
        self.edit_counts[positions] += 1

    def post_adapt(self, agent: Any, exp: Any) -> None:
        """Add the experience's examples by reservoir sampling."""
        dataset = exp.dataset.eval()
        items = [dataset[i] for i in range(len(dataset))]
        new_x = torch.stack([item[0] for item in items])
        new_y = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
        keys = torch.cat([self._keys, torch.rand(len(new_y))])
        x = torch.cat([self.x, new_x]) if len(self) else new_x
        y = torch.cat([self.y, new_y])
        counts = torch.cat([self.edit_counts, torch.zeros(len(new_y), dtype=torch.long)])
        keep = torch.argsort(keys, descending=True)[: self.max_size]
        self.x, self.y, self.edit_counts, self._keys = x[keep], y[keep], counts[keep], keys[keep]

    def resize(self, strategy: Any, new_size: int) -> None:
        """Keep the ``new_size`` examples with the largest reservoir keys."""
        self.max_size = new_size
        keep = torch.argsort(self._keys, descending=True)[:new_size]
        self.x, self.y, self.edit_counts, self._keys = (
            self.x[keep],
            self.y[keep],
            self.edit_counts[keep],
            self._keys[keep],
        )


class StreamReservoir(TensorStore):
    """Reservoir sampling (Vitter's algorithm R) over the incoming mini-batches, held as tensors.

    :meth:`offer` takes each incoming example as it arrives: the first ``max_size`` fill the
    buffer, the n-th after that replaces a random slot with probability ``max_size / n``, so
    at every step the buffer is a uniform sample of the stream so far, the current task
    included. This is the memory of the online survey's code (RaptorMai/online-continual-learning,
    ``utils/buffer/reservoir_update.py``), whose replay draws from it during the task that fills it.
    The inputs are offered un-augmented (``strategy.unaugmented_inputs(mb_x)``) and augmented
    afresh at every draw, as the references do (ER-ACE's ``pclucas14/AML`` stores the raw
    batch and augments each replayed one; Mammoth's DER stores ``not_aug_inputs``).
    """

    def __init__(self, max_size: int) -> None:
        """Create an empty buffer of ``max_size`` examples."""
        super().__init__(max_size)
        self.x = torch.zeros(0)
        self.y = torch.zeros(0, dtype=torch.long)
        self.extra: dict[str, torch.Tensor] = {}
        self.filled = 0
        self.seen = 0

    def __len__(self) -> int:
        return self.filled

    def offer(self, x: torch.Tensor, y: torch.Tensor, **extra: torch.Tensor) -> None:
        """Take the incoming examples ``(x, y)`` by reservoir sampling (``x`` un-augmented).

        ``extra``: further per-example tensors stored beside them under their own names
        (DER's logits), in the same slots; every call must offer the same names.
        """
        if self.filled == 0 and self.x.numel() == 0:
            self.x = torch.zeros((self.max_size, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self.y = torch.zeros(self.max_size, dtype=torch.long, device=y.device)
            self.extra = {name: value.new_zeros((self.max_size, *value.shape[1:])) for name, value in extra.items()}
        for i in range(len(y)):
            self.seen += 1
            if self.filled < self.max_size:
                slot, self.filled = self.filled, self.filled + 1
            else:
                slot = int(torch.randint(0, self.seen, (1,)))
                if slot >= self.max_size:
                    continue
            self.x[slot] = x[i].detach()
            self.y[slot] = y[i]
            for name, value in extra.items():
                self.extra[name][slot] = value[i].detach()

    def update(self, strategy: Any, **kwargs: Any) -> None:
        """Nothing to do at the end of an experience: :meth:`offer` took every example as it came."""

    def post_adapt(self, agent: Any, exp: Any) -> None:
        """See :meth:`update`."""

    def resize(self, strategy: Any, new_size: int) -> None:
        """A stream reservoir has a fixed size."""
        raise NotImplementedError("StreamReservoir has a fixed size")
