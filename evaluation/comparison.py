"""Pairwise model comparisons: fixed-horizon z-test and an always-valid mSPRT p-value.

For models ``a < b`` (by id) over their cumulative matured labels: ``ctr_diff = ctr_b -
ctr_a``, the pooled two-proportion z-test, and the mixture SPRT of
:func:`~evaluation.stats.msprt_log_lambda`. The always-valid p-value is the running
minimum ``p_n = min(1, p_{n-1}, 1 / Lambda_n)`` taken after *every* matured label of
either model (in label order), not only when a record is made, so it is the same
however often the caller advances, and stays valid however often one peeks.
"""

from __future__ import annotations

import math
from typing import Any

from evaluation.config import ComparisonConfig
from evaluation.metrics import ModelMetrics
from evaluation.stats import msprt_log_lambda, two_proportion_z_test
from events.contracts import SCHEMA_VERSION


def pair_key(a: str, b: str) -> str:
    """The record key of a pair: ``"a|b"`` with ``a < b``.

    >>> pair_key("m2", "m1")
    'm1|m2'
    """
    return f"{min(a, b)}|{max(a, b)}"


class PairState:
    """Sequential state of one pair: the running always-valid p-value.

    >>> PairState().p_value
    1.0
    """

    __slots__ = ("log_lambda", "p_value", "updates")

    def __init__(self) -> None:
        self.log_lambda = 0.0
        self.p_value = 1.0
        self.updates = 0

    def update(self, a: ModelMetrics, b: ModelMetrics, tau2: float) -> None:
        """Take one more look at the pair (after a label of either model).

        >>> from evaluation.config import MetricsConfig
        >>> a, b = ModelMetrics("a", MetricsConfig()), ModelMetrics("b", MetricsConfig())
        >>> for i in range(400):
        ...     a.add(i, 0.1, int(i % 20 == 0), 0.1, served=True)
        ...     b.add(i, 0.1, int(i % 4 == 0), 0.1, served=True)
        >>> st = PairState(); st.update(a, b, 1e-4); st.p_value < 0.05
        True
        """
        self.updates += 1
        self.log_lambda = msprt_log_lambda(a.clicks, a.impressions, b.clicks, b.impressions,
                                           tau2)
        # exp(-log_lambda) <= 1 is only needed when log_lambda > 0 (no overflow)
        if self.log_lambda > 0.0:
            self.p_value = min(self.p_value, math.exp(-self.log_lambda))


def comparison_record(a: ModelMetrics, b: ModelMetrics, state: PairState,
                      config: ComparisonConfig, label_watermark_ms: int) -> dict[str, Any]:
    """The ``model-comparisons`` record of models ``a < b``.

    >>> from evaluation.config import MetricsConfig
    >>> a, b = ModelMetrics("a", MetricsConfig()), ModelMetrics("b", MetricsConfig())
    >>> a.add(0, 0.5, 0, 0.7, served=True); b.add(0, 0.5, 1, 0.7, served=True)
    >>> rec = comparison_record(a, b, PairState(), ComparisonConfig(), 10)
    >>> rec["ctr_diff"], rec["msprt_p_value"]
    (1.0, 1.0)
    """
    z, p_value = two_proportion_z_test(a.clicks, a.impressions, b.clicks, b.impressions)
    ctr_a, ctr_b = a.clicks / a.impressions, b.clicks / b.impressions
    return {
        "model_a": a.model_id,
        "model_b": b.model_id,
        "window": "all",
        "impressions_a": a.impressions,
        "clicks_a": a.clicks,
        "ctr_a": ctr_a,
        "impressions_b": b.impressions,
        "clicks_b": b.clicks,
        "ctr_b": ctr_b,
        "ctr_diff": ctr_b - ctr_a,
        "z": z,
        "p_value": p_value,
        "significant": p_value < config.alpha,
        "msprt_log_lambda": state.log_lambda,
        "msprt_p_value": state.p_value,
        "msprt_significant": state.p_value < config.alpha,
        "msprt_tau2": config.msprt_tau2,
        "msprt_looks": state.updates,
        "alpha": config.alpha,
        "shadow_a": a.shadow,
        "shadow_b": b.shadow,
        "label_watermark_ms": label_watermark_ms,
        "schema_version": SCHEMA_VERSION,
    }
