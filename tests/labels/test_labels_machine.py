"""Table-driven tests of the label engine: attribution paths, skew, boundaries, modes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from events.contracts import Click, Prediction
from labels.config import LabelConfig
from labels.pending import DeadlineWheel
from tests.labels.drive import Labels
from tests.labels.drive import Out as Output

T0 = 1_700_000_000_000
END = 2**62
WINDOW, SKEW, OBSERVE, HORIZON = 1_000, 50, 200, 500


def cfg(mode: str = "wait", **kw: Any) -> LabelConfig:
    base: dict[str, Any] = {"window_ms": WINDOW, "skew_ms": SKEW, "observe_ms": OBSERVE,
                            "late_horizon_ms": HORIZON, "mode": mode}
    base.update(kw)
    return LabelConfig(**base)


def P(pid: str, item: str, off: int, rid: str | None = None, wm: int | None = None) -> tuple:
    pred = Prediction(pid, rid or f"r-{pid}", "u", item, "m", 0.5, T0 + off,
                      features={"logged": 1.0})
    return ("p", pred, wm)


def C(item: str, off: int, *, pid: str | None = None, rid: str | None = None,
      cid: str | None = None, wm: int | None = None) -> tuple:
    return ("c", Click("u", item, T0 + off, click_id=cid, request_id=rid, prediction_id=pid), wm)


def W(off: int) -> tuple:
    return ("w", None, off)


def run_steps(config: LabelConfig, steps: list[tuple], roundtrip: bool = False,
              ) -> list[list[Output]]:
    """Feed the steps (watermark offsets given, default = the event's own ts); END last."""
    m = Labels(config, roundtrip=roundtrip)
    per_step: list[list[Output]] = []
    for kind, obj, wm in steps:
        if kind == "w":
            per_step.append(m.on_watermark(T0 + wm))
            continue
        watermark = obj.ts if wm is None else T0 + wm
        if kind == "p":
            per_step.append(m.on_prediction(obj, watermark, snapshot={"f": 1}))
        else:
            per_step.append(m.on_click(obj, watermark))
    per_step.append(m.on_watermark(END))
    assert m.is_empty()
    return per_step


def compact(o: Output) -> tuple:
    r = o.record
    if o.kind == "label":
        delay = r["delay_ms"]
        return ("label", r["prediction_id"], r["kind"], r["label"], r["label_version"],
                r["final"], r["label_ts"] - T0, delay)
    if o.kind == "training_example":
        return ("te", r["prediction_id"], r["kind"])
    if o.kind in ("late_click", "extra_click"):
        return (o.kind, r["prediction_id"], r["delay_ms"], r["label"])
    if o.kind == "unattributed":
        return ("unattributed", r["ts"] - T0, r["reason"])
    return (o.kind, o.key)


def flat(per_step: list[list[Output]]) -> list[tuple]:
    return [compact(o) for outs in per_step for o in outs]


def pos(pid: str, at: int, delay: int, kind: str = "positive", version: int = 1) -> list:
    return [("label", pid, kind, 1, version, True, at, delay), ("te", pid, kind)]


def neg(pid: str, at: int, kind: str = "negative", version: int = 1) -> list:
    return [("label", pid, kind, 0, version, True, at, None), ("te", pid, kind)]


# (id, mode, steps, expected flattened outputs)
WAIT_CASES = [
    ("prediction_id beats the latest-prediction fallback",
     [P("p1", "i1", 0), P("p2", "i1", 10), C("i1", 100, pid="p1")],
     pos("p1", 100, 100) + neg("p2", 1010)),
    ("request_id + item_id",
     [P("p1", "i1", 0, rid="r1"), P("p2", "i2", 0, rid="r1"), P("p3", "i1", 10, rid="r2"),
      C("i1", 100, rid="r1")],
     pos("p1", 100, 100) + neg("p2", 1000) + neg("p3", 1010)),
    ("fallback: latest prediction of the item before the click",
     [P("p1", "i1", 0), P("p2", "i1", 10), P("p3", "i2", 20), C("i1", 100)],
     pos("p2", 100, 90) + neg("p1", 1000) + neg("p3", 1020)),
    ("fallback waits until the watermark passes the click: a prediction at the same ts wins",
     [P("p1", "i1", 0), C("i1", 100, wm=90), P("p2", "i1", 100)],
     pos("p2", 100, 0) + neg("p1", 1000)),
    ("fallback ignores predictions after the click",
     [P("p1", "i1", 0), C("i1", 100), P("p2", "i1", 101)],
     pos("p1", 100, 100) + neg("p2", 1101)),
    ("no prediction at all -> unattributed",
     [C("i9", 100)],
     [("unattributed", 100, "no_prediction")]),
    ("unknown prediction_id, nothing of the item -> unattributed",
     [P("p1", "i1", 0), C("i2", 100, pid="px")],
     [("unattributed", 100, "unknown_prediction_id"), *neg("p1", 1000)]),
    ("unknown prediction_id falls back to the item's latest prediction at release",
     [P("p1", "i1", 0), C("i1", 100, pid="px")],
     pos("p1", 100, 100)),
    ("unknown request_id -> unattributed",
     [P("p1", "i1", 0, rid="r1"), C("i2", 100, rid="r9")],
     [("unattributed", 100, "unknown_request_id"), *neg("p1", 1000)]),
    ("skew: click with prediction_id before its prediction is held and matched",
     [C("i1", 960, pid="p1"), P("p1", "i1", 1000)],
     pos("p1", 1000, 0)),
    ("skew: a held click attributed on arrival beats a later click",
     [C("i1", 960, pid="p1"), P("p1", "i1", 1000), C("i1", 1005)],
     [*pos("p1", 1000, 0), ("extra_click", "p1", 5, 1)]),
    ("skew: request_id + item_id before the prediction",
     [C("i1", 950, rid="r1"), P("p1", "i1", 1000, rid="r1")],
     pos("p1", 1000, 0)),
    ("skew exceeded: 51 ms early is not this prediction's click",
     [C("i1", 949, pid="p1"), P("p1", "i1", 1000)],
     [("unattributed", 949, "unknown_prediction_id"), *neg("p1", 2000)]),
    ("implicit click before the prediction never matches it",
     [C("i1", 990), P("p1", "i1", 1000)],
     [("unattributed", 990, "no_prediction"), *neg("p1", 2000)]),
    ("click exactly at pred.ts is inside the window",
     [P("p1", "i1", 0), C("i1", 0)],
     pos("p1", 0, 0)),
    ("click at pred.ts + window - 1 is the last inside",
     [P("p1", "i1", 0), C("i1", 999)],
     pos("p1", 999, 999)),
    ("click exactly at pred.ts + window is late (seen before the close is acted on)",
     [P("p1", "i1", 0), C("i1", 1000)],
     [("late_click", "p1", 1000, None), *neg("p1", 1000)]),
    ("late click after the close carries the final label",
     [P("p1", "i1", 0), C("i1", 1200)],
     [*neg("p1", 1000), ("late_click", "p1", 1200, 0)]),
    ("late click with prediction_id after a positive",
     [P("p1", "i1", 0), C("i1", 10), C("i1", 1400, pid="p1")],
     [*pos("p1", 10, 10), ("late_click", "p1", 1400, 1)]),
    ("last remembered late click (window + horizon - 1)",
     [P("p1", "i1", 0), C("i1", 1499)],
     [*neg("p1", 1000), ("late_click", "p1", 1499, 0)]),
    ("after window + horizon the prediction is forgotten",
     [P("p1", "i1", 0), C("i1", 1500)],
     [*neg("p1", 1000), ("unattributed", 1500, "no_prediction")]),
    ("extra clicks are counted, the first one wins",
     [P("p1", "i1", 0), C("i1", 100), C("i1", 200, cid="c2"), C("i1", 300, pid="p1")],
     [*pos("p1", 100, 100), ("extra_click", "p1", 200, 1), ("extra_click", "p1", 300, 1)]),
    ("first click is the earliest in event time, not in arrival",
     [P("p1", "i1", 0), C("i1", 200, wm=50), C("i1", 100, wm=50), W(300)],
     [*pos("p1", 100, 100), ("extra_click", "p1", 200, 1)]),
    ("duplicate prediction is reported and labelled once",
     [P("p1", "i1", 0), P("p1", "i1", 0)],
     [("duplicate_prediction", "p1"), *neg("p1", 1000)]),
    ("late prediction (behind the watermark) is closed at once",
     [W(5000), P("p1", "i1", 0, wm=5000)],
     neg("p1", 1000)),
]

MODE_CASES = [
    ("early_negative then late_positive", "early_negative",
     [P("p1", "i1", 0), C("i1", 100)],
     [("label", "p1", "early_negative", 0, 1, False, 0, None),
      *pos("p1", 100, 100, "late_positive", 2)]),
    ("early_negative then negative at close", "early_negative",
     [P("p1", "i1", 0)],
     [("label", "p1", "early_negative", 0, 1, False, 0, None),
      *neg("p1", 1000, "negative", 2)]),
    ("observe: click inside the observation window", "observe_then_correct",
     [P("p1", "i1", 0), C("i1", 100), C("i1", 150)],
     [("extra_click", "p1", 150, None), *pos("p1", 200, 100, "observed_positive", 1)]),
    ("observe: click after the observation window", "observe_then_correct",
     [P("p1", "i1", 0), C("i1", 500)],
     [("label", "p1", "observed_negative", 0, 1, False, 200, None),
      *pos("p1", 500, 500, "late_positive", 2)]),
    ("observe: click exactly at observe end is a correction", "observe_then_correct",
     [P("p1", "i1", 0), C("i1", 200)],
     [("label", "p1", "observed_negative", 0, 1, False, 200, None),
      *pos("p1", 200, 200, "late_positive", 2)]),
    ("observe: no click -> real_negative", "observe_then_correct",
     [P("p1", "i1", 0)],
     [("label", "p1", "observed_negative", 0, 1, False, 200, None),
      *neg("p1", 1000, "real_negative", 2)]),
    ("observe: late click after the real negative", "observe_then_correct",
     [P("p1", "i1", 0), C("i1", 1100)],
     [("label", "p1", "observed_negative", 0, 1, False, 200, None),
      *neg("p1", 1000, "real_negative", 2), ("late_click", "p1", 1100, 0)]),
    ("wait: positive", "wait", [P("p1", "i1", 0), C("i1", 5)], pos("p1", 5, 5)),
]


@pytest.mark.parametrize(("steps", "expected"), [c[1:] for c in WAIT_CASES],
                         ids=[c[0] for c in WAIT_CASES])
def test_wait_mode_cases(steps: list[tuple], expected: list[tuple]) -> None:
    assert flat(run_steps(cfg(), steps)) == expected


@pytest.mark.parametrize(("mode", "steps", "expected"), [c[1:] for c in MODE_CASES],
                         ids=[c[0] for c in MODE_CASES])
def test_mode_output_sequences(mode: str, steps: list[tuple], expected: list[tuple]) -> None:
    assert flat(run_steps(cfg(mode), steps)) == expected


def test_skew_hold_releases_unmatched_click_at_click_ts_plus_skew() -> None:
    steps = [P("p1", "i1", 0), C("i1", 100, pid="px", wm=101), W(150), W(151)]
    per_step = run_steps(cfg(), steps)
    assert [len(s) for s in per_step[:4]] == [0, 0, 0, 2]  # positive + example at 151
    assert flat(per_step)[:1] == [("label", "p1", "positive", 1, 1, True, 100, 100)]


def test_held_click_is_matched_the_moment_its_prediction_arrives() -> None:
    per_step = run_steps(cfg(), [C("i1", 980, pid="p1"), P("p1", "i1", 1000)])
    assert per_step[0] == []
    assert [compact(o) for o in per_step[1]] == pos("p1", 1000, 0)


def test_negative_waits_for_window_plus_skew() -> None:
    m = Labels(cfg())
    m.on_prediction(P("p1", "i1", 0)[1], T0)
    assert m.next_deadline_ms() == T0 + WINDOW + SKEW
    assert m.on_watermark(T0 + WINDOW + SKEW - 1) == []
    out = m.on_watermark(T0 + WINDOW + SKEW)
    assert [o.record["kind"] for o in out] == ["negative", "negative"]
    assert m.next_deadline_ms() == T0 + WINDOW + HORIZON + SKEW
    assert m.on_watermark(T0 + WINDOW + HORIZON + SKEW) == [] and m.is_empty()


def test_label_and_training_example_records() -> None:
    m = Labels(cfg())
    pred = Prediction("p1", "r1", "u", "i1", "m7", 0.25, T0, position=3,
                      features={"f_logged": 2.0})
    m.on_prediction(pred, T0, snapshot={"user.clicks_1h": 4})
    label, example = m.on_click(Click("u", "i1", T0 + 40), T0 + 41)
    assert label.kind == "label" and label.key == "p1"
    assert label.record == {
        "prediction_id": "p1", "request_id": "r1", "user_id": "u", "item_id": "i1",
        "model_id": "m7", "score": 0.25, "label": 1, "kind": "positive", "label_version": 1,
        "final": True, "prediction_ts": T0, "label_ts": T0 + 40, "delay_ms": 40,
        "window_ms": WINDOW, "schema_version": 1,
    }
    assert example.kind == "training_example" and example.key == "p1"
    assert example.record == {**pred.to_dict(), **label.record,
                              "freshet_features": {"user": {"user.clicks_1h": 4}, "item": None}}
    # once final, the remembered prediction keeps no logged features or snapshot
    row = m.engine.table.by_pid["p1"]
    assert m.engine.table.fields_json[row] == b"" and m.engine.table.user_snapshot[row] is None


def test_provisional_examples_go_with_non_final_labels() -> None:
    per_step = run_steps(cfg("early_negative", provisional_examples=True), [P("p1", "i1", 0)])
    assert flat(per_step) == [("label", "p1", "early_negative", 0, 1, False, 0, None),
                              ("te", "p1", "early_negative"), *neg("p1", 1000, "negative", 2)]


def test_unattributed_record_is_the_click_plus_reason() -> None:
    m = Labels(cfg(skew_ms=0))
    (out,) = m.on_click(Click("u", "i", T0, click_id="c1"), T0 + 1)
    assert (out.kind, out.key) == ("unattributed", "u")
    assert out.record == {"user_id": "u", "item_id": "i", "ts": T0, "click_id": "c1",
                          "reason": "no_prediction", "schema_version": 1}


def test_on_watermark_is_a_no_op_before_the_next_deadline() -> None:
    m = Labels(cfg())
    m.on_prediction(P("p1", "i1", 0)[1], T0)
    m.on_click(C("i1", 10)[1], T0 + 5)
    assert m.next_deadline_ms() == T0 + 11
    assert m.on_watermark(T0 + 10) == []
    assert m.engine.take_deltas() == []  # nothing changed


def test_advance_reads_only_due_buckets_of_the_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Labels(cfg())
    for n in range(50):
        m.on_prediction(P(f"p{n}", "i1", n)[1], T0 + n)
    popped: list[int] = []
    pop = DeadlineWheel.pop

    def spy(self: DeadlineWheel, due: Any, watermark_ms: int) -> Any:
        rows = pop(self, due, watermark_ms)
        popped.append(len(rows))
        return rows

    monkeypatch.setattr(DeadlineWheel, "pop", spy)
    assert m.on_watermark(T0 + WINDOW) == [] and popped == [0]


def test_earliest_open_ts_tracks_open_predictions() -> None:
    m = Labels(cfg())
    m.on_prediction(P("p1", "i1", 0)[1], T0)
    m.on_prediction(P("p2", "i2", 10)[1], T0 + 10)
    assert m.earliest_open_ts_ms() == T0
    m.on_click(C("i1", 20)[1], T0 + 21)  # p1 positive -> final
    assert m.earliest_open_ts_ms() == T0 + 10
    m.on_watermark(END)
    assert m.earliest_open_ts_ms() is None


EAGER_CASES = [
    # (mode, steps with watermarks far behind the clicks, per-step compact outputs)
    ("wait", [P("p1", "i1", 0, wm=0), C("i1", 300, pid="p1", wm=0)],
     [[], [("label", "p1", "positive", 1, 1, True, 300, 300), ("te", "p1", "positive")]]),
    ("early_negative", [P("p1", "i1", 0, wm=0), C("i1", 300, pid="p1", wm=0)],
     [[("label", "p1", "early_negative", 0, 1, False, 0, None)],
      [("label", "p1", "late_positive", 1, 2, True, 300, 300), ("te", "p1", "late_positive")]]),
    # a second click is an extra click at once
    ("wait", [P("p1", "i1", 0, wm=0), C("i1", 300, pid="p1", wm=0),
              C("i1", 400, pid="p1", wm=0)],
     [[], [("label", "p1", "positive", 1, 1, True, 300, 300), ("te", "p1", "positive")], []]),
    # not eager: unknown prediction (held for the skew), outside the window, no id
    ("wait", [P("p1", "i1", 0, wm=0), C("i1", 300, pid="p9", wm=0)], [[], []]),
    ("wait", [P("p1", "i1", 0, wm=0), C("i1", WINDOW, pid="p1", wm=0)], [[], []]),
    ("wait", [P("p1", "i1", 0, wm=0), C("i1", 300, wm=0)], [[], []]),
    # observe_then_correct ignores eager clicks: the label comes at the observation end
    ("observe_then_correct", [P("p1", "i1", 0, wm=0), C("i1", 100, pid="p1", wm=0)], [[], []]),
]


@pytest.mark.parametrize(("mode", "steps", "expected"), EAGER_CASES)
def test_eager_clicks_label_at_arrival(mode: str, steps: list[tuple],
                                       expected: list[list[tuple]]) -> None:
    per_step = run_steps(cfg(mode, eager_clicks=True), steps)
    assert [[compact(o) for o in step] for step in per_step[:len(steps)]] == expected


def test_eager_clicks_still_let_a_due_earlier_click_win() -> None:
    # the fallback click at 200 is due (watermark 301) before the eager click at 300
    steps = [P("p1", "i1", 0, wm=0), C("i1", 200, wm=0), C("i1", 300, pid="p1", wm=301)]
    per_step = run_steps(cfg(eager_clicks=True), steps)
    assert [compact(o) for o in per_step[2]][:1] == [
        ("label", "p1", "positive", 1, 1, True, 200, 200)]


def test_an_example_waiting_for_its_item_snapshot_outlives_the_late_horizon() -> None:
    # a backlog can move the watermark past the forget deadline before the item side
    # has sent the prediction's snapshot back: the example must still come out
    from labels.engine import LabelEngine
    from tests.labels.drive import prediction_columns

    engine = LabelEngine(cfg(), item_snapshots=True)
    pred = P("p1", "i1", 0)[1]
    engine.add_predictions(prediction_columns([pred], [0], [{"u": 1}]))
    engine.advance(T0 + WINDOW + HORIZON + SKEW + 10)
    assert [o.kind for o in engine.take_outputs()] == ["label"]
    deltas = engine.take_deltas()
    assert deltas and all(value is not None for _, value in deltas)  # not forgotten
    engine.add_item_snapshots(["p1"], [b'{"i":2}'])
    (example,) = engine.take_outputs()
    record = orjson.loads(example.value)
    assert example.kind == "training_example"
    assert record["freshet_features"] == {"user": {"u": 1}, "item": {"i": 2}}
    assert engine.take_deltas() == [(b"Pp1", None)] and engine.is_empty()
