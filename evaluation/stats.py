"""Closed-form statistics used by the evaluator: each a small pure function.

Conventions: ``z`` is a two-sided normal quantile (1.959963984540054 for 95 %); a
statistic that is undefined on its input (no data, a single class) is ``None``, never
NaN, so records stay valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

#: Two-sided 95 % standard-normal quantile.
Z95 = 1.959963984540054

#: Scores are clipped to [EPS, 1 - EPS] before taking logs (log-loss stays finite).
LOG_LOSS_EPS = 1e-15


def log_loss_term(score: float, label: int) -> float:
    """Log-loss of one prediction, score clipped to ``[1e-15, 1 - 1e-15]``.

    >>> round(log_loss_term(0.8, 1), 6), round(log_loss_term(0.8, 0), 6)
    (0.223144, 1.609438)
    >>> log_loss_term(1.0, 0) < 35
    True
    """
    p = min(max(score, LOG_LOSS_EPS), 1.0 - LOG_LOSS_EPS)
    return -math.log(p) if label else -math.log(1.0 - p)


def wilson_interval(clicks: int, impressions: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``clicks / impressions`` (impressions > 0).

    ``center = (p + z²/2n) / (1 + z²/n)``,
    ``half = z / (1 + z²/n) * sqrt(p(1-p)/n + z²/4n²)``; clamped to [0, 1].

    >>> low, high = wilson_interval(10, 100)
    >>> round(low, 4), round(high, 4)
    (0.0552, 0.1744)
    >>> wilson_interval(0, 5)[0]
    0.0
    """
    if impressions <= 0:
        raise ValueError(f"impressions must be > 0, got {impressions}")
    n = float(impressions)
    p = clicks / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    # at p = 0 (p = 1) the bound is exactly 0 (1): say so instead of a rounding residue
    low = 0.0 if clicks == 0 else max(0.0, center - half)
    high = 1.0 if clicks == impressions else min(1.0, center + half)
    return low, high


def two_proportion_z_test(
    clicks_a: int, impressions_a: int, clicks_b: int, impressions_b: int
) -> tuple[float, float]:
    """Pooled two-proportion z-test of ``ctr_b - ctr_a``: ``(z, two-sided p-value)``.

    ``p = (c_a + c_b) / (n_a + n_b)``, ``se = sqrt(p(1-p)(1/n_a + 1/n_b))``,
    ``z = (ctr_b - ctr_a) / se``, p-value ``erfc(|z| / sqrt 2)``. When ``se`` is 0 the
    two rates are equal (both 0 or both 1): ``(0.0, 1.0)``.

    >>> z, p = two_proportion_z_test(50, 1000, 80, 1000)
    >>> round(z, 3), round(p, 4)
    (2.721, 0.0065)
    >>> two_proportion_z_test(0, 10, 0, 20)
    (0.0, 1.0)
    """
    if impressions_a <= 0 or impressions_b <= 0:
        raise ValueError("both impressions must be > 0")
    pooled = (clicks_a + clicks_b) / (impressions_a + impressions_b)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / impressions_a + 1.0 / impressions_b))
    if se == 0.0:
        return 0.0, 1.0
    z = (clicks_b / impressions_b - clicks_a / impressions_a) / se
    return z, math.erfc(abs(z) / math.sqrt(2.0))


def msprt_log_lambda(
    clicks_a: int, impressions_a: int, clicks_b: int, impressions_b: int, tau2: float
) -> float:
    """Log mixture likelihood ratio of the mSPRT for ``ctr_b - ctr_a`` (normal prior).

    Gaussian approximation (Johari, Pekelis, Walsh, "Always valid inference"): with
    ``theta = ctr_b - ctr_a``, ``V = p_a(1-p_a)/n_a + p_b(1-p_b)/n_b`` and a
    ``N(0, tau2)`` mixing prior on the difference under the alternative,
    ``Lambda = sqrt(V / (V + tau2)) * exp(theta² tau2 / (2 V (V + tau2)))``.
    ``V = 0`` (every rate 0 or 1) carries no information under this approximation: 0.

    >>> round(msprt_log_lambda(50, 1000, 80, 1000, 1e-4), 4)
    1.3797
    >>> msprt_log_lambda(0, 10, 0, 10, 1e-4)
    0.0
    """
    if impressions_a <= 0 or impressions_b <= 0:
        raise ValueError("both impressions must be > 0")
    pa = clicks_a / impressions_a
    pb = clicks_b / impressions_b
    var = pa * (1.0 - pa) / impressions_a + pb * (1.0 - pb) / impressions_b
    if var <= 0.0:
        return 0.0
    theta = pb - pa
    return 0.5 * math.log(var / (var + tau2)) + theta * theta * tau2 / (
        2.0 * var * (var + tau2)
    )


def auc_from_counts(counts: dict[float, list[int]]) -> float | None:
    """Exact ROC AUC from ``{score: [negatives, positives]}``; ties count half.

    AUC = P(score of a positive > score of a negative) + 0.5 P(equal), computed in
    integers (twice the numerator) and divided once: exact for any float scores.
    None when either class is absent.

    >>> auc_from_counts({0.1: [1, 0], 0.4: [1, 1], 0.8: [0, 1]})
    0.875
    >>> auc_from_counts({0.3: [2, 0]}) is None
    True
    """
    return auc_from_rows((counts[s][0], counts[s][1]) for s in sorted(counts))


def auc_from_rows(rows: Iterable[tuple[int, int]]) -> float | None:
    """Exact ROC AUC from (negatives, positives) per distinct score, in ascending order.

    >>> auc_from_rows([(1, 0), (1, 1), (0, 1)])
    0.875
    """
    negatives = positives = 0
    twice = 0  # 2 * (pairs ranked right) + (tied pairs): an exact integer
    for neg, pos in rows:
        twice += pos * (2 * negatives + neg)
        negatives += neg
        positives += pos
    if negatives == 0 or positives == 0:
        return None
    return twice / (2 * negatives * positives)


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC estimate.

    ``se² = (A(1-A) + (n_p - 1)(Q1 - A²) + (n_n - 1)(Q2 - A²)) / (n_p n_n)`` with
    ``Q1 = A / (2 - A)`` and ``Q2 = 2A² / (1 + A)``.

    >>> round(auc_standard_error(0.8, 50, 50), 4)
    0.0445
    """
    a = auc
    q1 = a / (2.0 - a)
    q2 = 2.0 * a * a / (1.0 + a)
    var = (a * (1.0 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)) / (
        positives * negatives
    )
    return math.sqrt(max(var, 0.0))


def mean_and_variance(values: list[float]) -> tuple[float, float]:
    """Mean and unbiased sample variance (0 for a single value) of a non-empty list.

    >>> mean_and_variance([1.0, 2.0, 3.0])
    (2.0, 1.0)
    """
    if not values:
        raise ValueError("values must not be empty")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.fsum((v - mean) ** 2 for v in values) / (n - 1)


def normal_upper_tail(x: float) -> float:
    """``P(Z > x)`` for a standard normal ``Z``.

    >>> round(normal_upper_tail(1.6448536269514722), 6)
    0.05
    """
    return 0.5 * math.erfc(x / math.sqrt(2.0))
