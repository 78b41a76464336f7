"""Hostile input never stops a worker: one worker run over the whole table, then per-case checks.

One worker (its own topics, data folder and web port) is fed, on a real broker:
garbage produced straight onto every partition of the two internal topics (items
repartition, item snapshots) before it starts, then a log of good records on
``clicks`` and ``predictions`` with every bad case of ``hostile_cases`` interleaved
(each after two good ones), then, once all of that is out, a tail of good records.
The assertions, case by case: exactly one dead letter per bad record, with its
origin (topic, partition, offset as the producer was told), the raw bytes and a
reason naming the problem; no other dead letter; the process still alive and
ready; every feature record, final label and training example of the good records
equal to the plain-Python oracles of ``tests/streams`` (so nothing bad leaked into
state and nothing good was lost).
"""

from __future__ import annotations

import base64
import contextlib
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from engine.records import DEAD_LETTER_KEY_BYTES, DEAD_LETTER_TEXT_BYTES, DEAD_LETTER_VALUE_BYTES
from freshet.settings import Settings
from freshet.topics import create_topics
from streams.kafka import topic_names
from tests.streams import hostile_cases as hc
from tests.streams import oracle
from tests.streams.label_oracle import final_labels
from tests.streams.support import Worker, consume
from tests.streams.test_features_stream import check_feature_records, make_settings
from tests.streams.test_labels_stream import check_snapshot, finals

pytestmark = pytest.mark.integration

PARTITIONS = 2
WINDOW, SKEW, HORIZON = 5_000, 1_000, 3_600_000
ENV = {"FRESHET_PARTITIONS": str(PARTITIONS), "FRESHET_LABEL_WINDOW_MS": str(WINDOW),
       "FRESHET_LABEL_SKEW_MS": str(SKEW), "FRESHET_LABEL_OBSERVE_MS": "2000",
       "FRESHET_IDLE_ADVANCE_MS": "2000", "FRESHET_ALLOWED_LATENESS_MS": "1000",
       "FRESHET_COMMIT_INTERVAL_MS": "100"}
#: the tail starts an hour of event time later: wall-clock idle advance never makes it late
TAIL_TS = hc.T0 + 3_600_000
OUTPUTS = ["dead_letters", "features_user", "features_item", "labels", "training_examples"]


@dataclass
class Run:
    """What the run produced and read back."""

    settings: Settings
    expected: dict[tuple[str, int, int], hc.Expected]
    events: list[oracle.Event]  # every good event, tail included
    phase1: list[oracle.Event]
    got: dict[str, list[Any]]
    alive_after_hostile: bool
    alive_at_end: bool
    ready_at_end: int
    stalled: str | None  # why the outputs never became complete (None: they did)


def _produce(settings: Settings, records: list[tuple[str, int | None, bytes | None,
                                                     bytes | None]]) -> list[tuple[int, int]]:
    """Produce (broker topic, partition or None, key, value) in order; (partition, offset)s."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers,
                         "partitioner": "murmur2_random", "enable.idempotence": True,
                         "linger.ms": 5, "message.max.bytes": 1_000_000})
    out: list[tuple[int, int] | None] = [None] * len(records)
    errors: list[str] = []

    def on_delivery(i: int) -> Callable[[Any, Any], None]:
        def cb(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                out[i] = (msg.partition(), msg.offset())
        return cb

    for i, (topic, partition, key, value) in enumerate(records):
        if partition is None:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery(i))
        else:
            producer.produce(topic, value=value, key=key, partition=partition,
                             on_delivery=on_delivery(i))
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors
    assert None not in out
    return [o for o in out if o is not None]


def _http(settings: Settings, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}{path}",
                                    timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def _origin(msg: Any) -> tuple[str, int, int]:
    src = orjson.loads(msg.value())["source"]
    return (src["logical"], src["partition"], src["offset"])


def _covered(got: dict[str, list[Any]], events: list[oracle.Event]) -> bool:
    """Every key's latest feature record covers all of its good events."""
    for entity, by_key in (("user", oracle.events_by_user(events)),
                           ("item", oracle.events_by_item(events))):
        latest = {}
        for msg in got[f"features_{entity}"]:
            rec = orjson.loads(msg.value())
            latest[rec["id"]] = rec["source"]
        for key, evs in by_key.items():
            have = latest.get(key, {})
            if any(have.get(k, -1) < v for k, v in oracle.final_sources(entity, evs).items()):
                return False
    return True


def _settled(complete: Callable[[dict[str, list[Any]]], bool],
             quiet_s: float = 2.0) -> Callable[[dict[str, list[Any]]], bool]:
    """``complete``, then ``quiet_s`` more of reading: a repeat would show up meanwhile."""
    since: list[float] = []

    def done(got: dict[str, list[Any]]) -> bool:
        if not since and complete(got):
            since.append(time.monotonic())
        return bool(since) and time.monotonic() - since[0] >= quiet_s
    return done


