"""Champion/challenger promotion: a paired test on per-example log-loss differences.

Over the last ``k`` examples that both the frozen champion and the live challenger
scored (each before the challenger learned it), ``d_i = loss_champion_i -
loss_challenger_i`` (positive: the challenger did better). With mean ``d`` and sample
standard deviation ``s``: ``t = (d - margin) / (s / sqrt k)``, one-sided p-value
``P(Z > t)`` (normal approximation, ``k >= 30``); promote when ``p < alpha``. A zero
``s`` gives p = 0 when ``d > margin`` and 1 otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from evaluation.stats import mean_and_variance, normal_upper_tail


@dataclass(frozen=True, slots=True)
class PairedTest:
    """Outcome of the paired promotion test.

    >>> PairedTest(40, 0.1, 0.01, 0.0, True).promote
    True
    """

    n: int
    mean_improvement: float
    p_value: float
    margin: float
    promote: bool


def paired_test(champion_losses: list[float], challenger_losses: list[float],
                margin: float, alpha: float) -> PairedTest:
    """Is the challenger's log-loss better than the champion's by more than ``margin``?

    >>> champ = [0.7 + 0.01 * (i % 3) for i in range(40)]
    >>> better = [x - 0.2 for x in champ]
    >>> paired_test(champ, better, 0.05, 0.05).promote
    True
    >>> paired_test(champ, champ, 0.0, 0.05).promote
    False
    """
    if len(champion_losses) != len(challenger_losses) or len(champion_losses) < 2:
        raise ValueError("paired_test needs two equally long lists of >= 2 losses")
    diffs = [c - x for c, x in zip(champion_losses, challenger_losses, strict=True)]
    mean, var = mean_and_variance(diffs)
    se = math.sqrt(var / len(diffs))
    if se == 0.0:
        p_value = 0.0 if mean > margin else 1.0
    else:
        p_value = normal_upper_tail((mean - margin) / se)
    return PairedTest(len(diffs), mean, p_value, margin, p_value < alpha)
