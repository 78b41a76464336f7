"""PSI windows slid a batch at a time equal the one-value-at-a-time slide, bit for bit."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation import EvalConfig, Evaluator, TriggerConfig
from evaluation.config import DriftConfig
from evaluation.psi import PsiSubject, slide
from tests.evaluation.oracle import T0, example, label
from tests.evaluation.test_eval_drift import psi_by_hand

PROPS = settings(derandomize=True, max_examples=150, deadline=None)
VALUES = st.one_of(st.integers(-3, 12).map(float), st.floats(-5.0, 15.0, allow_nan=False))


def _subject(reference: list[float], bins: int, width: int) -> PsiSubject:
    s = PsiSubject("x", width)
    for v in reference:
        s.add_reference(v)
    s.freeze(bins)
    return s


def _state(s: PsiSubject) -> tuple[Any, ...]:
    return list(s.current), s.current_counts, s.terms, s.value


@PROPS
@given(st.lists(VALUES, min_size=1, max_size=30), st.lists(VALUES, max_size=80),
       st.integers(2, 6), st.integers(1, 12), st.lists(st.integers(0, 80), max_size=5))
def test_slide_equals_add_current_one_value_at_a_time(
        reference: list[float], values: list[float], bins: int, width: int,
        cuts: list[int]) -> None:
    one, many = _subject(reference, bins, width), _subject(reference, bins, width)
    expected = [one.add_current(v, 1e-4) for v in values]
    got: list[float | None] = []
    bounds = [0, *sorted(c for c in cuts if c <= len(values)), len(values)]
    for lo, hi in itertools.pairwise(bounds):  # in chunks, as runs mature
        got += [None if math.isnan(x) else x
                for x in slide(many, np.array(values[lo:hi], dtype=np.float64),
                               1e-4).tolist()]
    assert got == expected  # exact, not approximately
    assert _state(many) == _state(one)
    if len(values) >= width:  # and the value is the PSI of the last `width` values
        assert many.value == pytest.approx(
            psi_by_hand(reference, values[-width:], bins, 1e-4), rel=1e-9, abs=1e-12)


def test_slide_refuses_a_subject_without_bins() -> None:
    with pytest.raises(ValueError, match="no bins yet"):
        slide(PsiSubject("x", 3), np.array([1.0]), 1e-4)


@st.composite
def drifting_logs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Labels and examples whose feature shifts mid-log (drift triggers fire)."""
    out: list[dict[str, Any]] = []
    shift = draw(st.integers(5, 40))
    for i in range(draw(st.integers(10, 60))):
        rec = label(f"p{i}", draw(st.sampled_from(["a", "b"])),
                    draw(st.integers(0, 100)) / 100, draw(st.integers(0, 1)),
                    T0 + draw(st.integers(0, 300)))
        out.append(rec)
        x = draw(st.integers(0, 4)) + (10 if i >= shift else 0)
        if draw(st.integers(0, 5)):
            out.append(example(rec, logged={"x": x}, user={"n": draw(st.integers(0, 2))}))
    return out


CONFIG = EvalConfig(drift=DriftConfig(reference_size=4, current_size=3, bins=3,
                                      psi_threshold=0.2),
                    triggers=TriggerConfig(every_ms=None, every_labels=None,
                                           performance="off", check_every=1))


@PROPS
@given(drifting_logs())
def test_maturing_one_prediction_at_a_time_equals_all_at_once(
        records: list[dict[str, Any]]) -> None:
    # runs of one prediction's label and example (the old one-by-one path's granularity)
    # against one run of everything: PSI values, drifted sets and drift triggers agree
    one, all_at_once = Evaluator(CONFIG), Evaluator(CONFIG)
    for ev in (one, all_at_once):
        for rec in records:
            (ev.add_training_example if "freshet_features" in rec else ev.add_label)(rec)
    for ts in sorted({r["prediction_ts"] for r in records}):
        one.advance(ts + 1)
    end = T0 + 301
    assert one.advance(end) == all_at_once.advance(end)
    assert one.to_bytes() == all_at_once.to_bytes()
    assert one.drift.drifted == all_at_once.drift.drifted


def test_the_drifting_logs_do_fire_drift_triggers() -> None:
    # the property above is only worth something if drift triggers fire in its logs
    rnd = random.Random(4)
    records = []
    for i in range(60):
        rec = label(f"p{i}", "a", rnd.random(), i % 2, T0 + i * 5)
        records += [rec, example(rec, logged={"x": rnd.randint(0, 4) + 10 * (i >= 20)})]
    ev = Evaluator(CONFIG)
    for rec in records:
        (ev.add_training_example if "freshet_features" in rec else ev.add_label)(rec)
    fired = []
    for ts in range(T0, T0 + 301, 5):
        fired += [o.record for o in ev.advance(ts + 1) if o.topic == "retrain-triggers"]
    subjects = {sub["subject"] for rec in fired for r in rec["reasons"]
                if r["reason"] == "drift" for sub in r["subjects"]}
    assert "psi:logged.x" in subjects, fired