def _read(settings: Settings, complete: Callable[[dict[str, list[Any]]], bool],
          timeout_s: float, worker: Worker) -> tuple[dict[str, list[Any]], str | None]:
    """The outputs once ``complete`` (and settled), or, if it never is, what there is then.

    A timeout is not raised here: the per-case tests then say which records went wrong.
    """
    try:
        return consume(settings, OUTPUTS, _settled(complete), timeout_s, worker), None
    except AssertionError as exc:
        why = str(exc)[:2000]
    seen: list[tuple[int, float]] = []

    def drained(got: dict[str, list[Any]]) -> bool:  # nothing new for 2 s
        n = sum(map(len, got.values()))
        if not seen or seen[-1][0] != n:
            seen.append((n, time.monotonic()))
        return time.monotonic() - seen[-1][1] >= 2.0
    return consume(settings, OUTPUTS, drained, 60, worker), why


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("hostile")
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    settings = make_settings(kafka_bootstrap, prefix, tmp / "data", **ENV)
    create_topics(settings)
    names = topic_names(settings)
    expected: dict[tuple[str, int, int], hc.Expected] = {}

    # internal topics first: the worker meets the garbage before any frame of its own
    internal = [(logical, p, name, value)
                for logical, cases in (("items_repartition", hc.REPARTITION_CASES),
                                       ("item_snapshots", hc.SNAPSHOT_CASES))
                for p in range(PARTITIONS) for name, value in cases]
    # keyed, to show a dead letter keeps an internal record's key too (half of them:
    # and a null key stays null)
    keys = [f"{name}@{p}".encode() if i % 2 else None
            for i, (_, p, name, _) in enumerate(internal)]
    placed = _produce(settings, [(names[lg], p, key, v)
                                 for (lg, p, _, v), key in zip(internal, keys, strict=True)])
    for (logical, _, name, value), key, (part, off) in zip(internal, keys, placed, strict=True):
        expected[(logical, part, off)] = hc.Expected(f"{logical}/{name}", logical, part, off,
                                                     key, value, hc.INTERNAL_REASONS[logical])

    goods = hc.good_log(150, hc.T0, seed=7, tag="good")
    log = hc.hostile_log(goods)
    tail = [hc.Good(topic, body) for i, user in enumerate(hc.USERS) for topic, body in (
        (hc.PREDICTIONS, hc.prediction(10_000 + i, user, hc.ITEMS[i % 4], TAIL_TS + 10 * i, 0.5)
         | {"prediction_id": f"tail-pred-{i}"}),
        (hc.CLICKS, hc.click(user, hc.ITEMS[i % 4], TAIL_TS + 10 * i + 5)))]

    def events_of(records: list[hc.Good | hc.Bad], placed: list[tuple[int, int]]
                  ) -> list[oracle.Event]:
        out = []
        for rec, (part, off) in zip(records, placed, strict=True):
            if isinstance(rec, hc.Good):
                out.append(oracle.Event(rec.topic, part, off, rec.body))
            else:
                expected[(rec.topic, part, off)] = hc.Expected(
                    f"{rec.topic}/{rec.case}", rec.topic, part, off, rec.key, rec.value,
                    rec.reason)
        return out

    def as_input(records: list[hc.Good | hc.Bad]) -> list[tuple[str, int | None, bytes | None,
                                                                bytes | None]]:
        return [(settings.topic(r.topic), None, r.key, r.value) for r in records]

    worker = Worker(settings, tmp / "worker.log")
    worker.start()
    try:
        phase1 = events_of(list(log), _produce(settings, as_input(list(log))))
        assert oracle.late_events(phase1, settings.allowed_lateness_ms) == []
        pids = {e.body["prediction_id"] for e in phase1 if e.source == hc.PREDICTIONS}

        def complete(got: dict[str, list[Any]]) -> bool:
            return ({_origin(m) for m in got["dead_letters"]} >= set(expected)
                    and _covered(got, phase1) and set(finals(got["labels"])) >= pids
                    and {orjson.loads(m.value())["prediction_id"]
                         for m in got["training_examples"]} >= pids)

        stalled = _read(settings, complete, 60, worker)[1]
        alive_after_hostile = worker.proc is not None and worker.proc.poll() is None

        tail_placed = _produce(settings, as_input(list(tail)))
        events = phase1 + events_of(list(tail), tail_placed)
        got, tail_stalled = _read(settings, lambda g: _covered(g, events), 30, worker)
        alive = worker.proc is not None and worker.proc.poll() is None
        ready = _http(settings, "/ready")
    finally:
        worker.stop()
    yield Run(settings, expected, events, phase1, got, alive_after_hostile, alive, ready,
              stalled or tail_stalled)


def test_the_worker_stays_up_and_ready(run: Run) -> None:
    assert run.alive_after_hostile, "the worker died on the hostile records"
    assert run.alive_at_end and run.ready_at_end == 200
    assert run.stalled is None, run.stalled


