import math

import numpy as np
import pytest

from clbench import metrics

# acc[t][k]: accuracy on task k after training task t (upper triangle = not yet seen)
MATRIX = [
    [90.0, 10.0, 0.0],
    [60.0, 80.0, 5.0],
    [40.0, 50.0, 70.0],
]


def test_a1_is_mean_of_diagonal():
    assert metrics.a1(MATRIX) == pytest.approx((90 + 80 + 70) / 3)


def test_a_final_is_mean_of_last_row():
    assert metrics.a_final(MATRIX) == pytest.approx((40 + 50 + 70) / 3)


def test_a_mean_averages_seen_tasks_only():
    expected = (90 + (60 + 80) / 2 + (40 + 50 + 70) / 3) / 3
    assert metrics.a_mean(MATRIX) == pytest.approx(expected)


def test_bwt_compares_final_with_just_learned():
    expected = ((40 - 90) + (50 - 80)) / 2
    assert metrics.bwt(MATRIX) == pytest.approx(expected)


def test_single_task_has_no_bwt():
    assert metrics.bwt([[75.0]]) is None
    assert metrics.summarize([[75.0]]) == {"A1": 75.0, "Ainf": 75.0, "Am": 75.0, "BWT": None}


def test_summarize_matches_individual_functions():
    values = metrics.summarize(np.asarray(MATRIX))
    assert values["A1"] == pytest.approx(80.0)
    assert values["Ainf"] == pytest.approx(160 / 3)
    assert values["BWT"] == pytest.approx(-40.0)
    assert math.isclose(values["Am"] or 0.0, metrics.a_mean(MATRIX))


def test_a_run_that_evaluated_the_seen_tasks_only_has_the_same_metrics():
    seen_only = [[row[k] if k <= t else None for k in range(len(row))] for t, row in enumerate(MATRIX)]
    assert seen_only[0] == [90.0, None, None]
    assert metrics.summarize(seen_only) == metrics.summarize(MATRIX)


def test_final_only_defines_just_a_final():
    assert metrics.summarize_final_only([80.0, 90.0]) == {"A1": None, "Ainf": 85.0, "Am": None, "BWT": None}


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [[1.0], [2.0]]])
def test_non_square_matrices_are_rejected(bad):
    with pytest.raises(ValueError, match="square"):
        metrics.summarize(bad)
