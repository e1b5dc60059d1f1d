import numpy as np
import pytest
import torch

from clbench.influence.fusion import example_weights, fuse, mgda_weight, normalise_influence


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_mgda_interior_solution():
    # I_S = e1, I_P = e2: ((I_P - I_S) . I_P) / ||I_P - I_S||^2 = 1 / 2
    assert mgda_weight(t(1, 0), t(0, 1)) == pytest.approx(0.5)
    # I_S = (2, 0), I_P = (0, 1): (1) / 5
    assert mgda_weight(t(2, 0), t(0, 1)) == pytest.approx(0.2)


def test_mgda_clips_high_and_low():
    # plasticity longer than stability along the same direction -> gamma = 2 -> clipped
    assert mgda_weight(t(1, 0), t(2, 0)) == pytest.approx(0.999)
    assert mgda_weight(t(1, 0), t(2, 0), low=0.0, high=1.0) == pytest.approx(1.0)
    # stability longer -> gamma = -1 -> clipped
    assert mgda_weight(t(2, 0), t(1, 0)) == pytest.approx(0.001)
    assert mgda_weight(t(2, 0), t(1, 0), low=0.0, high=1.0) == pytest.approx(0.0)


def test_mgda_equal_vectors_are_safe():
    assert mgda_weight(t(1, 2, 3), t(1, 2, 3)) == 0.5
    assert mgda_weight(t(0, 0), t(0, 0)) == 0.5


def test_mgda_is_the_min_norm_point_on_the_segment():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = torch.from_numpy(rng.normal(size=7)), torch.from_numpy(rng.normal(size=7))
        gamma = mgda_weight(a, b, low=0.0, high=1.0)
        grid = np.linspace(0, 1, 2001)
        norms = [float(fuse(a, b, g).norm()) for g in grid]
        assert float(fuse(a, b, gamma).norm()) <= min(norms) + 1e-9


def test_fuse_is_the_convex_combination():
    torch.testing.assert_close(fuse(t(1, 0), t(0, 1), 0.25), t(0.25, 0.75))


def test_weights_favour_beneficial_examples_and_sum_to_one():
    weights = example_weights(t(-1.0, 0.0, 1.0))
    torch.testing.assert_close(weights, t(2 / 3, 1 / 3, 0.0))
    assert weights[0] > weights[1] > weights[2]  # negative influence = beneficial = heavier


def test_weights_with_zero_sum_fall_back_to_uniform():
    torch.testing.assert_close(example_weights(t(1.0, 1.0)), t(0.5, 0.5))


def test_normalise_scales_to_the_measurement_loss():
    scaled = normalise_influence(t(3.0, 4.0), measurement_loss=2.0)
    torch.testing.assert_close(scaled, t(1.2, 1.6))
    assert float(scaled.norm()) == pytest.approx(2.0)
    torch.testing.assert_close(normalise_influence(t(0.0, 0.0), 2.0), t(0.0, 0.0))