def test_one_dead_letter_per_bad_record_and_nothing_else(run: Run) -> None:
    origins = [_origin(m) for m in run.got["dead_letters"]]
    repeated = {o for o in origins if origins.count(o) > 1}
    assert not repeated, f"dead-lettered more than once: {sorted(repeated)}"
    extra = set(origins) - set(run.expected)
    assert not extra, f"dead letters for records that were good: {sorted(extra)}"
    assert len(origins) == len(run.expected)
    assert len(run.expected) == 2 * (len(hc.REPARTITION_CASES) + len(hc.SNAPSHOT_CASES)) \
        + sum(len(c.topics) for c in hc.INPUT_CASES)


def _dead_letters(run: Run, case: str) -> list[tuple[hc.Expected, dict[str, Any], Any]]:
    wanted = {k: e for k, e in run.expected.items() if e.case == case}
    assert wanted, case
    by_origin = {_origin(m): m for m in run.got["dead_letters"]}
    out = []
    for origin, exp in sorted(wanted.items()):
        msg = by_origin.get(origin)
        assert msg is not None, f"{case}: no dead letter for {origin}"
        out.append((exp, orjson.loads(msg.value()), msg))
    return out


def _check_raw(what: str, want: bytes | None, b64: str | None, size: int | None,
               limit: int) -> None:
    """The raw bytes whole up to the documented ``limit``; beyond it that prefix and the size."""
    if want is None:
        assert b64 is None and size is None, what
        return
    assert b64 is not None, what
    have = base64.b64decode(b64)
    if len(want) <= limit:
        assert have == want and size is None, what
    else:
        assert have == want[:limit] and size == len(want), what


def _check_one(run: Run, case: str) -> None:
    for exp, dl, msg in _dead_letters(run, case):
        src = dl["source"]
        topic = (run.settings.topic(exp.logical) if exp.logical in ("clicks", "predictions")
                 else topic_names(run.settings)[exp.logical])
        assert src == {"topic": topic, "logical": exp.logical, "partition": exp.partition,
                       "offset": exp.offset}
        assert dl["schema_version"] == 1
        assert exp.reason_ok(dl["reason"]), (case, dl["reason"], exp.reason)
        _check_raw(f"{case} value", exp.value, dl["value_b64"], dl.get("value_size"),
                   DEAD_LETTER_VALUE_BYTES)
        _check_raw(f"{case} key", exp.key, dl["key_b64"], dl.get("key_size"),
                   DEAD_LETTER_KEY_BYTES)
        # keyed like the input (cut like key_b64)
        assert msg.key() == (None if exp.key is None else exp.key[:DEAD_LETTER_KEY_BYTES])
        text = None
        if exp.value is not None and len(exp.value) <= DEAD_LETTER_TEXT_BYTES:
            with contextlib.suppress(UnicodeDecodeError):
                text = exp.value.decode()
        assert dl["value_text"] == text


INPUT_IDS = [f"{t}/{c.name}" for c in hc.INPUT_CASES for t in c.topics]
INTERNAL_IDS = [f"{lg}/{name}" for lg, cases in (("items_repartition", hc.REPARTITION_CASES),
                                                  ("item_snapshots", hc.SNAPSHOT_CASES))
                for name, _ in cases]


@pytest.mark.parametrize("case", INPUT_IDS)
def test_bad_input_record_is_dead_lettered_with_reason_and_origin(run: Run, case: str) -> None:
    _check_one(run, case)


@pytest.mark.parametrize("case", INTERNAL_IDS)
def test_garbage_on_an_internal_topic_is_dead_lettered(run: Run, case: str) -> None:
    _check_one(run, case)


def test_good_records_give_the_oracles_features(run: Run) -> None:
    keyed = {"user": oracle.events_by_user(run.events), "item": oracle.events_by_item(run.events)}
    for entity in ("user", "item"):
        ids = check_feature_records(entity, run.got[f"features_{entity}"], keyed[entity])
        assert ids == set(keyed[entity])
    assert _covered(run.got, run.events)


def test_good_predictions_get_the_oracles_labels_and_examples(run: Run) -> None:
    expected = final_labels(run.phase1, WINDOW, SKEW, HORIZON)
    assert sum(1 for e in expected.values() if e["label"] == 1) > 20
    labels = finals(run.got["labels"])
    for pid, want in expected.items():
        assert {k: labels[pid][k] for k in want} == want, pid
    keyed = {"user": oracle.events_by_user(run.events), "item": oracle.events_by_item(run.events)}
    bodies = {e.body["prediction_id"]: e.body for e in run.phase1 if e.source == "predictions"}
    examples: dict[str, dict[str, Any]] = {}
    for msg in run.got["training_examples"]:
        ex = orjson.loads(msg.value())  # raises if garbage reached an output
        assert examples.setdefault(ex["prediction_id"], ex) == ex
    assert set(bodies) <= set(examples)
    for pid, body in bodies.items():
        ff = examples[pid]["freshet_features"]
        check_snapshot("user", ff["user"], keyed["user"], body["user_id"])
        check_snapshot("item", ff["item"], keyed["item"], body["item_id"])
