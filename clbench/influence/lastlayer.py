"""MetaSP's pseudo-update influence restricted to the classifier layer, in closed form.

For logits ``z = W h + b`` and cross-entropy, an example's gradient with respect to the
classifier is ``((p - y) h^T, p - y)``: it needs only the features ``h`` and the
probabilities ``p`` of the forward pass that training does anyway. A pseudo step that
moves only the classifier leaves every feature as it is, so the measurement sets'
gradients after the step need only their features too:

    r_i = p_i - y_i                     W^ = W - lr mean_i r_i h_i^T,  b^ = b - lr mean_i r_i
    lam_V = (mean_v r^_v h_v^T, mean_v r^_v)     with r^_v from (W^, b^)
    I_i = -(lr/|B|) (r_i^T lam_W h_i + r_i^T lam_b)      (positive = harmful)

This equals :func:`clbench.influence.meta.meta_influence` with one pseudo step when only
the classifier's parameters are trainable (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clbench.errors import ConfigError
from clbench.influence.functional import InfluenceResult, batchnorm_stats_frozen

Features = tuple[torch.Tensor, torch.Tensor]
"""(h, y): penultimate features (N, D) and labels (N,)."""


def _residual(weight: torch.Tensor, bias: torch.Tensor | None, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = h @ weight.T + (bias if bias is not None else 0.0)
    return torch.softmax(logits, dim=1) - F.one_hot(y, weight.shape[0]).to(h.dtype)


def last_layer_meta_influence(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    train: Features,
    measurements: Sequence[Features],
    lr: float,
) -> InfluenceResult:
    """Influence of each training example on each measurement set, classifier only.

    Args:
        weight: Classifier weight (C, D).
        bias: Classifier bias (C,) or None.
        train: Features and labels of the training batch B.
        measurements: Features and labels of each measurement set.
        lr: Pseudo-step size.

    Returns:
        Influence vectors (|B|,) per measurement set and each set's mean loss after the step.
    """
    h, y = train
    weight, h = weight.detach().to(h.dtype), h.detach()
    bias = None if bias is None else bias.detach().to(h.dtype)
    n = h.shape[0]
    residual = _residual(weight, bias, h, y)
    weight_hat = weight - lr * residual.T @ h / n
    bias_hat = None if bias is None else bias - lr * residual.mean(0)
    influences, losses = [], []
    for h_v, y_v in measurements:
        h_v = h_v.detach().to(h.dtype)
        logits_v = h_v @ weight_hat.T + (bias_hat if bias_hat is not None else 0.0)
        residual_v = torch.softmax(logits_v, dim=1) - F.one_hot(y_v, weight.shape[0]).to(h.dtype)
        lam_weight = residual_v.T @ h_v / h_v.shape[0]
        directional = ((residual @ lam_weight) * h).sum(1)
        if bias_hat is not None:
            directional = directional + residual @ residual_v.mean(0)
        influences.append(-(lr / n) * directional)
        losses.append(float(F.cross_entropy(logits_v, y_v)))
    return InfluenceResult(influence=tuple(influences), measurement_loss=tuple(losses))


def classifier_of(model: nn.Module) -> nn.Linear:
    """The model's final linear layer (``model.classifier``).

    Raises:
        ConfigError: The model has no ``features`` method and ``classifier`` linear layer.
    """
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, nn.Linear) or not callable(getattr(model, "features", None)):
        raise ConfigError(
            f"influence meta_lastlayer needs a backbone with features() and a linear classifier, "
            f"got {type(model).__name__}; valid choices: resnet18, mlp"
        )
    return classifier


def features_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features, BatchNorm normalising by the batch without moving its statistics."""
    dtype = classifier_of(model).weight.dtype  # checks the model first
    features: Any = getattr(model, "features")  # noqa: B009
    with torch.no_grad(), batchnorm_stats_frozen(model):
        out: torch.Tensor = features(x)
    return out.to(dtype)


def classifier_influence(
    model: nn.Module, train: Features, measurements: Sequence[tuple[torch.Tensor, torch.Tensor]], lr: float
) -> InfluenceResult:
    """:func:`last_layer_meta_influence` of ``model``'s classifier.

    Args:
        model: A backbone with ``features`` and ``classifier`` (not modified).
        train: Features and labels of the training batch (e.g. kept from its training forward).
        measurements: Inputs and labels of each measurement set; their features are computed here.
        lr: Pseudo-step size.
    """
    classifier = classifier_of(model)
    measured = [(features_of(model, x), y) for x, y in measurements]
    return last_layer_meta_influence(classifier.weight, classifier.bias, train, measured, lr)
