"""Statistics of the verdict: confidence intervals of accuracies and paired tests of two models.

Built on scipy: Wilson's interval is `binomtest(...).proportion_ci(method="wilson")`, and the exact
McNemar test is the two-sided binomial test of the discordant pairs against p = 1/2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

LEVEL = 0.95
ALPHA = 0.05


def wilson_interval(correct: int, total: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion `correct / total` (NaNs when `total` is 0)."""
    if total <= 0:
        return math.nan, math.nan
    ci = binomtest(int(correct), int(total)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy_interval(accuracy: float, total: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson interval of an accuracy measured on `total` images (e.g. a logged val_accuracy)."""
    if total <= 0 or not math.isfinite(accuracy):
        return math.nan, math.nan
    return wilson_interval(round(accuracy * total), total, level)


@dataclass
class PairedTest:
    """Exact McNemar test of two models scored on the same images."""

    only_a: int  # images model A gets right and model B wrong
    only_b: int  # images model B gets right and model A wrong
    images: int
    p_value: float

    @property
    def difference(self) -> float:
        """Accuracy of B minus accuracy of A (a fraction)."""
        return (self.only_b - self.only_a) / self.images if self.images else math.nan

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> PairedTest:
    """McNemar's exact test on per-image right/wrong pairs of models A and B."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"correct_a and correct_b: expected two equal 1-D arrays, got shapes "
                         f"{a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return PairedTest(only_a, only_b, int(a.size), min(p, 1.0))


def verdict(test: PairedTest) -> str:
    """"significant at 5 %" or "within noise", as the paired test says."""
    return f"significant at {ALPHA:.0%}".replace("%", " %") if test.significant else "within noise"

