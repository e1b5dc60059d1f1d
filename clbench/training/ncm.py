"""The nearest-class-mean classifier of iCaRL and SCR, as per-class scores.

Class means are the normalised means of the L2-normalised features (``model.features``)
of the examples a memory holds, computed in evaluation mode (``normalise=False``: the plain
means of the raw features, as ER-ACE's iCaRL code computes them). An input's score for
class c is minus the squared distance of its features to c's mean, and a score below every
other (:data:`NO_MEAN_SCORE` or lower) for a class without stored examples. Being one
score per class, the NCM output goes through clbench's evaluation like logits: class-IL
takes the nearest mean among every class seen so far, task-IL the nearest among the
example's own task's classes (the task-IL mask restricts the candidate means), from the
same pass.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from clbench.data_path import strategy_autocast
from clbench.training.modes import evaluation_mode
from clbench.training.step_template import StepTemplate
from clbench.training.tensor_buffer import StreamReservoir, TensorStore

NO_MEAN_SCORE = -1e4
"""Score of a class with no stored example: below any -||a - b||² of unit vectors (>= -4)."""

FEATURE_CHUNK = 256
"""Examples per forward when computing class means."""


@torch.no_grad()
def features_of(strategy: Any, x: torch.Tensor, normalise: bool = True) -> torch.Tensor:
    """fp32 features of ``x`` under the strategy's precision, model in its current mode; L2-normalised by default."""
    parts = []
    for start in range(0, x.shape[0], FEATURE_CHUNK):
        with strategy_autocast(strategy):
            parts.append(strategy.model.features(x[start : start + FEATURE_CHUNK]).float())
    features = torch.cat(parts).flatten(1)
    return F.normalize(features, dim=1) if normalise else features


@torch.no_grad()
def class_means(
    strategy: Any, x: torch.Tensor, y: torch.Tensor, n_classes: int, normalise: bool = True
) -> torch.Tensor:
    """(n_classes, D) class means of ``x``'s features in evaluation mode; NaN rows for absent classes.

    ``normalise``: the normalised mean of normalised features (iCaRL's paper), else the
    plain mean of raw features.
    """
    model = strategy.model
    with evaluation_mode(model):
        features = features_of(strategy, x.to(strategy.device), normalise)
    y = y.to(features.device)
    means = torch.full((n_classes, features.shape[1]), float("nan"), device=features.device)
    for c in y.unique().tolist():
        mean = features[y == c].mean(0)
        means[c] = F.normalize(mean, dim=0) if normalise else mean
    return means


def ncm_scores(features: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """(N, C) scores: -||f - mu_c||² per class; where mu_c is undefined (NaN), a score below all others.

    That score is :data:`NO_MEAN_SCORE`, or lower when raw features lie further apart.
    """
    distances = torch.cdist(features, torch.nan_to_num(means)) ** 2
    floor = (-distances.amax() - 1.0).clamp(max=NO_MEAN_SCORE) if distances.numel() else NO_MEAN_SCORE
    return torch.where(torch.isnan(means[:, 0]).unsqueeze(0), floor, -distances)  # on the device: no sync


class NearestMeanClassifier:
    """Class means of a memory, computed on first use after :meth:`invalidate` (each training step)."""

    def __init__(self, n_classes: int, normalise: bool = True) -> None:
        """A classifier over ``n_classes`` classes (``normalise``: see :func:`class_means`)."""
        self.n_classes = n_classes
        self.normalise = normalise
        self.means: torch.Tensor | None = None

    def invalidate(self) -> None:
        """Forget the class means (the network or the memory changed)."""
        self.means = None

    def scores(self, strategy: Any, memory_x: torch.Tensor, memory_y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(N, C) NCM scores of ``x`` against the means of ``(memory_x, memory_y)``."""
        if memory_y.numel() == 0:
            return torch.full((x.shape[0], self.n_classes), NO_MEAN_SCORE, device=x.device)
        if self.means is None:
            self.means = class_means(strategy, memory_x, memory_y, self.n_classes, self.normalise)
        return ncm_scores(features_of(strategy, x, self.normalise), self.means)


class NearestMeanReplay(StepTemplate):
    """A step whose memory batch joins the stream batch and whose evaluation is NCM over the memory.

    The shared part of iCaRL and SCR: each step appends ``memory_batch_size`` stored examples
    to the incoming ones; a :class:`StreamReservoir` memory is offered the incoming part after
    the step (once per batch); evaluation returns :class:`NearestMeanClassifier` scores over
    what the memory holds, whose means are recomputed after every step.
    """

    def __init__(
        self, *, memory: TensorStore, memory_batch_size: int, ncm_normalise: bool = True, **kwargs: Any
    ) -> None:
        """Replay ``memory_batch_size`` examples of ``memory`` a step (``ncm_normalise``: see :func:`class_means`)."""
        super().__init__(**kwargs)
        self.memory = memory
        self.memory_batch_size = memory_batch_size
        self.nearest_mean = NearestMeanClassifier(int(self.model.classifier.out_features), ncm_normalise)
        self._n_new = 0

    def prepare_batch(self) -> None:
        """Join a memory mini-batch to the stream batch."""
        self._n_new = int(self.mb_y.shape[0])
        if len(self.memory) > 0:
            x, y, _ = self.memory.draw(self, self.memory_batch_size, augment=True)
            self.append_to_batch(x, y.to(self.mb_y.device))
        return None

    def forward(self) -> Any:
        """The network's output while training; nearest-class-mean scores in evaluation."""
        if self.is_training:
            return super().forward()
        held = len(self.memory)
        return self.nearest_mean.scores(self, self.memory.x[:held], self.memory.y[:held], self.mb_x)

    def after_step(self) -> None:
        """Offer the incoming part of the batch to a stream reservoir; the class means are stale."""
        self.nearest_mean.invalidate()
        if isinstance(self.memory, StreamReservoir) and getattr(self, "batch_repetition", 0) == 0:
            self.memory.offer(self.unaugmented_inputs(self.mb_x[: self._n_new]), self.mb_y[: self._n_new])
