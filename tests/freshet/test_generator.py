"""Tests of the synthetic stream generator (freshet.generator) and the producer's
broker-free behaviour (freshet.producer)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from events.contracts import Click, ContractError, Prediction, decode_click, decode_prediction
from freshet.generator import (
    MALFORMED_KINDS,
    GeneratedRecord,
    GeneratorConfig,
    generate,
    read_jsonl,
    write_jsonl,
)
from freshet.producer import ProduceError, produce, producer_config

if TYPE_CHECKING:
    from confluent_kafka import Message

MINUTE_MS = 60_000


@pytest.fixture(scope="module")
def records() -> list[GeneratedRecord]:
    return list(generate(GeneratorConfig(predictions=30_000)))


@pytest.fixture(scope="module")
def decoded(records: list[GeneratedRecord]) -> tuple[list[Prediction], list[Click]]:
    preds = [decode_prediction(r.value) for r in records if r.topic == "predictions"]
    clicks = [decode_click(r.value) for r in records if r.topic == "clicks"]
    return preds, clicks


@pytest.fixture(scope="module")
def dirty() -> list[GeneratedRecord]:
    return list(generate(GeneratorConfig(predictions=20_000, malformed_fraction=0.05, seed=3)))


def _decode(record: GeneratedRecord) -> Prediction | Click:
    if record.topic == "predictions":
        return decode_prediction(record.value)
    return decode_click(record.value)


# --- determinism -----------------------------------------------------------------


def test_same_config_gives_byte_identical_output() -> None:
    config = GeneratorConfig(predictions=3_000, malformed_fraction=0.05)
    first = list(generate(config))
    second = list(generate(GeneratorConfig(predictions=3_000, malformed_fraction=0.05)))
    assert first == second
    assert b"".join(r.value for r in first) == b"".join(r.value for r in second)


def test_another_seed_gives_other_output() -> None:
    first = [r.value for r in generate(GeneratorConfig(predictions=1_000, seed=1))]
    second = [r.value for r in generate(GeneratorConfig(predictions=1_000, seed=2))]
    assert first != second
    assert not set(first) & set(second)  # ids embed the seed


# --- shape of the valid stream ---------------------------------------------------


def test_exact_prediction_count_and_unique_ids(
    records: list[GeneratedRecord], decoded: tuple[list[Prediction], list[Click]]
) -> None:
    preds, clicks = decoded
    assert len(preds) == 30_000
    assert len({p.prediction_id for p in preds}) == len(preds)
    assert len({c.click_id for c in clicks}) == len(clicks)
    assert all(r.malformed is None for r in records)


def test_valid_records_decode_with_matching_key_and_ts(records: list[GeneratedRecord]) -> None:
    for record in records:
        event = _decode(record)
        assert record.key == event.user_id.encode()
        assert record.ts == event.ts
        assert b"\n" not in record.value


def test_requests_serve_ranked_slates(decoded: tuple[list[Prediction], list[Click]]) -> None:
    preds, _ = decoded
    config = GeneratorConfig()
    by_request: dict[str, list[Prediction]] = defaultdict(list)
    for p in preds:
        by_request[p.request_id].append(p)
    sizes: Counter[int] = Counter()
    for slate in by_request.values():
        slate.sort(key=lambda p: p.position or 0)
        assert [p.position for p in slate] == list(range(len(slate)))
        assert len({(p.user_id, p.ts, p.model_id) for p in slate}) == 1
        assert len({p.item_id for p in slate}) == len(slate)
        scores = [p.score for p in slate]
        assert scores == sorted(scores, reverse=True)  # served in score order
        sizes[len(slate)] += 1
    assert len(by_request) > 1_000
    # every size in range (the very last request may be cut short)
    assert sum(n for size, n in sizes.items()
               if not config.slate_min <= size <= config.slate_max) <= 1
    assert {p.model_id for p in preds} == {"model-a", "model-b"}


def test_users_come_in_sessions(decoded: tuple[list[Prediction], list[Click]]) -> None:
    preds, _ = decoded
    request_ts: dict[str, set[int]] = defaultdict(set)
    for p in preds:
        request_ts[p.user_id].add(p.ts)
    gaps = np.array([b - a for ts in request_ts.values()
                     for a, b in zip(sorted(ts), sorted(ts)[1:], strict=False)])
    short, long = (gaps < 2 * MINUTE_MS).mean(), (gaps > 10 * MINUTE_MS).mean()
    assert short > 0.5, "most gaps are within a session"
    assert long > 0.1, "sessions are separated by idle gaps"
    assert gaps.min() >= 1_000


def test_item_popularity_is_skewed(decoded: tuple[list[Prediction], list[Click]]) -> None:
    preds, _ = decoded
    counts = sorted(Counter(p.item_id for p in preds).values(), reverse=True)
    assert counts[0] > 5 * counts[len(counts) // 2]


def test_propensity_and_features_are_sometimes_logged(
    decoded: tuple[list[Prediction], list[Click]],
) -> None:
    preds, _ = decoded
    with_propensity = np.mean([p.propensity is not None for p in preds])
    with_features = np.mean([p.features is not None for p in preds])
    assert 0.2 < with_propensity < 0.4
    assert 0.45 < with_features < 0.55
    features = next(p.features for p in preds if p.features is not None)
    assert 0 < features["user_ctr_prior"] < 1


# --- delivery order --------------------------------------------------------------


@pytest.mark.parametrize("max_disorder_ms", [0, 500, 2_000, 30_000])
def test_delivery_disorder_is_bounded(max_disorder_ms: int) -> None:
    config = GeneratorConfig(predictions=10_000, max_disorder_ms=max_disorder_ms,
                             malformed_fraction=0.02)
    ts = [r.ts for r in generate(config) if r.ts is not None]
    running_max = np.maximum.accumulate(np.asarray(ts))
    lateness = running_max - np.asarray(ts)  # how far behind the latest delivered
    assert lateness.max() < max_disorder_ms or lateness.max() == 0
    if max_disorder_ms:
        assert (lateness > 0).mean() > 0.01, "delivery really is out of order"
        assert lateness.max() > max_disorder_ms / 4


# --- clicks ----------------------------------------------------------------------


def test_click_attribution_ids_refer_to_real_predictions_of_the_user(
    decoded: tuple[list[Prediction], list[Click]],
) -> None:
    preds, clicks = decoded
    by_id = {p.prediction_id: p for p in preds}
    by_request_item = {(p.request_id, p.item_id): p for p in preds}
    user_items = {(p.user_id, p.item_id) for p in preds}
    kinds: Counter[str] = Counter()
    for click in clicks:
        assert (click.user_id, click.item_id) in user_items
        if click.prediction_id is not None:
            pred = by_id[click.prediction_id]
            assert (pred.user_id, pred.item_id) == (click.user_id, click.item_id)
            assert click.request_id == pred.request_id
            kinds["prediction_id"] += 1
        elif click.request_id is not None:
            pred = by_request_item[(click.request_id, click.item_id)]
            assert pred.user_id == click.user_id
            kinds["request_id"] += 1
        else:
            kinds["neither"] += 1
    total = sum(kinds.values())
    assert total > 1_000
    for kind, share in (("prediction_id", 0.5), ("request_id", 0.3), ("neither", 0.2)):
        assert abs(kinds[kind] / total - share) < 0.04, kinds


def test_click_delays_are_mostly_fast_with_a_long_tail_and_some_skew(
    decoded: tuple[list[Prediction], list[Click]],
) -> None:
    preds, clicks = decoded
    by_id = {p.prediction_id: p for p in preds}
    delays = np.array([c.ts - by_id[c.prediction_id].ts for c in clicks if c.prediction_id])
    assert np.median(delays) < MINUTE_MS
    assert 0.01 < (delays > 30 * MINUTE_MS).mean() < 0.08
    early = delays[delays < 0]
    assert 0 < len(early) < 0.05 * len(delays)
    assert early.min() >= -2_000


def test_clicks_follow_the_true_click_probability(
    decoded: tuple[list[Prediction], list[Click]],
) -> None:
    preds, clicks = decoded
    ctr = len(clicks) / len(preds)
    assert 0.03 < ctr < 0.3
    clicked = {(c.request_id, c.item_id) for c in clicks if c.request_id}
    by_position = Counter(p.position for p in preds if (p.request_id, p.item_id) in clicked)
    assert by_position[0] > by_position[4], "top positions are clicked more"


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse = np.unique(scores, return_inverse=True)  # average the ranks of ties
    ranks = (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]
    pos = labels.sum()
    neg = len(labels) - pos
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def test_auc_helper() -> None:
    assert _auc(np.array([0.1, 0.2, 0.3, 0.4]), np.array([False, False, True, True])) == 1.0
    assert _auc(np.array([0.5, 0.5]), np.array([False, True])) == 0.5


def test_model_a_ranks_clicks_better_than_model_b(
    decoded: tuple[list[Prediction], list[Click]],
) -> None:
    preds, clicks = decoded
    clicked = {(c.request_id, c.item_id) for c in clicks if c.request_id}
    auc = {}
    for model in ("model-a", "model-b"):
        mine = [p for p in preds if p.model_id == model]
        scores = np.array([p.score for p in mine])
        labels = np.array([(p.request_id, p.item_id) in clicked for p in mine])
        auc[model] = _auc(scores, labels)
    assert auc["model-a"] > 0.65, auc
    assert auc["model-a"] > auc["model-b"] + 0.03, auc


# --- malformed records -----------------------------------------------------------


def test_malformed_fraction_and_tags(dirty: list[GeneratedRecord]) -> None:
    bad = [r for r in dirty if r.malformed is not None]
    assert abs(len(bad) / len(dirty) - 0.05) < 0.005
    topics = Counter(r.topic for r in bad)
    assert topics["predictions"] > 0 and topics["clicks"] > 0
    for topic, kinds in MALFORMED_KINDS.items():
        seen = {r.malformed for r in bad if r.topic == topic}
        if topic == "predictions":
            assert seen == set(kinds)
        assert seen <= set(kinds)
    assert {r.key is None for r in bad} == {True, False}
    assert all(r.ts is None for r in bad)


def test_every_malformed_record_fails_to_decode_and_every_valid_one_decodes(
    dirty: list[GeneratedRecord],
) -> None:
    for record in dirty:
        if record.malformed is None:
            _decode(record)
        else:
            with pytest.raises(ContractError):
                _decode(record)
        assert b"\n" not in record.value


def test_no_malformed_records_by_default(records: list[GeneratedRecord]) -> None:
    assert not any(r.malformed for r in records)


# --- files -----------------------------------------------------------------------


def test_write_and_read_jsonl_round_trip(dirty: list[GeneratedRecord], tmp_path: Path) -> None:
    counts = write_jsonl(dirty, tmp_path / "out")
    for topic in ("predictions", "clicks"):
        expected = [r.value for r in dirty if r.topic == topic]
        assert counts[topic] == len(expected)
        assert list(read_jsonl(tmp_path / "out" / f"{topic}.jsonl")) == expected


def test_write_jsonl_rejects_newlines_and_unknown_topics(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="newline"):
        write_jsonl([GeneratedRecord("clicks", None, b"a\nb", None, "not_json")], tmp_path)
    with pytest.raises(ValueError, match="unknown topic"):
        write_jsonl([GeneratedRecord("labels", None, b"{}", None, None)], tmp_path)


# --- config and speed ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 0}, "users"),
        ({"items": -1}, "items"),
        ({"predictions": -5}, "predictions"),
        ({"seed": -1}, "seed"),
        ({"models": ()}, "models"),
        ({"models": ("a", "a")}, "distinct"),
        ({"models": ("a", "")}, "model ids"),
        ({"model_noise": (0.1,)}, "one value per model"),
        ({"start_ts_ms": 1_767_225_600}, "start_ts_ms"),
        ({"zipf_s": 0.0}, "zipf_s"),
        ({"max_disorder_ms": -1}, "max_disorder_ms"),
        ({"malformed_fraction": 0.9}, "malformed_fraction"),
        ({"slate_min": 5, "slate_max": 2}, "slate_min"),
        ({"base_ctr": 1.0}, "base_ctr"),
        ({"attribution": (0.5, 0.5, 0.5)}, "attribution"),
        ({"requests_per_session_mean": 0.5}, "requests_per_session_mean"),
    ],
)
def test_config_validation_says_what_to_fix(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GeneratorConfig(**kwargs)  # type: ignore[arg-type]


def test_small_and_odd_configs() -> None:
    assert list(generate(GeneratorConfig(predictions=0))) == []
    tiny = list(generate(GeneratorConfig(predictions=50, users=1, items=2, models=("only",))))
    assert sum(r.topic == "predictions" for r in tiny) == 50
    assert all(_decode(r).user_id == "user-00000" for r in tiny)


def test_100k_predictions_generate_in_a_few_seconds() -> None:
    started = time.perf_counter()
    n = sum(1 for _ in generate(GeneratorConfig(predictions=100_000)))
    assert n > 100_000
    assert time.perf_counter() - started < 10


# --- producer (no broker needed) -------------------------------------------------


def test_producer_config_is_idempotent_and_overridable() -> None:
    config = producer_config("kafka:9092", {"linger.ms": "50"})
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["linger.ms"] == "50"


def test_produce_nothing_needs_no_broker() -> None:
    assert produce([], "127.0.0.1:1") == 0


def test_produce_fails_clearly_without_a_broker() -> None:
    records = generate(GeneratorConfig(predictions=5))
    with pytest.raises(ProduceError, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        produce(records, "127.0.0.1:1", connect_timeout_s=0.5)


def test_produce_rejects_a_bad_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        produce([], "127.0.0.1:1", rate=0)


def test_traffic_past_the_valid_time_range_is_refused() -> None:
    config = GeneratorConfig(users=1, predictions=1_000, session_gap_ms_mean=10**12)
    with pytest.raises(ValueError, match="past the year 2100"):
        list(generate(config))


@pytest.mark.integration
def test_produce_delivers_keys_values_and_event_times(kafka_bootstrap: str,
                                                      unique_prefix: str) -> None:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    topics = {"predictions": unique_prefix + "predictions", "clicks": unique_prefix + "clicks"}
    records = list(generate(GeneratorConfig(predictions=2_000, malformed_fraction=0.05)))
    with pytest.raises(ProduceError, match="does not exist"):
        produce(records, kafka_bootstrap, topics=topics)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(t, 3, 1) for t in topics.values()]).values():
        future.result(timeout=30)
    progress: list[int] = []
    assert produce(records, kafka_bootstrap, topics=topics, on_progress=progress.append) == len(
        records)
    assert progress[-1] == len(records) and progress == sorted(progress)

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique_prefix + "g",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(list(topics.values()))
    got: list[Message] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < len(records) and time.monotonic() < deadline:
            got += [m for m in consumer.consume(1_000, 1.0) if m.error() is None]
    finally:
        consumer.close()
    logical = {real: name for name, real in topics.items()}
    received = Counter((logical[str(m.topic())], m.key(), m.value()) for m in got)
    assert received == Counter((r.topic, r.key, r.value) for r in records)
    event_ts = {r.value: r.ts for r in records if r.ts is not None}
    stamped = [(m.timestamp()[1], event_ts[m.value() or b""]) for m in got
               if m.value() in event_ts]
    assert len(stamped) == len(event_ts)
    assert all(kafka_ts == ts for kafka_ts, ts in stamped)
    # per key and topic, the delivery order is kept
    first = [r.value for r in records if r.topic == "predictions" and r.key == records[0].key]
    assert [m.value() for m in got if str(m.topic()) == topics["predictions"]
            and m.key() == records[0].key] == first
