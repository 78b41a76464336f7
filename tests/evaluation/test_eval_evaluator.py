"""The Evaluator: metrics vs brute force, maturity, idempotence, invariances, round-trip."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation import EvalConfig, Evaluator, MetricsConfig, TriggerConfig
from evaluation.config import DriftConfig
from evaluation.records import EvalOutput
from tests.evaluation.oracle import T0, brute_metrics, example, label

PROPS = settings(derandomize=True, max_examples=150, deadline=None)
TILE, WINDOWS = 10, (("w50", 50), ("w200", 200))
CONFIG = EvalConfig(
    metrics=MetricsConfig(tile_ms=TILE, windows=WINDOWS),
    drift=DriftConfig(reference_size=5, current_size=5, bins=4),
    triggers=TriggerConfig(every_ms=120, every_labels=7, performance="both",
                           reference_labels=4, recent_labels=4, check_every=2),
)
SCORES = st.one_of(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
                   st.integers(0, 10**6).map(lambda k: k / 10**6),
                   st.floats(0.0, 1.0, allow_nan=False))


@st.composite
def logs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Labels (some non-final, some repeated) and training examples of 1-3 models."""
    out: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 45))):
        model = draw(st.sampled_from(["a", "b", "s"]))
        rec = label(f"p{i}", model, draw(SCORES), draw(st.integers(0, 1)),
                    T0 + draw(st.integers(0, 600)), served=False if model == "s" else None)
        if draw(st.integers(0, 4)) == 0:  # an early non-final label, then the final one
            out.append({**rec, "final": False, "label": 0, "label_version": 1})
            rec = {**rec, "label_version": 2}
        out.append(rec)
        if draw(st.booleans()):
            out.append(example(rec, logged={"x": draw(st.integers(0, 9)), "tag": "t"},
                               user={"clicks_1h": draw(st.integers(0, 3))}))
        if draw(st.integers(0, 5)) == 0:
            out.append(dict(rec))  # a redelivery
    return out


def feed(ev: Evaluator, records: list[dict[str, Any]]) -> None:
    for rec in records:
        if "freshet_features" in rec:
            ev.add_training_example(rec)
        else:
            ev.add_label(rec)


def by_key(outputs: list[EvalOutput]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(o.topic, o.key, str(o.record.get("window", ""))): o.record for o in outputs}


@PROPS
@given(logs(), st.integers(0, 650))
def test_metrics_match_brute_force(records: list[dict[str, Any]], dt: int) -> None:
    t = T0 + dt
    ev = Evaluator(CONFIG)
    feed(ev, records)
    out = ev.advance(t)
    json.dumps([o.record for o in out], allow_nan=False)  # JSON-ready, no NaN/inf
    labels = [r for r in records if "freshet_features" not in r]
    expected = brute_metrics(labels, t, TILE, WINDOWS)
    got = {(o.record["model_id"], o.record["window"]): o.record for o in out
           if o.topic == "model-metrics"}
    assert set(got) == set(expected)
    for key, exp in expected.items():
        rec = got[key]
        assert rec["label_watermark_ms"] == t and rec["schema_version"] == 1
        assert rec["shadow"] is (key[0] == "s")
        assert rec["auc"] == exp["auc"]  # exact, ties half
        for name in ("impressions", "clicks", "window_start_ms", "window_end_ms"):
            if name in exp:
                assert rec[name] == exp[name], name
        for name in ("ctr", "ctr_low", "ctr_high", "mean_score", "calibration", "log_loss"):
            if exp[name] is None:
                assert rec[name] is None, name
            else:
                assert rec[name] == pytest.approx(exp[name], rel=1e-9, abs=1e-12), name


def test_window_semantics_with_unit_tiles_is_exactly_t_minus_w_to_t() -> None:
    cfg = EvalConfig(metrics=MetricsConfig(tile_ms=1, windows=(("w", 100),)))
    ev = Evaluator(cfg)
    for i, ts in enumerate([T0, T0 + 50, T0 + 100, T0 + 101]):
        ev.add_label(label(f"p{i}", "m", 0.5, i % 2, ts))
    out = by_key(ev.advance(T0 + 102))
    w = out[("model-metrics", "m", "w")]
    # newest t = T0 + 101: the window is (t - 100, t] = [T0 + 2, T0 + 102)
    assert (w["window_start_ms"], w["window_end_ms"], w["impressions"]) == (T0 + 2, T0 + 102, 3)


def test_only_final_matured_labels_count_once() -> None:
    ev = Evaluator(CONFIG)
    early = label("p1", "m", 0.3, 0, T0, final=False)
    final = label("p1", "m", 0.3, 1, T0, version=2)
    assert ev.add_label(early) == "not_final"
    assert ev.add_label(final) == "pending"
    assert ev.add_label(dict(final)) == "duplicate"
    assert ev.advance(T0) == []  # nothing matured: T must pass prediction_ts
    out = by_key(ev.advance(T0 + 1))
    assert out[("model-metrics", "m", "all")]["impressions"] == 1
    assert out[("model-metrics", "m", "all")]["clicks"] == 1
    assert ev.add_label(dict(final)) == "duplicate"  # remembered after it was applied
    assert ev.advance(T0 - 5) == []  # a lower watermark is ignored
    assert ev.watermark_ms == T0 + 1


