"""Drift records: PSI by hand (given and first-N references), naming, shadow examples, ADWIN."""

from __future__ import annotations

import dataclasses
import math
import random
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation import DriftConfig, EvalConfig, Evaluator
from evaluation.records import ExampleEvent, feature_vector, flatten_features
from tests.evaluation.oracle import T0, example, label

PROPS = settings(derandomize=True, max_examples=100, deadline=None)


def psi_by_hand(reference: list[float], current: list[float], bins: int, eps: float) -> float:
    edges = sorted(set(np.quantile(np.array(reference), [k / bins for k in range(1, bins)])
                       .tolist()))

    def shares(values: list[float]) -> list[float]:
        counts = [0] * (len(edges) + 1)
        for v in values:
            counts[sum(1 for e in edges if v > e)] += 1  # bin i = (edge[i-1], edge[i]]
        return [max(c / len(values), eps) for c in counts]

    return sum((c - r) * math.log(c / r)
               for r, c in zip(shares(reference), shares(current), strict=True))


def drift_records(ev: Evaluator, t: int) -> dict[str, dict[str, Any]]:
    return {o.key: o.record for o in ev.advance(t) if o.topic == "drift"}


@PROPS
@given(st.lists(st.integers(0, 20), min_size=3, max_size=40),
       st.lists(st.integers(-3, 25), min_size=1, max_size=40), st.integers(2, 8))
