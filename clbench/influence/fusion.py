"""Fusing stability and plasticity influence into example weights (MetaSP).

All functions are pure. Sign convention throughout: an influence is the change of a
validation loss when an example is up-weighted, so **negative = beneficial** and
**positive = harmful**.
"""

from __future__ import annotations

import torch


def normalise_influence(influence: torch.Tensor, measurement_loss: float, eps: float = 1e-12) -> torch.Tensor:
    """Scale an influence vector to norm ``measurement_loss``.

    The paper's code divides by ``||I|| / l_V``, so stability and plasticity enter the
    fusion on the same footing.
    """
    norm = influence.norm()
    if norm <= eps:
        return torch.zeros_like(influence)
    scaled: torch.Tensor = influence * (measurement_loss / norm)
    return scaled


def mgda_weight(stability: torch.Tensor, plasticity: torch.Tensor, low: float = 0.001, high: float = 0.999) -> float:
    """The two-objective MGDA min-norm weight of the stability objective.

    gamma* = argmin_{gamma in [0,1]} ||gamma I_S + (1 - gamma) I_P||^2
           = clip(((I_P - I_S)^T I_P) / ||I_P - I_S||^2, low, high).

    Equal vectors (zero denominator) make every gamma a minimiser; 0.5 is returned.
    """
    diff = plasticity - stability
    denominator = float(diff.dot(diff))
    if denominator <= 1e-20:
        return 0.5
    gamma = float(diff.dot(plasticity)) / denominator
    return min(max(gamma, low), high)


def fuse(stability: torch.Tensor, plasticity: torch.Tensor, gamma: float) -> torch.Tensor:
    """I* = gamma I_S + (1 - gamma) I_P."""
    return gamma * stability + (1.0 - gamma) * plasticity


def example_weights(fused_influence: torch.Tensor) -> torch.Tensor:
    """Loss weights from fused influence: w~ = 1 - I*, w = w~ / sum(w~).

    Beneficial (negative-influence) examples get more weight than harmful ones. A zero
    sum falls back to uniform weights.
    """
    raw = 1.0 - fused_influence
    total = raw.sum()
    if abs(float(total)) <= 1e-12:
        return torch.full_like(fused_influence, 1.0 / fused_influence.numel())
    return raw / total
