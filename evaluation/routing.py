"""Thompson-sampling routing weights with an exploration floor.

``p_i`` = probability that model ``i`` has the highest CTR when each CTR is drawn from
its posterior ``Beta(1 + clicks, 1 + impressions - clicks)`` (uniform prior, cumulative
matured labels), estimated from ``draws`` joint draws of a fresh
``numpy.random.default_rng(seed)``: the weights are a function of the counts and the
seed only, so they do not depend on how often they are computed. The Monte-Carlo
standard error of each ``p_i`` is ``sqrt(p_i (1 - p_i) / draws)`` <= 0.0036 at 20,000
draws.

Floor: with ``K`` models and floor ``f``, ``w_i = f + (1 - K f) p_i`` (each ``w_i >= f``,
``sum w_i = 1``, order of the ``p_i`` kept); when ``K f >= 1`` every weight is ``1/K``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluation.config import RoutingConfig
from events.contracts import SCHEMA_VERSION

#: The ``method`` field of routing records.
METHOD = "thompson_monte_carlo"

# Rows drawn at a time: bounds memory for many models, same numbers as one block
# because a Generator's beta stream does not depend on how it is chunked by rows.
_CHUNK = 10_000


def thompson_probabilities(counts: dict[str, tuple[int, int]], draws: int,
                           seed: int) -> dict[str, float]:
    """``{model_id: P(best CTR)}`` from ``{model_id: (clicks, impressions)}``.

    >>> p = thompson_probabilities({"a": (5, 100), "b": (50, 100)}, 10_000, 0)
    >>> p["b"] > 0.999, round(sum(p.values()), 12)
    (True, 1.0)
    """
    models = sorted(counts)
    if not models:
        return {}
    alpha = np.array([1.0 + counts[m][0] for m in models])
    beta = np.array([1.0 + counts[m][1] - counts[m][0] for m in models])
    rng = np.random.default_rng(seed)
    wins = np.zeros(len(models), dtype=np.int64)
    left = draws
    while left > 0:
        rows = min(_CHUNK, left)
        sample = rng.beta(alpha, beta, size=(rows, len(models)))
        wins += np.bincount(np.argmax(sample, axis=1), minlength=len(models))
        left -= rows
    return {m: int(w) / draws for m, w in zip(models, wins, strict=True)}


def apply_floor(probabilities: dict[str, float], floor: float) -> dict[str, float]:
    """Weights ``f + (1 - K f) p_i``; uniform when ``K f >= 1``.

    >>> apply_floor({"a": 0.0, "b": 1.0}, 0.1)
    {'a': 0.1, 'b': 0.9}
    >>> apply_floor({"a": 0.0, "b": 1.0}, 0.6)
    {'a': 0.5, 'b': 0.5}
    """
    k = len(probabilities)
    if k == 0:
        return {}
    if k * floor >= 1.0:
        return {m: 1.0 / k for m in probabilities}
    return {m: floor + (1.0 - k * floor) * p for m, p in probabilities.items()}


def routing_record(counts: dict[str, tuple[int, int]], config: RoutingConfig,
                   label_watermark_ms: int) -> dict[str, Any]:
    """The ``model-routing`` record for the served models' ``(clicks, impressions)``.

    >>> rec = routing_record({"a": (1, 10)}, RoutingConfig(), 5)
    >>> rec["weights"], rec["method"], rec["draws"]
    ({'a': 1.0}, 'thompson_monte_carlo', 20000)
    """
    probabilities = thompson_probabilities(counts, config.draws, config.seed)
    return {
        "weights": apply_floor(probabilities, config.floor),
        "probabilities": probabilities,
        "models": {m: {"clicks": c, "impressions": n} for m, (c, n) in sorted(counts.items())},
        "label_watermark_ms": label_watermark_ms,
        "method": METHOD,
        "draws": config.draws,
        "seed": config.seed,
        "floor": config.floor,
        "schema_version": SCHEMA_VERSION,
    }