def test_late_and_too_late_labels() -> None:
    cfg = EvalConfig(dedupe_horizon_ms=100)
    ev = Evaluator(cfg)
    ev.advance(T0 + 1_000)
    assert ev.add_label(label("late", "m", 0.5, 1, T0 + 950)) == "late"
    assert ev.add_label(label("old", "m", 0.5, 1, T0 + 899)) == "too_late"
    out = by_key(ev.advance(T0 + 1_000))  # applied at the next advance, same watermark
    assert out[("model-metrics", "m", "all")]["impressions"] == 1
    assert ev.counters["late"] == 1 and ev.counters["too_late"] == 1


@PROPS
@given(logs(), st.lists(st.integers(0, 650), max_size=6), st.integers(0, 650))
def test_batch_invariance(records: list[dict[str, Any]], steps: list[int], dt: int) -> None:
    """Advancing through intermediate watermarks == advancing straight to the last."""
    t = T0 + dt
    straight, stepped = Evaluator(CONFIG), Evaluator(CONFIG)
    feed(straight, records)
    feed(stepped, records)
    for s in sorted(steps):
        stepped.advance(min(T0 + s, t))
    assert stepped.advance(t) == straight.advance(t)
    assert stepped.to_bytes() == straight.to_bytes()
    more = [label(f"q{i}", "a", 0.5, i % 2, t + i) for i in range(5)]
    feed(straight, more)
    feed(stepped, more)
    assert stepped.advance(t + 10) == straight.advance(t + 10)


@PROPS
@given(logs(), st.randoms(use_true_random=False), st.integers(0, 650))
def test_arrival_order_and_future_records_do_not_matter(records: list[dict[str, Any]],
                                                        rnd: random.Random, dt: int) -> None:
    t = T0 + dt
    ordered, shuffled = Evaluator(CONFIG), Evaluator(CONFIG)
    feed(ordered, [r for r in records if r["prediction_ts"] < t])
    mixed = list(records)
    rnd.shuffle(mixed)
    feed(shuffled, mixed)  # includes records at or after t: they must not count yet
    assert shuffled.advance(t) == ordered.advance(t)


@PROPS
@given(logs(), st.lists(st.integers(0, 650), min_size=1, max_size=5), st.data())
def test_restore_and_continue_equals_never_stopped(records: list[dict[str, Any]],
                                                    steps: list[int],
                                                    data: st.DataObject) -> None:
    watermarks = [T0 + s for s in sorted(steps)] + [T0 + 700]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(records)), min_size=len(watermarks),
                                     max_size=len(watermarks))))
    restart_at = data.draw(st.sets(st.integers(0, len(watermarks) - 1)))
    plain, restarted = Evaluator(CONFIG), Evaluator(CONFIG)
    start = 0
    for i, (cut, wm) in enumerate(zip(cuts, watermarks, strict=True)):
        feed(plain, records[start:cut])
        feed(restarted, records[start:cut])
        start = cut
        if i in restart_at:
            restarted = Evaluator.from_bytes(restarted.to_bytes())
        assert restarted.advance(wm) == plain.advance(wm)
    feed(plain, records[start:])
    feed(restarted, records[start:])
    assert restarted.advance(T0 + 700) == plain.advance(T0 + 700)


def test_shadow_model_is_evaluated_marked_and_not_routed() -> None:
    ev = Evaluator()
    for i in range(40):
        y = int(i % 4 == 0)
        ev.add_label(label(f"p{i}", "served", 0.3, y, T0 + i))
        ev.add_label(label(f"s{i}", "shadow", 0.6 if y else 0.2, y, T0 + i, served=False))
    out = by_key(ev.advance(T0 + 100))
    assert out[("model-metrics", "shadow", "all")]["shadow"] is True
    assert out[("model-metrics", "shadow", "all")]["auc"] == 1.0
    assert out[("model-metrics", "served", "all")]["shadow"] is False
    routing = out[("model-routing", "routing", "")]
    assert routing["weights"] == {"served": 1.0}
    cmp = out[("model-comparisons", "served|shadow", "all")]
    assert (cmp["model_a"], cmp["shadow_a"], cmp["shadow_b"]) == ("served", False, True)
    assert cmp["ctr_diff"] == 0.0


def test_routing_weights_sum_to_one_with_floor() -> None:
    ev = Evaluator()
    for i in range(300):
        ev.add_label(label(f"a{i}", "a", 0.1, int(i % 20 == 0), T0 + i))
        ev.add_label(label(f"b{i}", "b", 0.1, int(i % 5 == 0), T0 + i))
    rec = by_key(ev.advance(T0 + 1_000))[("model-routing", "routing", "")]
    floor = rec["floor"]
    assert math.isclose(sum(rec["weights"].values()), 1.0)
    assert rec["weights"]["a"] == pytest.approx(floor + (1 - 2 * floor) * rec["probabilities"]["a"])
    assert rec["weights"]["b"] > 0.9 and rec["weights"]["a"] >= floor
    assert rec["models"] == {"a": {"clicks": 15, "impressions": 300},
                             "b": {"clicks": 60, "impressions": 300}}
    assert (rec["method"], rec["draws"]) == ("thompson_monte_carlo", 20_000)