def test_psi_of_features_against_a_given_reference(ref: list[int], cur: list[int],
                                                   bins: int) -> None:
    size = len(cur)
    reference = [example(label(f"r{i}", "m", 0.5, 0, 0), logged={"x": v}, user={"u": v * 2})
                 for i, v in enumerate(ref)]
    cfg = EvalConfig(drift=DriftConfig(bins=bins, current_size=size, psi_threshold=0.25))
    ev = Evaluator(cfg, reference_examples=reference)
    for i, v in enumerate(cur):
        rec = label(f"p{i}", "m", 0.5, 0, T0 + i)
        ev.add_label(rec)
        ev.add_training_example(example(rec, logged={"x": v}, user={"u": v * 2}))
    recs = drift_records(ev, T0 + size)
    for key, scale in (("psi:logged.x", 1), ("psi:user.u", 2)):
        got = recs[key]
        expected = psi_by_hand([v * scale for v in ref], [v * scale for v in cur], bins, 1e-4)
        assert got["value"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert got["drifted"] is (expected > 0.25)
        assert (got["kind"], got["reference_size"], got["current_size"]) == ("psi", len(ref),
                                                                            size)


def test_reference_is_first_n_served_examples_and_current_the_last_m() -> None:
    cfg = EvalConfig(drift=DriftConfig(reference_size=10, current_size=5, bins=4))
    ev = Evaluator(cfg)
    values = [float(i) for i in range(10)] + [3.0, 100.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    for i, v in enumerate(values):
        rec = label(f"p{i:02d}", "m", 0.1 + 0.05 * (i % 10), 0, T0 + i)
        ev.add_label(rec)
        ev.add_training_example(example(rec, logged={"x": v, "s": "no"}, item={"n": None}))
        # a shadow copy of the same request: never part of the feature distributions
        shadow = label(f"s{i:02d}", "sh", 0.5, 0, T0 + i, served=False)
        ev.add_training_example(example(shadow, logged={"x": 1e9}))
    recs = drift_records(ev, T0 + 100)
    x = recs["psi:logged.x"]
    assert x["value"] == pytest.approx(psi_by_hand(values[:10], values[-5:], 4, 1e-4))
    assert "psi:logged.s" not in recs and "psi:item.n" not in recs
    score = recs["psi:score:m"]  # the first 10 labels of m, then its last 5
    scores = [0.1 + 0.05 * (i % 10) for i in range(len(values))]
    assert score["value"] == pytest.approx(psi_by_hand(scores[:10], scores[-5:], 4, 1e-4))
    assert score["model_id"] == "m"
    adwin = recs["adwin:m"]
    assert (adwin["kind"], adwin["subject"], adwin["reference_size"]) == ("adwin", "m", 17)
    assert adwin["drifted"] is False and adwin["detections"] == 0


def test_psi_is_none_until_the_current_window_is_full() -> None:
    ev = Evaluator(EvalConfig(drift=DriftConfig(reference_size=4, current_size=3)))
    for i in range(6):
        rec = label(f"p{i}", "m", 0.5, 0, T0 + i)
        ev.add_label(rec)
        ev.add_training_example(example(rec, logged={"x": i}))
    rec = drift_records(ev, T0 + 100)["psi:logged.x"]
    assert (rec["value"], rec["drifted"], rec["current_size"]) == (None, False, 2)


def test_flatten_features_names_and_skips() -> None:
    rec = {"features": {"a": 1, "b": 2.5, "c": None, "d": "x", "e": True, "f": float("nan")},
           "freshet_features": {"user": {"as_of_ts": 1, "features": {"clicks_1h": 0},
                                         "source": {}},
                                "item": {"as_of_ts": 1, "features": {"ctr_1h": 0.1, "z": None},
                                         "source": {}}}}
    assert flatten_features(rec) == {"logged.a": 1.0, "logged.b": 2.5, "user.clicks_1h": 0.0,
                                     "item.ctr_1h": 0.1}
    assert flatten_features({"freshet_features": None}) == {}


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(),
                    st.text(max_size=3), st.lists(st.integers(), max_size=2))


@PROPS
@given(st.dictionaries(st.text(max_size=4), _VALUES, max_size=8),
       st.one_of(st.none(), st.dictionaries(st.text(max_size=4), _VALUES, max_size=8)),
       st.one_of(st.none(), st.dictionaries(st.text(max_size=4), _VALUES, max_size=8)))
def test_feature_vector_keeps_the_finite_numbers_of_each_side(
        logged: dict[str, Any], user: dict[str, Any] | None,
        item: dict[str, Any] | None) -> None:
    rec = example(label("p", "m", 0.5, 0, T0), logged=logged, user=user, item=item)
    expected: dict[str, float] = {}
    for prefix, side in (("logged.", logged), ("user.", user), ("item.", item)):
        for name, v in (side or {}).items():
            if type(v) in (int, float) and math.isfinite(v):
                expected[prefix + name] = float(v)
    vector = feature_vector(rec)
    assert list(vector.items()) == list(expected.items())  # values and order
    assert vector == expected and flatten_features(rec) == expected
    assert {name: vector[name] for name in vector} == expected


def _examples(n: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        rec = label(f"pred-{i:08d}", "m", round(rnd.random(), 6), i % 2, T0 + i)
        out.append(example(rec, logged={"ctr_prior": rnd.random(), "pop": rnd.random()},
                           user={f"u{k}": rnd.randint(0, 9) for k in range(14)},
                           item={f"i{k}": rnd.random() for k in range(10)}))
    return out


def test_a_held_example_takes_well_under_a_kilobyte() -> None:
    # a backfill holds every example until its label matures: as a dict of new strings
    # and floats one of these took ~3.2 KB (a 2M-event replay reached a 10 GiB RSS)
    records = _examples(5_000, seed=3)
    ev = Evaluator()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for rec in records:
            assert ev.add_training_example(rec) == "pending"
        per_example = (tracemalloc.get_traced_memory()[0] - before) / len(records)
    finally:
        tracemalloc.stop()
    assert per_example < 900, f"{per_example:.0f} B per held example"


def test_a_checkpoint_holding_examples_as_dicts_continues_the_same() -> None:
    # checkpoints written before examples were packed hold their features as dicts
    cfg = EvalConfig(drift=DriftConfig(reference_size=50, current_size=40, bins=4))
    records = _examples(300, seed=5)
    packed, old = Evaluator(cfg), Evaluator(cfg)
    for ev in (packed, old):
        for rec in records:
            ev.add_label({k: v for k, v in rec.items()
                          if k not in ("features", "freshet_features")})
            ev.add_training_example(rec)
        ev.advance(T0 + 100)
    old._pending = [(*entry[:4], dataclasses.replace(entry[4], features=dict(
        entry[4].features.items())) if isinstance(entry[4], ExampleEvent) else entry[4])
        for entry in old._pending]
    assert any(isinstance(e[4], ExampleEvent) and type(e[4].features) is dict
               for e in old._pending)
    restored = Evaluator.from_bytes(old.to_bytes())
    for t in (T0 + 180, T0 + 301):
        assert restored.advance(t) == packed.advance(t)
    assert restored.counters == packed.counters and restored.counters["examples_applied"] == 300
