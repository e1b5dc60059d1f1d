"""One training step, every plugin hook firing, for strategies with their own step.

Avalanche's ``er_ace.py`` pattern, written once: subclasses override the small methods
below instead of re-writing ``training_epoch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from avalanche.training.templates import SupervisedTemplate
from torch.utils.data import DataLoader

from clbench.data_path import IndexedSubset


class StepTemplate(SupervisedTemplate):  # type: ignore[misc]
    """A ``SupervisedTemplate`` whose step is assembled from overridable parts.

    Per experience, the loader over :meth:`training_indices` (all examples by default); per
    epoch, :meth:`before_epoch`. Per mini-batch: unpack -> ``before_training_iteration`` ->
    :meth:`prepare_batch`
    (may append replayed examples, may return per-example loss weights) -> forward ->
    :meth:`loss_weights` (may compute the weights from the forward) ->
    loss (weighted if weights were returned) -> backward -> :meth:`after_loss_backward`
    (extra gradient terms) -> update -> ``after_training_iteration`` -> :meth:`after_step`;
    per experience, :meth:`after_experience` before the plugins' ``after_training_exp``.
    """

    if TYPE_CHECKING:

        def fetch_examples(
            self, dataset: Any, indices: Sequence[int], augment: bool
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """``dataset[indices]`` on the device: supplied by the run's data path.

            :func:`clbench.training.context.build_strategy` puts the data path's mixin
            (:class:`clbench.data_path.ExampleFetch`) in front of every strategy.
            """

        def unaugmented_inputs(self, x: torch.Tensor) -> torch.Tensor:
            """See :class:`clbench.data_path.ExampleFetch` (supplied by the run's data path)."""

        def augment_like_training(self, x: torch.Tensor) -> torch.Tensor:
            """See :class:`clbench.data_path.ExampleFetch` (supplied by the run's data path)."""

    extra_batch_fields: tuple[str, ...] = ()
    """Named fields that the strategy's own train loader appends after ``(x, y, task)``
    (MetaSP: each example's dataset index). Each becomes ``self.mb_<name>`` and leaves the
    batch before Avalanche unpacks it; both data paths carry them (the device path keeps a
    loader's trailing index field)."""

    def _unpack_minibatch(self) -> None:
        batch: Any = self.mbatch  # type: ignore[has-type]
        extra = len(self.extra_batch_fields)
        if extra and self.is_training and batch is not None and len(batch) == 3 + extra:
            for name, value in zip(self.extra_batch_fields, batch[3:], strict=True):
                setattr(self, f"mb_{name}", value)
            self.mbatch = list(batch[:3])
        super()._unpack_minibatch()

    def before_epoch(self) -> None:
        """Run at the start of each training epoch, before its first batch."""

    def training_indices(self) -> list[int] | None:
        """The examples of the current experience to train on, or None for all of them.

        A strategy that returns indices (MetaSP: the experience less its held-out
        validation part) gets a loader over those examples that also yields each one's
        dataset index; declare ``extra_batch_fields = ("index",)`` to read it as ``mb_index``.
        Called once per experience, when the train loader is made.
        """
        return None

    def make_train_dataloader(self, num_workers: int = 0, shuffle: bool = True, **kwargs: Any) -> None:
        """Avalanche's loader, or one over :meth:`training_indices` that yields the dataset index too."""
        indices = self.training_indices()
        if indices is None:
            super().make_train_dataloader(num_workers=num_workers, shuffle=shuffle, **kwargs)
            return
        self.dataloader = DataLoader(
            IndexedSubset(self.adapted_dataset, indices),
            batch_size=self.train_mb_size,
            shuffle=shuffle,
            num_workers=num_workers,
        )

    def prepare_batch(self) -> torch.Tensor | None:
        """Change the batch before the forward pass; return per-example weights or None."""
        return None

    def loss_weights(self, weights: torch.Tensor | None) -> torch.Tensor | None:
        """Per-example loss weights once the forward has run (default: those of :meth:`prepare_batch`).

        A strategy whose weights need the forward's own graph or activations (MetaSP's
        fused step) computes them here, from ``self.mb_output``.
        """
        return weights

    def after_loss_backward(self) -> None:
        """Add gradient terms after the main loss's backward pass."""

    def after_step(self) -> None:
        """Run after the optimiser step and all its hooks."""

    def after_experience(self) -> None:
        """Run once an experience is learned, before the plugins' ``after_training_exp`` (memory updates)."""

    def _after_training_exp(self, **kwargs: Any) -> None:
        self.after_experience()
        super()._after_training_exp(**kwargs)

    def append_to_batch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Concatenate examples (e.g. replayed ones, task label 0) to the current mini-batch."""
        self.mbatch = [
            torch.cat([self.mb_x, x]),
            torch.cat([self.mb_y, y]),
            torch.cat([self.mb_task_id, torch.zeros_like(y)]),
        ]

    def training_epoch(self, **kwargs: Any) -> None:
        """One epoch of assembled steps."""
        self.before_epoch()
        for batch in self.dataloader:
            self.mbatch = batch
            if self._stop_training:
                break
            self._unpack_minibatch()
            self._before_training_iteration(**kwargs)
            weights = self.prepare_batch()
            self.optimizer.zero_grad()
            self.loss = self._make_empty_loss()
            self._before_forward(**kwargs)
            self.mb_output = self.forward()
            self._after_forward(**kwargs)
            weights = self.loss_weights(weights)
            if weights is None:
                self.loss += self.criterion()
            else:
                per_example = F.cross_entropy(self.mb_output, self.mb_y, reduction="none")
                self.loss += (weights * per_example).sum()
            self._before_backward(**kwargs)
            self.backward()
            self.after_loss_backward()
            self._after_backward(**kwargs)
            self._before_update(**kwargs)
            self.optimizer_step()
            self._after_update(**kwargs)
            self._after_training_iteration(**kwargs)
            self.after_step()
