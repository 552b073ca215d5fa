"""`lab5_utils.evaluate.stats` against hand-computed intervals and exact McNemar p-values."""

import math

import numpy as np
import pytest

from lab5_utils.evaluate.stats import accuracy_interval, mcnemar_exact, verdict, wilson_interval


def _wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(8, 10), (0, 20), (20, 20), (50, 100), (12625, 25250)])
def test_wilson_interval_matches_the_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(_wilson_by_hand(k, n), abs=1e-9)


def test_wilson_interval_known_values_and_widths():
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)
    # the issue's figures: about +-9 points on the demo's 100 images, +-0.6 on Food-101's test set
    low, high = accuracy_interval(0.5, 100)
    assert 9 < 100 * (high - low) / 2 < 10
    low, high = accuracy_interval(0.5, 25250)
    assert 0.6 < 100 * (high - low) / 2 < 0.65
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_mcnemar_exact_matches_the_binomial_sums():
    # 1 image only A gets right, 9 only B: p = 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11 / 1024
    a = np.array([1] * 1 + [0] * 9 + [1] * 30 + [0] * 5, bool)
    b = np.array([0] * 1 + [1] * 9 + [1] * 30 + [0] * 5, bool)
    test = mcnemar_exact(a, b)
    assert (test.only_a, test.only_b, test.images) == (1, 9, 45)
    assert test.p_value == pytest.approx(22 / 1024)
    assert test.difference == pytest.approx(8 / 45)
    assert test.significant and verdict(test) == "significant at 5 %"
    # 3 against 5: p = 2 * (1 + 8 + 28 + 56) / 256, far from significant
    a = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1], bool)
    b = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1], bool)
    test = mcnemar_exact(a, b)
    assert test.p_value == pytest.approx(186 / 256)
    assert verdict(test) == "within noise"
    # symmetric in the direction of the difference
    assert mcnemar_exact(b, a).p_value == pytest.approx(test.p_value)


def test_mcnemar_with_no_discordant_pairs_is_p_one_and_shapes_are_checked():
    same = np.array([1, 0, 1], bool)
    assert mcnemar_exact(same, same).p_value == 1.0
    with pytest.raises(ValueError, match="correct_a and correct_b"):
        mcnemar_exact(same, same[:2])
