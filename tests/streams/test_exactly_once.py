"""Exactly once for read_committed consumers across SIGKILLs mid-stream.

Each batch's outputs, state changes and input offsets are one Kafka transaction: a
worker killed mid-batch leaves nothing a read_committed consumer can see, and the
restarted worker (same transactional id: it aborts the dead one's transaction)
processes the batch again from the committed offsets against the committed state.
So the committed view holds every output exactly once, not merely "repeats are
identical": no (prediction_id, label_version) twice, one training example per
prediction, one dead letter per malformed record, no feature record twice.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from freshet.generator import GeneratorConfig, generate
from freshet.topics import create_topics
from tests.streams import oracle
from tests.streams.label_oracle import final_labels
from tests.streams.support import Worker, consume, produce_log, produce_then_kill, stats
from tests.streams.test_features_stream import (
    check_dead_letters,
    check_feature_records,
    make_settings,
)
from tests.streams.test_labels_stream import HORIZON, LABEL_ENV, SKEW, WINDOW

pytestmark = [pytest.mark.integration, pytest.mark.restart]


def test_every_output_exactly_once_across_sigkills(kafka_bootstrap: str, unique_prefix: str,
                                                   tmp_path: Path) -> None:
    # each batch's records reach the broker 300 ms before their commit: the kills below
    # land inside open transactions
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path,
                             FRESHET_COMMIT_INTERVAL_MS="50", FRESHET_BATCH_MAX_EVENTS="200",
                             FRESHET_DEBUG_COMMIT_DELAY_MS="300", **LABEL_ENV)
    create_topics(settings)
    records = list(generate(GeneratorConfig(seed=41, users=40, items=30, predictions=2_400,
                                            malformed_fraction=0.02)))
    third = len(records) // 3
    def mid_transaction(at_least: int) -> Any:
        return lambda s: (s["transactions"] >= 1 and s["awaiting_commit"]
                          and sum(s["events"].values()) >= at_least)

    log = produce_then_kill(settings, tmp_path / "worker-1.log", records[:third],
                            mid_transaction(third // 4))
    log += produce_then_kill(settings, tmp_path / "worker-2.log", records[third:2 * third],
                             mid_transaction(third // 4), sig=signal.SIGKILL)
    last = Worker(settings, tmp_path / "worker-3.log")
    last.start()
    try:
        log += produce_log(settings, records[2 * third:])
        events = oracle.valid_events(log)
        expected = final_labels(events, WINDOW, SKEW, HORIZON)
        n_bad = sum(1 for r in records if r.malformed is not None)

        def done(got: dict[str, list[Any]]) -> bool:
            finals = {orjson.loads(m.value())["prediction_id"] for m in got["labels"]}
            examples = {orjson.loads(m.value())["prediction_id"]
                        for m in got["training_examples"]}
            return (len(finals) >= len(expected) and len(examples) >= len(expected)
                    and len(got["dead_letters"]) >= n_bad)

        got = consume(settings, ["labels", "training_examples", "dead_letters",
                                 "features_user", "features_item"], done, timeout_s=240,
                      worker=last)
        final_stats = stats(settings)
    finally:
        last.stop()
    assert final_stats is not None and final_stats["restored_partitions"] >= 8
    memory = final_stats["memory"]  # the process trims freed memory (freshet.memory_trim)
    assert memory["rss_bytes"] > 50 * 2**20 and memory["malloc_trim_interval_ms"] == 30_000
    # the restored state holds one row per user and item of the input log, no more
    keys = final_stats["state_keys"]
    assert keys["users"] == len(oracle.events_by_user(events)), keys
    assert keys["items"] == len(oracle.events_by_item(events)), keys
    n_predictions = sum(1 for e in events if e.source == "predictions")
    assert 0 <= keys["pending_predictions"] <= n_predictions, keys
    # the kills did land inside open transactions: a read_uncommitted reader sees the
    # records they had sent, on some output or changelog topic
    from freshet.topics import topic_specs

    names = [spec.topic for spec in topic_specs(settings)
             if spec.topic not in (settings.topic("clicks"), settings.topic("predictions"))]
    assert any(count(settings, t, "read_uncommitted") > count(settings, t, "read_committed")
               for t in names), "no kill landed inside a transaction"

    labels = [orjson.loads(m.value()) for m in got["labels"]]
    repeats = Counter((r["prediction_id"], r["label_version"]) for r in labels)
    assert max(repeats.values()) == 1, [k for k, n in repeats.items() if n > 1][:5]
    by_pid = {r["prediction_id"]: r for r in labels if r["final"]}
    assert set(by_pid) == set(expected)
    for pid, want in expected.items():
        assert {k: by_pid[pid][k] for k in want} == want, pid

    examples = Counter(orjson.loads(m.value())["prediction_id"] for m in got["training_examples"])
    assert set(examples) == set(expected) and max(examples.values()) == 1

    check_dead_letters(settings, got["dead_letters"], log)  # each malformed record once

    keyed = {"user": oracle.events_by_user(events), "item": oracle.events_by_item(events)}
    for entity in ("user", "item"):
        msgs = got[f"features_{entity}"]
        seen = Counter(orjson.dumps([orjson.loads(m.value())["id"],
                                     orjson.loads(m.value())["source"]],
                                    option=orjson.OPT_SORT_KEYS) for m in msgs)
        assert max(seen.values()) == 1, "a feature record was published twice"
        assert check_feature_records(entity, msgs, keyed[entity]) == set(keyed[entity])


def count(settings: Any, topic: str, isolation: str) -> int:
    """How many records of a topic a consumer with this isolation level sees."""
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers,
                         "group.id": f"count-{uuid.uuid4()}", "fetch.wait.max.ms": 10,
                         "isolation.level": isolation, "enable.partition.eof": True})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    done: set[int] = set()
    n = 0
    try:
        while len(done) < len(parts):
            for msg in consumer.consume(1000, timeout=1.0):
                err = msg.error()
                if err is None:
                    n += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
    finally:
        consumer.close()
    return n
