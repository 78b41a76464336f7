"""Table-driven tests of shadow predictions (``served: false``) in the label engine.

The rules (module doc of :mod:`labels.engine`): a shadow is labelled with its served
twin's outcome, record for record; it never takes a click; a click naming it goes to
its twin at the click's release; a shadow without a twin closes negative on its own.
Every case also runs with the engine rebuilt from its changelog after every step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from events.contracts import Click, Prediction
from labels.config import LabelConfig
from labels.engine import LabelEngine
from tests.labels.drive import Labels, prediction_columns
from tests.labels.drive import Out as Output
from tests.labels.test_labels_machine import C, W, run_steps

T0 = 1_700_000_000_000
END = 2**62
WINDOW, SKEW, OBSERVE, HORIZON = 1_000, 50, 200, 500


def cfg(mode: str = "wait", **kw: Any) -> LabelConfig:
    base: dict[str, Any] = {"window_ms": WINDOW, "skew_ms": SKEW, "observe_ms": OBSERVE,
                            "late_horizon_ms": HORIZON, "mode": mode}
    base.update(kw)
    return LabelConfig(**base)


def P(pid: str, item: str, off: int, rid: str | None = None, wm: int | None = None,
      *, served: bool = True, model: str = "m") -> tuple:
    return ("p", Prediction(pid, rid or f"r-{pid}", "u", item, model, 0.5, T0 + off,
                            served=None if served else False), wm)


def S(pid: str, item: str, off: int, rid: str, wm: int | None = None) -> tuple:
    """A shadow model's score of request ``rid`` and ``item``."""
    return P(pid, item, off, rid, wm, served=False, model="shadow")


def compact(o: Output) -> tuple:
    r = o.record
    if o.kind == "label":
        shadow: tuple = ()
        if r.get("served") is False:  # a shadow's final label names its twin (or null)
            shadow = ("shadow", r["served_prediction_id"]) if r["final"] else ("shadow",)
            assert r["final"] or "served_prediction_id" not in r
        else:
            assert "served" not in r and "served_prediction_id" not in r
        return ("label", r["prediction_id"], r["kind"], r["label"], r["label_version"],
                r["final"], r["label_ts"] - T0, r["delay_ms"], *shadow)
    if o.kind == "training_example":
        return ("te", r["prediction_id"], r["kind"], r.get("served", True))
    if o.kind in ("late_click", "extra_click"):
        return (o.kind, r["prediction_id"], r["delay_ms"], r["label"])
    if o.kind == "unattributed":
        return ("unattributed", r["ts"] - T0, r["reason"])
    return (o.kind, o.key)


def flat(per_step: list[list[Output]]) -> list[tuple]:
    return [compact(o) for outs in per_step for o in outs]


def pos(pid: str, at: int, delay: int, kind: str = "positive", version: int = 1,
        twin: str | None = None) -> list:
    if twin is None:
        return [("label", pid, kind, 1, version, True, at, delay), ("te", pid, kind, True)]
    return [("label", pid, kind, 1, version, True, at, delay, "shadow", twin),
            ("te", pid, kind, False)]


def neg(pid: str, at: int, kind: str = "negative", version: int = 1,
        twin: str | bool | None = False) -> list:
    if twin is False:
        return [("label", pid, kind, 0, version, True, at, None), ("te", pid, kind, True)]
    return [("label", pid, kind, 0, version, True, at, None, "shadow", twin),
            ("te", pid, kind, False)]