@PROPS
@given(logs(), st.integers(0, 650))
def test_comparisons_match_recomputation(records: list[dict[str, Any]], dt: int) -> None:
    t = T0 + dt
    ev = Evaluator(CONFIG)
    feed(ev, records)
    out = [o for o in ev.advance(t) if o.topic == "model-comparisons"]
    matured: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        if "freshet_features" not in r and r["final"] and r["prediction_ts"] < t:
            matured.setdefault((r["prediction_id"], r["label_version"]), r)
    ordered = sorted(matured.values(), key=lambda r: (r["prediction_ts"], r["prediction_id"]))
    models = sorted({r["model_id"] for r in ordered})
    assert [o.key for o in out] == [f"{a}|{b}" for i, a in enumerate(models)
                                    for b in models[i + 1:]]
    tau2 = CONFIG.comparison.msprt_tau2
    for o in out:
        a, b = o.record["model_a"], o.record["model_b"]
        counts = {a: [0, 0], b: [0, 0]}
        p_run = 1.0
        for r in ordered:  # always-valid p: running min of 1/Λ after each label of a or b
            if r["model_id"] in counts:
                counts[r["model_id"]][0] += r["label"]
                counts[r["model_id"]][1] += 1
                (ca, na), (cb, nb) = counts[a], counts[b]
                if na and nb:
                    pa, pb = ca / na, cb / nb
                    v = pa * (1 - pa) / na + pb * (1 - pb) / nb
                    if v > 0:
                        lam = math.sqrt(v / (v + tau2)) * math.exp(
                            (pb - pa) ** 2 * tau2 / (2 * v * (v + tau2)))
                        p_run = min(p_run, 1.0, 1.0 / lam)
        (ca, na), (cb, nb) = counts[a], counts[b]
        rec = o.record
        assert (rec["clicks_a"], rec["impressions_a"], rec["clicks_b"], rec["impressions_b"]) \
            == (ca, na, cb, nb)
        assert rec["ctr_diff"] == pytest.approx(cb / nb - ca / na, abs=1e-15)
        pooled = (ca + cb) / (na + nb)
        se = math.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
        exp_p = 1.0 if se == 0 else math.erfc(abs((cb / nb - ca / na) / se) / math.sqrt(2))
        assert rec["p_value"] == pytest.approx(exp_p, rel=1e-9, abs=1e-300)
        assert rec["msprt_p_value"] == pytest.approx(p_run, rel=1e-9)


HORIZON = 150_000  # 2.5 minutes of the 1-minute id buckets


@PROPS
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 600_000), st.integers(0, 90_000)),
                min_size=1, max_size=80))
def test_repeats_are_found_until_the_horizon_then_too_late(
        steps: list[tuple[int, int, int]]) -> None:
    """Statuses against a plain-Python oracle that keeps every id forever."""
    ev = Evaluator(EvalConfig(dedupe_horizon_ms=HORIZON))
    ts_of = {k: T0 + ts for k, ts, _ in steps}  # one prediction_ts per id, as published
    seen: set[int] = set()
    t: int | None = None
    for k, _, dt in steps:
        ts = ts_of[k]
        if t is not None and ts < t - HORIZON:
            want = "too_late"
        elif k in seen:
            want = "duplicate"
        else:
            seen.add(k)
            want = "late" if t is not None and ts < t else "pending"
        assert ev.add_label(label(f"p{k}", "m", 0.5, 1, ts)) == want
        t = max(t or 0, min(ts_of.values()) + dt)
        ev.advance(t)
        # memory: only ids of the minutes the horizon still covers are kept
        assert all((b + 1) * 60_000 > t - HORIZON for b in ev._seen)


def test_a_state_of_the_previous_layout_restores_and_continues() -> None:
    import heapq
    import pickle

    from evaluation import evaluator as module

    ev = Evaluator(CONFIG)
    recs = [label(f"p{i}", "m", i / 10, i % 2, T0 + 20 * i) for i in range(8)]
    feed(ev, recs)
    ev.advance(T0 + 70)
    state = dict(ev.__dict__)  # as the previous version stored it: a set and a heap
    state["_seen"] = {(0, r["prediction_id"], 1) for r in recs}
    order: list[tuple[int, int, str, int]] = []
    for r in recs:
        heapq.heappush(order, (r["prediction_ts"], 0, r["prediction_id"], 1))
    state["_seen_order"] = order
    old = Evaluator.from_bytes(module._MAGIC + pickle.dumps(state, protocol=5))
    assert [old.add_label(dict(r)) for r in recs] == ["duplicate"] * 8
    assert old.advance(T0 + 500) == ev.advance(T0 + 500)
