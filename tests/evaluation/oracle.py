"""Independent plain-Python/numpy recomputations used by the evaluation tests.

Nothing here imports the package under test: each statistic is written again from
its textbook definition, in a different way where possible (pairwise AUC, explicit
window membership, numpy log-loss...).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

Z = 1.959963984540054
T0 = 1_700_000_000_000


def label(pid: str, model: str, score: float, y: int, ts: int, *, served: bool | None = None,
          version: int = 1, final: bool = True) -> dict[str, Any]:
    """A ``labels`` record as freshet publishes it."""
    rec: dict[str, Any] = {
        "prediction_id": pid, "request_id": f"r-{pid}", "user_id": "u", "item_id": "i",
        "model_id": model, "score": score, "label": y,
        "kind": "positive" if y else "negative", "label_version": version, "final": final,
        "prediction_ts": ts, "label_ts": ts + 10, "delay_ms": 10 if y else None,
        "window_ms": 1_000, "schema_version": 1,
    }
    if served is not None:
        rec["served"] = served
    return rec


def example(rec: dict[str, Any], logged: dict[str, Any] | None = None,
            user: dict[str, Any] | None = None, item: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """A ``training-examples`` record for the label ``rec``."""
    out = dict(rec)
    if logged is not None:
        out["features"] = logged
    out["freshet_features"] = {
        "user": None if user is None else {"as_of_ts": rec["prediction_ts"], "features": user,
                                           "source": {}},
        "item": None if item is None else {"as_of_ts": rec["prediction_ts"], "features": item,
                                           "source": {}},
    }
    return out


def pairwise_auc(scores: list[float], labels: list[int]) -> float | None:
    """AUC by comparing every (positive, negative) pair; ties count half."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = Fraction(0)
    for p in pos:
        for n in neg:
            wins += 1 if p > n else Fraction(1, 2) if p == n else 0
    return float(wins / (len(pos) * len(neg)))


def log_loss(scores: list[float], labels: list[int]) -> float:
    """Mean log-loss with numpy, scores clipped to [1e-15, 1 - 1e-15]."""
    p = np.clip(np.asarray(scores, dtype=float), 1e-15, 1 - 1e-15)
    y = np.asarray(labels, dtype=float)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def wilson(clicks: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson interval, written as (p + z²/2n ± z sqrt(p q / n + z²/4n²)) / (1 + z²/n)."""
    p = clicks / n
    root = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, (p + z * z / (2 * n) - root) / (1 + z * z / n)),
            min(1.0, (p + z * z / (2 * n) + root) / (1 + z * z / n)))


def stats(rows: list[tuple[float, int]]) -> dict[str, Any]:
    """Every statistic of a model-metrics record from (score, label) rows."""
    scores = [s for s, _ in rows]
    labels = [y for _, y in rows]
    n, c = len(rows), sum(labels)
    ctr = c / n
    low, high = wilson(c, n)
    mean_score = float(np.mean(scores))
    return {"impressions": n, "clicks": c, "ctr": ctr, "ctr_low": low, "ctr_high": high,
            "mean_score": mean_score, "calibration": mean_score / ctr if c else None,
            "log_loss": log_loss(scores, labels), "auc": pairwise_auc(scores, labels)}


def brute_metrics(labels: list[dict[str, Any]], t: int, tile_ms: int,
                  windows: tuple[tuple[str, int], ...]) -> dict[tuple[str, str], dict[str, Any]]:
    """{(model_id, window): statistics} of matured, final, de-duplicated labels."""
    seen: set[tuple[str, int]] = set()
    by_model: dict[str, list[dict[str, Any]]] = {}
    for rec in labels:
        key = (rec["prediction_id"], rec["label_version"])
        if not rec["final"] or rec["prediction_ts"] >= t or key in seen:
            continue
        seen.add(key)
        by_model.setdefault(rec["model_id"], []).append(rec)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for model, recs in by_model.items():
        out[(model, "all")] = stats([(r["score"], r["label"]) for r in recs])
        newest = max(r["prediction_ts"] for r in recs)
        end = (newest // tile_ms + 1) * tile_ms
        for name, width in windows:
            rows = [(r["score"], r["label"]) for r in recs
                    if end - width <= r["prediction_ts"] < end]
            out[(model, name)] = {**stats(rows), "window_start_ms": end - width,
                                  "window_end_ms": end}
    return out


def beta_logpdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """log Beta(a, b) density on (0, 1)."""
    return ((a - 1) * np.log(x) + (b - 1) * np.log1p(-x)
            + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))


def thompson_by_integration(counts: dict[str, tuple[int, int]], points: int = 200_001
                            ) -> dict[str, float]:
    """P(model i has the highest CTR) = ∫ f_i(x) Π_{j≠i} F_j(x) dx on a fine grid."""
    x = np.linspace(0.0, 1.0, points)[1:-1]
    dx = x[1] - x[0]
    pdfs, cdfs = {}, {}
    for m, (c, n) in counts.items():
        pdf = np.exp(beta_logpdf(x, 1.0 + c, 1.0 + n - c))
        pdf /= pdf.sum() * dx  # renormalise away the grid's quadrature error
        pdfs[m] = pdf
        cdfs[m] = np.cumsum(pdf) * dx - 0.5 * pdf * dx  # midpoint cumulative integral
    out = {}
    for m in counts:
        integrand = pdfs[m].copy()
        for o in counts:
            if o != m:
                integrand *= cdfs[o]
        out[m] = float(integrand.sum() * dx)
    return out
