"""The pinned Apache Kafka speaks what freshet's clients need (real broker)."""

from __future__ import annotations

import asyncio
import base64

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from freshet.kafka_local import LocalKafka, kafka_version, launcher

pytestmark = pytest.mark.integration


def test_pinned_version_is_a_4x_release() -> None:
    major = int(kafka_version().split(".")[0])
    assert major >= 4


def test_cluster_ids_never_look_like_an_option() -> None:
    """1 in 64 URL-safe base64 ids starts with "-", which kafka-storage takes for an
    option (a broker that never starts); 3,000 draws meet ~47 such on the old code."""
    ids = [launcher._cluster_id() for _ in range(3_000)]
    assert not [i for i in ids if i.startswith("-")]
    for cid in ids[:50]:  # still 16 bytes in URL-safe base64 without padding
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_server_properties_bind_loopback_only(tmp_path) -> None:
    props = LocalKafka(home=tmp_path, port=39092).server_properties()
    listeners = [line for line in props.splitlines() if "listeners=" in line
                 and not line.startswith("controller.listener.names")
                 and not line.startswith("listener.security")]
    assert listeners
    for line in listeners:
        for address in line.split("=", 1)[1].split(","):
            assert "127.0.0.1" in address, line
    assert "auto.create.topics.enable=false" in props
    assert "transaction.state.log.replication.factor=1" in props


def test_aiokafka_idempotent_transactional_and_read_committed(kafka_bootstrap: str,
                                                             unique_prefix: str) -> None:
    topic = unique_prefix + "tx"

    async def scenario() -> list[bytes]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 2, 1)])
        finally:
            await admin.close()
        idem = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await idem.start()
        try:
            await idem.send_and_wait(topic, b"idempotent", key=b"k")
        finally:
            await idem.stop()
        tx = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                              transactional_id=unique_prefix + "txid")
        await tx.start()
        try:
            async with tx.transaction():
                await tx.send(topic, b"committed", key=b"k")
            await tx.begin_transaction()
            await tx.send(topic, b"aborted", key=b"k")
            await tx.abort_transaction()
        finally:
            await tx.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                                    group_id=unique_prefix + "g", auto_offset_reset="earliest",
                                    isolation_level="read_committed")
        await consumer.start()
        got: list[bytes] = []
        try:
            for _ in range(20):
                batches = await consumer.getmany(timeout_ms=500)
                got += [m.value for msgs in batches.values() for m in msgs]
                if len(got) >= 2:
                    break
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    assert sorted(asyncio.run(scenario())) == [b"committed", b"idempotent"]