# (id, mode, steps, expected flattened outputs)
CASES = [
    ("shadow gets the served twin's positive", "wait",
     [P("p1", "i1", 0, "r1"), S("s1", "i1", 0, "r1"), C("i1", 100)],
     pos("p1", 100, 100) + pos("s1", 100, 100, twin="p1")),
    ("shadow gets the served twin's negative", "wait",
     [P("p1", "i1", 0, "r1"), S("s1", "i1", 0, "r1")],
     neg("p1", 1000) + neg("s1", 1000, twin="p1")),
    ("two shadow models of one impression both follow it (in id order)", "wait",
     [P("p1", "i1", 0, "r1"), S("s2", "i1", 0, "r1"), S("s1", "i1", 0, "r1"), C("i1", 100)],
     pos("p1", 100, 100) + pos("s1", 100, 100, twin="p1") + pos("s2", 100, 100, twin="p1")),
    ("a shadow logged before its twin (within the skew) follows it", "wait",
     [S("s1", "i1", 0, "r1"), P("p1", "i1", 50, "r1"), C("i1", 100, rid="r1")],
     pos("p1", 100, 50) + pos("s1", 100, 50, twin="p1")),
    ("a click naming the shadow goes to its served twin, at its release", "wait",
     [P("p1", "i1", 0, "r1"), S("s1", "i1", 0, "r1"), C("i1", 100, pid="s1", wm=100),
      W(150), W(151)],
     pos("p1", 100, 100) + pos("s1", 100, 100, twin="p1")),
    ("a click naming the shadow before the shadow arrives still goes to the twin", "wait",
     [P("p1", "i1", 0, "r1"), C("i1", 10, pid="s1", wm=0), S("s1", "i1", 0, "r1", wm=0)],
     pos("p1", 10, 10) + pos("s1", 10, 10, twin="p1")),
    ("the request_id tier skips shadows", "wait",
     [P("p1", "i1", 0, "r1"), S("s1", "i2", 10, "r2"), C("i2", 100, rid="r2")],
     [("unattributed", 100, "unknown_request_id"), *neg("p1", 1000),
      *neg("s1", 1010, twin=None)]),
    ("a request_id only a shadow has falls back to the item's served prediction", "wait",
     [P("p1", "i1", 0, "r1"), S("s1", "i1", 10, "r2"), C("i1", 100, rid="r2")],
     pos("p1", 100, 100) + neg("s1", 1010, twin=None)),
    ("the latest-by-item fallback skips a later shadow", "wait",
     [P("p1", "i1", 0, "r1"), S("s1", "i1", 20, "r9"), C("i1", 100)],
     pos("p1", 100, 100) + neg("s1", 1020, twin=None)),
    ("a shadow is never attributed, even as the only prediction of its item", "wait",
     [S("s1", "i1", 0, "r1"), C("i1", 100)],
     [("unattributed", 100, "no_prediction"), *neg("s1", 1000, twin=None)]),
    ("a click naming a shadow without twin is unattributed, with its reason", "wait",
     [S("s1", "i1", 0, "r1"), C("i1", 100, pid="s1")],
     [("unattributed", 100, "shadow_prediction_id"), *neg("s1", 1000, twin=None)]),
    ("a click naming a twinless shadow falls back to a served prediction of its item", "wait",
     [P("p1", "i1", 0, "r1"), S("s1", "i1", 10, "r2"), C("i1", 100, pid="s1")],
     pos("p1", 100, 100) + neg("s1", 1010, twin=None)),
    ("shadow more than the skew before its served prediction has no twin", "wait",
     [S("s1", "i1", 0, "r1"), P("p1", "i1", 51, "r1"), C("i1", 100)],
     [*pos("p1", 100, 49), *neg("s1", 1000, twin=None)]),
    ("shadow arriving after its twin's click: positive at once, at its own ts", "wait",
     [P("p1", "i1", 0, "r1"), C("i1", 100), S("s1", "i1", 150, "r1")],
     pos("p1", 100, 100) + pos("s1", 150, 100, twin="p1")),
    ("shadow arriving after its twin's window closed, while it is remembered", "wait",
     [P("p1", "i1", 0, "r1"), W(1100), S("s1", "i1", 1200, "r1")],
     neg("p1", 1000) + neg("s1", 1200, twin="p1")),
    ("shadow after its twin is forgotten (window + horizon) has none", "wait",
     [P("p1", "i1", 0, "r1"), S("s1", "i1", 1500, "r1")],
     neg("p1", 1000) + neg("s1", 2500, twin=None)),
    ("several served predictions of the request and item: the latest", "wait",
     [P("p1", "i1", 0, "r1"), P("p2", "i1", 5, "r1"), S("s1", "i1", 5, "r1"),
      C("i1", 100, pid="p1")],
     pos("p1", 100, 100) + neg("p2", 1005) + neg("s1", 1005, twin="p2")),
    ("shadow extra and late clicks: none, they stay on the twin", "wait",
     [P("p1", "i1", 0, "r1"), S("s1", "i1", 0, "r1"), C("i1", 100), C("i1", 200, pid="s1"),
      C("i1", 1200, pid="s1")],
     [*pos("p1", 100, 100), *pos("s1", 100, 100, twin="p1"), ("extra_click", "p1", 200, 1),
      ("late_click", "p1", 1200, 1)]),
    ("early_negative: the shadow's own early negative, then the twin's positive",
     "early_negative",
     [P("p1", "i1", 0, "r1"), S("s1", "i1", 0, "r1"), C("i1", 100)],
     [("label", "p1", "early_negative", 0, 1, False, 0, None),
      ("label", "s1", "early_negative", 0, 1, False, 0, None, "shadow"),
      *pos("p1", 100, 100, "late_positive", 2), *pos("s1", 100, 100, "late_positive", 2, "p1")]),
    ("early_negative: negative at the twin's close", "early_negative",
     [P("p1", "i1", 0, "r1"), S("s1", "i1", 0, "r1")],
     [("label", "p1", "early_negative", 0, 1, False, 0, None),
      ("label", "s1", "early_negative", 0, 1, False, 0, None, "shadow"),
      *neg("p1", 1000, "negative", 2), *neg("s1", 1000, "negative", 2, "p1")]),
    ("observe: the twin's observed positive", "observe_then_correct",
     [P("p1", "i1", 0, "r1"), S("s1", "i1", 0, "r1"), C("i1", 100)],
     pos("p1", 200, 100, "observed_positive") + pos("s1", 200, 100, "observed_positive",
                                                   twin="p1")),
    ("observe: the twin's observed negative, then its correction", "observe_then_correct",
     [P("p1", "i1", 0, "r1"), S("s1", "i1", 0, "r1"), C("i1", 500)],
     [("label", "p1", "observed_negative", 0, 1, False, 200, None),
      ("label", "s1", "observed_negative", 0, 1, False, 200, None, "shadow"),
      *pos("p1", 500, 500, "late_positive", 2), *pos("s1", 500, 500, "late_positive", 2, "p1")]),
    ("observe: the twin's real negative", "observe_then_correct",
     [P("p1", "i1", 0, "r1"), S("s1", "i1", 0, "r1")],
     [("label", "p1", "observed_negative", 0, 1, False, 200, None),
      ("label", "s1", "observed_negative", 0, 1, False, 200, None, "shadow"),
      *neg("p1", 1000, "real_negative", 2), *neg("s1", 1000, "real_negative", 2, "p1")]),
    ("observe: a late shadow catches up with both of its twin's records",
     "observe_then_correct",
     [P("p1", "i1", 0, "r1"), C("i1", 500), S("s1", "i1", 600, "r1")],
     [("label", "p1", "observed_negative", 0, 1, False, 200, None),
      *pos("p1", 500, 500, "late_positive", 2),
      ("label", "s1", "observed_negative", 0, 1, False, 600, None, "shadow"),
      *pos("s1", 600, 500, "late_positive", 2, "p1")]),
    ("observe: a shadow without twin closes on its own deadlines", "observe_then_correct",
     [S("s1", "i1", 0, "r1"), C("i1", 100)],
     [("unattributed", 100, "no_prediction"),
      ("label", "s1", "observed_negative", 0, 1, False, 200, None, "shadow"),
      *neg("s1", 1000, "real_negative", 2, None)]),
]


