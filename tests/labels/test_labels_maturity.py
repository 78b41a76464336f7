"""The label watermark rule, checked against the label engine on random logs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.contracts import Click, Prediction
from labels.config import MODES, LabelConfig
from labels.maturity import combine_label_watermarks, label_watermark_ms
from tests.labels.drive import Labels

PROPS = settings(derandomize=True, max_examples=200, deadline=None)
T0 = 1_700_000_000_000


@pytest.mark.parametrize(("wm", "earliest", "expected"), [
    (None, None, None), (None, 5, None), (10, None, 10), (10, 5, 5), (10, 15, 10),
])
def test_label_watermark_rule(wm: int | None, earliest: int | None,
                              expected: int | None) -> None:
    assert label_watermark_ms(wm, earliest) == expected


@pytest.mark.parametrize(("values", "expected"), [
    ([], None), ([3], 3), ([3, 1, 2], 1), ([3, None], None),
])
def test_combine(values: list[int | None], expected: int | None) -> None:
    assert combine_label_watermarks(values) == expected


@st.composite
def user_logs(draw: st.DrawFn) -> list[Prediction | Click]:
    events: list[Prediction | Click] = []
    for n in range(draw(st.integers(1, 12))):
        user = draw(st.sampled_from(["u1", "u2", "u3"]))
        item = draw(st.sampled_from(["i1", "i2"]))
        ts = T0 + draw(st.integers(0, 5_000))
        events.append(Prediction(f"p{n}", f"r{n}", user, item, "m", 0.5, ts))
        if draw(st.booleans()):
            events.append(Click(user, item, ts + draw(st.integers(-10, 1_500))))
    return sorted(events, key=lambda e: e.ts)


@PROPS
@given(mode=st.sampled_from(MODES), events=user_logs(), lateness=st.sampled_from([0, 300]))
def test_every_prediction_before_the_label_watermark_has_its_final_label(
        mode: str, events: list[Prediction | Click], lateness: int) -> None:
    """One engine for the partition's users, fed event by event as the stream layer does."""
    labels = Labels(LabelConfig(window_ms=1_000, skew_ms=50, mode=mode, observe_ms=200,
                                late_horizon_ms=500))
    final: set[str] = set()
    max_ts = None
    for event in events:
        max_ts = event.ts if max_ts is None else max(max_ts, event.ts)
        wm = max_ts - lateness
        outs = (labels.on_prediction(event, wm) if isinstance(event, Prediction)
                else labels.on_click(event, wm))
        final |= {o.key for o in outs if o.kind == "label" and o.record["final"]}
        t = labels.engine.label_watermark(wm)
        assert t is not None
        preds_before = {e.prediction_id for e in events
                        if isinstance(e, Prediction) and e.ts < t}
        assert preds_before <= final
