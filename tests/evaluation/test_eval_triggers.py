"""Retrain triggers fire exactly when their thresholds are crossed (oracles re-derive each rule)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river.drift import ADWIN

from evaluation import DriftConfig, EvalConfig, Evaluator, TriggerConfig
from evaluation.config import PerformanceMetric
from evaluation.triggers import HISTORY
from tests.evaluation.oracle import T0, Z, example, label, pairwise_auc

OFF = TriggerConfig(every_ms=None, every_labels=None, performance="off", drift=False)


def run(cfg: EvalConfig, labels: list[dict[str, Any]],
        examples: dict[str, dict[str, Any]] | None = None) -> list[tuple[int, dict[str, Any]]]:
    """Feed labels one by one (each with its example), maturing after each: fired triggers."""
    ev = Evaluator(cfg)
    fired: list[tuple[int, dict[str, Any]]] = []
    seen = 0
    for i, rec in enumerate(labels):
        ev.add_label(rec)
        if examples and rec["prediction_id"] in examples:
            ev.add_training_example(examples[rec["prediction_id"]])
        ev.mature(rec["prediction_ts"] + 1)
        last = ev.triggers[rec["model_id"]].last
        if last is not None and last["sequence"] > seen:
            seen = last["sequence"]
            fired.append((i, last))
    out = ev.outputs()
    trig = [o for o in out if o.topic == "retrain-triggers"]
    if fired:  # the published record is the latest trigger of the model, with its history
        model = fired[-1][1]["model_id"]
        rec = next(o.record for o in trig if o.key == model)
        assert {k: v for k, v in rec.items() if k != "history"} == {
            **fired[-1][1], "label_watermark_ms": ev.watermark_ms}
        mine = [f for _, f in fired if f["model_id"] == model][-HISTORY:]
        assert rec["history"] == [{k: f[k] for k in ("sequence", "prediction_ts", "reasons")}
                                  for f in mine]
    return fired


TIME_TABLE = [
    # (threshold ms, gaps between labels, indices where it fires)
    (100, [50, 50, 50, 50], [2, 4]),        # reached exactly (>=) at 100 ms
    (100, [99, 1, 99, 2], [2, 4]),
    (100, [101], [1]),
    (100, [30, 30, 30], []),
    (1, [0, 1, 0, 1], [2, 4]),
]


@pytest.mark.parametrize(("threshold", "gaps", "expected"), TIME_TABLE)
def test_time_reason(threshold: int, gaps: list[int], expected: list[int]) -> None:
    ts = [T0]
    for g in gaps:
        ts.append(ts[-1] + g)
    labels = [label(f"p{i}", "m", 0.5, 0, t) for i, t in enumerate(ts)]
    cfg = EvalConfig(triggers=replace(OFF, every_ms=threshold))
    fired = run(cfg, labels)
    assert [i for i, _ in fired] == expected
    anchor = ts[0]
    for i, rec in fired:
        (reason,) = rec["reasons"]
        assert reason == {"reason": "time", "elapsed_ms": ts[i] - anchor,
                          "threshold_ms": threshold}
        assert rec["since_ts"] == anchor
        anchor = ts[i]


@pytest.mark.parametrize(("every", "n", "expected"),
                         [(1, 3, [0, 1, 2]), (3, 10, [2, 5, 8]), (5, 4, []), (4, 8, [3, 7])])
def test_volume_reason_and_reset(every: int, n: int, expected: list[int]) -> None:
    labels = [label(f"p{i}", "m", 0.5, 0, T0 + i) for i in range(n)]
    fired = run(EvalConfig(triggers=replace(OFF, every_labels=every)), labels)
    assert [i for i, _ in fired] == expected
    assert all(rec["reasons"] == [{"reason": "volume", "labels": every, "threshold": every}]
               for _, rec in fired)


def perf_oracle(rows: list[tuple[float, int]], metric: str, ref: int, rec: int, every: int,
                margin: float) -> list[tuple[int, float]]:
    """Re-derive the performance rule with numpy: [(index fired, ci_low)]."""
    out: list[tuple[int, float]] = []
    start = 0
    for i in range(len(rows)):
        since = i - start + 1
        if since < ref + rec or (since - ref - rec) % every:
            continue
        reference = rows[start:start + ref]
        recent = rows[i - rec + 1:i + 1]
        if metric == "log_loss":
            def losses(part: list[tuple[float, int]]) -> np.ndarray:
                p = np.clip([s for s, _ in part], 1e-15, 1 - 1e-15)
                y = np.array([y for _, y in part], dtype=float)
                return -(y * np.log(p) + (1 - y) * np.log(1 - p))
            a, b = losses(reference), losses(recent)
            drop = b.mean() - a.mean()
            se = math.sqrt(a.var(ddof=1) / ref + b.var(ddof=1) / rec)
        else:
            def auc_se(part: list[tuple[float, int]]) -> tuple[float | None, float]:
                auc = pairwise_auc([s for s, _ in part], [y for _, y in part])
                if auc is None:
                    return None, 0.0
                npos = sum(y for _, y in part)
                nneg = len(part) - npos
                q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
                var = (auc * (1 - auc) + (npos - 1) * (q1 - auc**2)
                       + (nneg - 1) * (q2 - auc**2)) / (npos * nneg)
                return auc, math.sqrt(max(var, 0.0))
            (auc_a, se_a), (auc_b, se_b) = auc_se(reference), auc_se(recent)
            if auc_a is None or auc_b is None:
                continue
            drop = auc_a - auc_b
            se = math.sqrt(se_a**2 + se_b**2)
        ci_low = drop - Z * se
        if ci_low > margin:
            out.append((i, ci_low))
            start = i + 1
    return out


def drifting_rows(rng: np.random.Generator, n: int, change: int) -> list[tuple[float, int]]:
    """Scores that rank well before ``change`` and are noise after it."""
    rows = []
    for i in range(n):
        y = int(rng.random() < 0.3)
        if i < change:
            s = float(np.clip(0.3 + (0.4 if y else -0.2) + rng.normal(0, 0.1), 0, 1))
        else:
            s = float(np.round(rng.random(), 2))
        rows.append((s, y))
    return rows


@settings(derandomize=True, max_examples=30, deadline=None)
@given(st.sampled_from(["log_loss", "auc"]), st.integers(0, 2**32 - 1),
       st.sampled_from([0.0, 0.02, 0.1]), st.integers(1, 7))
def test_performance_reason_matches_oracle(metric: PerformanceMetric, seed: int,
                                           margin: float, every: int) -> None:
    rows = drifting_rows(np.random.default_rng(seed), 260, 90)
    ref, rec = 40, 30
    cfg = EvalConfig(triggers=replace(OFF, performance=metric, reference_labels=ref,
                                      recent_labels=rec, check_every=every,
                                      log_loss_margin=margin, auc_margin=margin))
    labels = [label(f"p{i:04d}", "m", s, y, T0 + i) for i, (s, y) in enumerate(rows)]
    fired = run(cfg, labels)
    expected = perf_oracle(rows, metric, ref, rec, every, margin)
    assert [i for i, _ in fired] == [i for i, _ in expected]
    for (_, got), (_, ci_low) in zip(fired, expected, strict=True):
        (reason,) = got["reasons"]
        assert (reason["reason"], reason["metric"], reason["margin"]) == ("performance", metric,
                                                                         margin)
        assert reason["ci_low"] == pytest.approx(ci_low, rel=1e-9, abs=1e-12)
        assert reason["ci_low"] == pytest.approx(reason["drop"] - Z * reason["se"])


def test_performance_reason_fires_on_a_clear_drop() -> None:
    rows = drifting_rows(np.random.default_rng(1), 200, 100)
    cfg = EvalConfig(triggers=replace(OFF, performance="both", reference_labels=50,
                                      recent_labels=50, check_every=5, log_loss_margin=0.05,
                                      auc_margin=0.05))
    fired = run(cfg, [label(f"p{i:04d}", "m", s, y, T0 + i) for i, (s, y) in enumerate(rows)])
    assert fired and 100 < fired[0][0] < 200
    assert {r["metric"] for r in fired[0][1]["reasons"]} <= {"log_loss", "auc"}


def test_drift_reason_fires_when_psi_crosses_and_rearms_after_recovery() -> None:
    base = [float(v % 10) for v in range(20)]
    phases = base + base[:10] + [30.0] * 12 + base[:12] + [30.0] * 12
    dcfg = DriftConfig(reference_size=20, current_size=10, bins=5, psi_threshold=0.5)
    labels = [label(f"p{i:03d}", "m", 0.5, 0, T0 + i) for i in range(len(phases))]
    examples = {r["prediction_id"]: example(r, logged={"x": x})
                for r, x in zip(labels, phases, strict=True)}
    cfg = EvalConfig(drift=dcfg, triggers=replace(OFF, drift=True))
    fired = run(cfg, labels, examples)

    # oracle: PSI after each example by hand; a label sees the examples before it
    # (a prediction's label is applied before its own example)
    edges = sorted(set(np.quantile(base, [k / 5 for k in range(1, 5)]).tolist()))
    ref = np.bincount(np.searchsorted(edges, base, side="left"), minlength=len(edges) + 1)
    psi_after: list[float | None] = []
    for i in range(len(phases)):
        cur_vals = phases[20:i + 1][-10:]
        if i < 20 or len(cur_vals) < 10:
            psi_after.append(None)
            continue
        cur = np.bincount(np.searchsorted(edges, cur_vals, side="left"), minlength=len(ref))
        r, c = np.maximum(ref / 20, 1e-4), np.maximum(cur / 10, 1e-4)
        psi_after.append(float(np.sum((c - r) * np.log(c / r))))
    expected, acked = [], False
    for j in range(len(phases)):
        psi = psi_after[j - 1] if j > 0 else None
        now = psi is not None and psi > 0.5
        # re-armed only once the PSI is below half the threshold (hysteresis)
        acked = acked and psi is not None and psi >= 0.5 * 0.5
        if now and not acked:
            expected.append(j)
            acked = True
    assert len(expected) == 2  # the construction drifts twice
    assert [i for i, _ in fired] == expected
    for _, rec in fired:
        (reason,) = rec["reasons"]
        (subject,) = reason["subjects"]
        assert subject["subject"] == "psi:logged.x" and subject["value"] > 0.5


def test_adwin_reason_matches_river_run_on_the_same_losses() -> None:
    rows = [(0.9, 1)] * 300 + [(0.9, 0)] * 300
    labels = [label(f"p{i:04d}", "m", s, y, T0 + i) for i, (s, y) in enumerate(rows)]
    delta = 0.01
    cfg = EvalConfig(drift=DriftConfig(adwin_delta=delta, reference_size=10_000),
                     triggers=replace(OFF, drift=True))
    fired = run(cfg, labels)
    detector = ADWIN(delta=delta)
    detections = []
    for i, (s, y) in enumerate(rows):
        detector.update(-math.log(s) if y else -math.log(1 - s))
        if detector.drift_detected:
            detections.append(i)
    assert detections  # the construction has a change ADWIN sees
    assert [i for i, _ in fired] == detections
    for _, rec in fired:
        assert rec["reasons"][0]["subjects"][0]["subject"] == "adwin:m"


def test_all_reasons_that_hold_go_in_one_trigger_and_counters_reset() -> None:
    cfg = EvalConfig(triggers=replace(OFF, every_ms=10, every_labels=3))
    labels = [label(f"p{i}", "m", 0.5, 0, T0 + 5 * i) for i in range(7)]
    fired = run(cfg, labels)
    # i=2: 3 labels and 10 ms at once; reset; i=4: 10 ms (2 labels); i=6: 10 ms
    assert [(i, [r["reason"] for r in rec["reasons"]]) for i, rec in fired] == [
        (2, ["time", "volume"]), (4, ["time"]), (6, ["time"])]
    assert [rec["labels_since"] for _, rec in fired] == [3, 2, 2]
