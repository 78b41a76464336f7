"""Right after a commit, the changelog's end includes it: for local-state marks and
restores alike (real broker).

A read_committed offset query answers the last stable offset, which trails a
just-committed transaction until its markers are written (bench/offsets_after_commit.py:
93-96 of 200 queries right after a commit).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams import kafka
from streams.changelog import read_changelogs
from streams.checkpoints import now_ms
from streams.state import PartitionStates
from tests.streams.test_features_stream import make_settings

pytestmark = pytest.mark.integration

PER_BATCH = 20


def committed_batches(bootstrap: str, topic: str, batches: int) -> Iterator[int]:
    """Commit ``batches`` transactions of ``PER_BATCH`` new keys to a one-partition
    topic; yields each batch's number right after its commit returned."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": topic})
    producer.init_transactions(30)
    for i in range(batches):
        producer.begin_transaction()
        for j in range(PER_BATCH):
            producer.produce(topic, b"v", f"k{i}-{j}".encode(), partition=0)
        producer.commit_transaction(30)
        yield i


def test_a_mark_right_after_a_commit_is_at_the_logs_end(kafka_bootstrap: str,
                                                        unique_prefix: str,
                                                        tmp_path: Path) -> None:
    # a clean stop's mark fell a batch short: the restart read that batch again
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path, FRESHET_STORE="rocksdb")
    topic = unique_prefix + "marks-changelog"
    states = PartitionStates(settings, {"user": topic})
    part = (topic, 0)
    try:
        short = []
        for i in committed_batches(kafka_bootstrap, topic, 60):
            states.mark([part])
            assert states.local is not None
            found = states.local.load(part, now_ms())
            assert found is not None
            records_end = (i + 1) * (PER_BATCH + 1) - 1  # the records and a commit marker
            if found[1] < records_end:
                short.append((i, found[1], records_end))
        assert short == []
    finally:
        states.close()


def test_a_restore_right_after_a_commit_has_that_commit(kafka_bootstrap: str,
                                                        unique_prefix: str,
                                                        tmp_path: Path) -> None:
    # a partition handed over right after its last owner's commit: a restore that
    # stopped at the early end lost that batch, whose input offsets were committed
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path)
    topic = unique_prefix + "restore-changelog"
    ends = Consumer({**kafka.restore_consumer(settings), "isolation.level": "read_uncommitted"})
    try:
        short = []
        for i in committed_batches(kafka_bootstrap, topic, 40):
            restored = read_changelogs(kafka.restore_consumer(settings), [(topic, 0)],
                                       timeout_s=60, ends_client=ends)
            if len(restored.states[(topic, 0)]) != (i + 1) * PER_BATCH:
                short.append((i, len(restored.states[(topic, 0)])))
        assert short == []
    finally:
        ends.close()
