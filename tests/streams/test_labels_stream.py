"""Natural labels end to end on the real broker, compared with an independent oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from freshet.generator import GeneratorConfig, generate
from freshet.topics import create_topics
from tests.streams import oracle
from tests.streams.label_oracle import final_labels
from tests.streams.support import consume, produce_log, running_worker
from tests.streams.test_features_stream import make_settings

pytestmark = pytest.mark.integration

WINDOW, SKEW, HORIZON = 20_000, 2_000, 3_600_000
LABEL_ENV = {"FRESHET_LABEL_WINDOW_MS": str(WINDOW), "FRESHET_LABEL_SKEW_MS": str(SKEW),
             "FRESHET_LABEL_OBSERVE_MS": "5000", "FRESHET_IDLE_ADVANCE_MS": "3000"}


def finals(msgs: list[Any]) -> dict[str, dict[str, Any]]:
    """Final labels by prediction id; (prediction_id, label_version) repeats dropped."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for msg in msgs:
        rec = orjson.loads(msg.value())
        assert msg.key() == rec["prediction_id"].encode()
        key = (rec["prediction_id"], rec["label_version"])
        assert seen.setdefault(key, rec) == rec, "a repeat must be identical"
    out: dict[str, dict[str, Any]] = {}
    for rec in seen.values():
        if rec["final"]:
            assert rec["prediction_id"] not in out, f"two final labels: {rec}"
            out[rec["prediction_id"]] = rec
    return out


def in_window_click_delays(events: list[oracle.Event], pid: str, window: int,
                           skew: int) -> set[int]:
    """Delays (clamped at 0) of the clicks on a prediction's user and item in its window."""
    pred = next(e.body for e in events if e.source == "predictions"
                and e.body["prediction_id"] == pid)
    return {max(0, e.body["ts"] - pred["ts"]) for e in events if e.source == "clicks"
            and e.body["user_id"] == pred["user_id"] and e.body["item_id"] == pred["item_id"]
            and pred["ts"] - skew <= e.body["ts"] < pred["ts"] + window}


def check_snapshot(entity: str, snap: dict[str, Any], keyed: dict[str, list[oracle.Event]],
                   key: str) -> None:
    compute = oracle.user_features if entity == "user" else oracle.item_features
    inc = oracle.included(entity, keyed[key], snap["source"])
    as_of, expected = compute(inc)
    assert snap["as_of_ts"] == as_of
    assert oracle.same_features(snap["features"], expected), (snap, expected)


@pytest.mark.parametrize("eager", [False, True], ids=["watermark-clicks", "eager-clicks"])
def test_every_prediction_gets_the_oracles_final_label(kafka_bootstrap: str, unique_prefix: str,
                                                      tmp_path: Path, eager: bool) -> None:
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path, **LABEL_ENV,
                             FRESHET_LABEL_EAGER_CLICKS=str(eager).lower())
    create_topics(settings)
    records = list(generate(GeneratorConfig(seed=5, users=40, items=30, predictions=800,
                                            malformed_fraction=0.02)))
    with running_worker(settings, tmp_path / "worker.log") as worker:
        log = produce_log(settings, records)
        events = oracle.valid_events(log)
        assert oracle.late_events(events, settings.allowed_lateness_ms) == []
        expected = final_labels(events, WINDOW, SKEW, HORIZON)
        assert sum(1 for e in expected.values() if e["label"] == 1) > 20

        def done(got: dict[str, list[Any]]) -> bool:
            return (len(finals(got["labels"])) >= len(expected)
                    and len({orjson.loads(m.value())["prediction_id"]
                             for m in got["training_examples"]}) >= len(expected))

        got = consume(settings, ["labels", "training_examples", "label_watermarks",
                                 "unattributed_clicks", "late_clicks"], done,
                      timeout_s=180, worker=worker)

    labels = finals(got["labels"])
    assert set(labels) == set(expected)
    for pid, want in expected.items():
        have = {k: labels[pid][k] for k in want}
        if eager and want["label"] == 1:
            # which click counts as first may follow arrival order: any in-window click
            # of that user on that item is a valid one
            delays = in_window_click_delays(events, pid, WINDOW, SKEW)
            assert have["delay_ms"] in delays, (pid, have, delays)
            assert have["label_ts"] - have["delay_ms"] == want["label_ts"] - want["delay_ms"]
            have = {k: v for k, v in have.items() if k not in ("delay_ms", "label_ts")}
            want = {k: v for k, v in want.items() if k not in ("delay_ms", "label_ts")}
        assert have == want, (pid, have, want)

    keyed = {"user": oracle.events_by_user(events), "item": oracle.events_by_item(events)}
    examples: dict[str, dict[str, Any]] = {}
    for msg in got["training_examples"]:
        ex = orjson.loads(msg.value())
        examples.setdefault(ex["prediction_id"], ex)
    assert set(examples) == set(expected)
    bodies = {e.body["prediction_id"]: e.body for e in events if e.source == "predictions"}
    for pid, ex in examples.items():
        pred = bodies[pid]
        assert ex["label"] == expected[pid]["label"] and ex["kind"] == expected[pid]["kind"]
        assert ex.get("features") == pred.get("features")  # what the model logged
        ff = ex["freshet_features"]
        check_snapshot("user", ff["user"], keyed["user"], pred["user_id"])
        check_snapshot("item", ff["item"], keyed["item"], pred["item_id"])
        # point in time: the snapshot includes the prediction itself
        assert ff["user"]["source"]["predictions"] >= 0
    assert got["label_watermarks"], "label watermarks are published"