@pytest.mark.parametrize("roundtrip", [False, True], ids=["live", "restored-every-step"])
@pytest.mark.parametrize(("mode", "steps", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_shadow_cases(mode: str, steps: list[tuple], expected: list[tuple],
                      roundtrip: bool) -> None:
    assert flat(run_steps(cfg(mode), steps, roundtrip)) == expected


@pytest.mark.parametrize("mode", ["wait", "early_negative"])
def test_eager_click_on_the_twin_reaches_the_shadow(mode: str) -> None:
    steps = [P("p1", "i1", 0, "r1", wm=0), S("s1", "i1", 0, "r1", wm=0),
             C("i1", 300, pid="p1", wm=51)]
    per_step = run_steps(cfg(mode, eager_clicks=True), steps)
    kind, version = ("positive", 1) if mode == "wait" else ("late_positive", 2)
    assert [compact(o) for o in per_step[2]] == (pos("p1", 300, 300, kind, version)
                                                 + pos("s1", 300, 300, kind, version, "p1"))


def test_an_eager_click_naming_a_shadow_waits_for_its_release() -> None:
    steps = [P("p1", "i1", 0, "r1", wm=0), S("s1", "i1", 0, "r1", wm=0),
             C("i1", 300, pid="s1", wm=0), W(350), W(351)]
    per_step = run_steps(cfg(eager_clicks=True), steps)
    assert [len(s) for s in per_step[:5]] == [0, 0, 0, 0, 4]
    assert flat(per_step) == pos("p1", 300, 300) + pos("s1", 300, 300, twin="p1")


def test_a_shadow_is_in_no_attribution_index_and_holds_the_label_watermark() -> None:
    m = Labels(cfg())
    m.on_prediction(P("p1", "i1", 0, "r1")[1], T0)
    m.on_prediction(S("s1", "i1", 0, "r1")[1], T0)
    table = m.engine.table
    shadow = table.by_pid["s1"]
    assert all(shadow not in rows for rows in table.by_request.values())
    assert all(shadow not in rows for rows in table.by_item.values())
    assert table.n_shadows == 1
    m.on_watermark(T0 + SKEW + 1)  # linked: no deadline of its own, still open
    assert m.next_deadline_ms() == T0 + WINDOW + SKEW
    assert m.earliest_open_ts_ms() == T0
    out = m.on_watermark(T0 + WINDOW + SKEW)
    assert [(o.key, o.record["final"]) for o in out if o.kind == "label"] == [
        ("p1", True), ("s1", True)]
    assert m.earliest_open_ts_ms() is None
    m.on_watermark(END)
    assert m.is_empty() and table.n_shadows == 0


def test_the_common_path_keeps_no_shadow_state() -> None:
    # no shadow: no twin field in the changelog beyond its null, no followers
    m = Labels(cfg())
    m.on_prediction(P("p1", "i1", 0, "r1")[1], T0)
    assert m.engine.table.n_shadows == 0 and not m.engine._followers
    (value,) = m.changelog.values()
    assert value.endswith(b",null]")


def test_shadow_training_example_carries_served_false_and_the_twin() -> None:
    engine = LabelEngine(cfg(), item_snapshots=False)
    served = Prediction("p1", "r1", "u", "i1", "m", 0.5, T0, features={"x": 1.0})
    shadow = Prediction("s1", "r1", "u", "i1", "m2", 0.25, T0, features={"x": 1.0},
                        served=False)
    engine.add_predictions(prediction_columns([served, shadow], [0, 1], [{"a": 1}, {"a": 1}]))
    engine.add_click(Click("u", "i1", T0 + 40), b'{"user_id":"u","item_id":"i1","ts":0}', 2,
                     T0 + 40)
    engine.advance(T0 + SKEW + 1)
    outs = engine.take_outputs()
    out = {(o.kind, o.key): orjson.loads(o.value) for o in outs}
    (raw,) = [o.value for o in outs if o.kind == "training_example" and o.key == "s1"]
    assert raw.count(b'"served"') == 1  # the prediction's own field, not repeated
    label, example = out[("label", "s1")], out[("training_example", "s1")]
    assert label["served"] is False and label["served_prediction_id"] == "p1"
    assert (label["label"], label["kind"], label["label_ts"], label["delay_ms"]) == (
        1, "positive", T0 + 40, 40)
    assert example["served"] is False and example["served_prediction_id"] == "p1"
    assert example["score"] == 0.25 and example["model_id"] == "m2"
    assert "served" not in out[("label", "p1")]
    assert set(engine.delays.snapshot()) == {"m"}  # click delays: the served model's clicks


def test_restore_from_records_without_a_twin_field() -> None:
    # changelog records of an older version (no trailing twin field) still restore
    m = Labels(cfg())
    m.on_prediction(P("p1", "i1", 0, "r1")[1], T0)
    (key, value), = m.changelog.items()
    assert value.endswith(b",null]")
    again = LabelEngine(cfg(), item_snapshots=False)
    again.restore([(key, value[:-len(b",null]")] + b"]")])
    assert again.table.by_pid.keys() == {"p1"} and again.table.n_shadows == 0
    assert np.array_equal(again.table.due[again.table.live], [T0 + WINDOW + SKEW])


def test_a_linked_shadow_restored_without_its_twins_final_record_catches_up() -> None:
    # a changelog holding the twin's final state but the shadow's earlier one (never
    # written so by the engine, whose deltas are per batch) still ends in one final label
    m = Labels(cfg("observe_then_correct"))
    m.on_prediction(P("p1", "i1", 0, "r1")[1], T0)
    m.on_prediction(S("s1", "i1", 0, "r1")[1], T0)
    m.on_watermark(T0 + OBSERVE + SKEW)  # both observed_negative, linked
    stale_shadow = m.changelog[b"Ps1"]
    m.on_click(C("i1", 500)[1], T0 + 501)  # both late_positive
    log = {**m.changelog, b"Ps1": stale_shadow}
    again = LabelEngine(cfg("observe_then_correct"), item_snapshots=False)
    again.restore(log.items())
    again.advance(END)
    out = [orjson.loads(o.value) for o in again.take_outputs() if o.kind == "label"]
    assert [(r["prediction_id"], r["kind"], r["label_version"], r["final"]) for r in out] == [
        ("s1", "late_positive", 2, True)]
    assert again.is_empty()


def test_a_click_naming_a_shadow_is_taken_at_click_ts_plus_skew_plus_one() -> None:
    steps = [P("p1", "i1", 0, "r1"), S("s1", "i1", 0, "r1"), C("i1", 100, pid="s1", wm=101),
             W(150), W(151)]
    per_step = run_steps(cfg(), steps)
    assert [len(s) for s in per_step[:5]] == [0, 0, 0, 0, 4]  # p1 and s1: label + example
