"""Positions: how far behind an input partition is, when librdkafka's position is unknown."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID, KafkaError, KafkaException, TopicPartition

from streams.positions import Positions


class FakeConsumer:
    """Cached ends and positions as librdkafka reports them (position: -1001 until read)."""

    def __init__(self, low: int, high: int, position: int = OFFSET_INVALID,
                 fail: bool = False) -> None:
        self.low, self.high, self.pos, self.fail = low, high, position, fail

    def get_watermark_offsets(self, tp: Any, cached: bool = False) -> tuple[int, int]:
        if self.fail:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return self.low, self.high

    def position(self, tps: list[Any]) -> list[Any]:
        return [TopicPartition(tps[0].topic, tps[0].partition, self.pos)]


TP = TopicPartition("clicks", 3)


@pytest.mark.parametrize(("case", "start", "consumer", "behind"), [
    # assigned (or sought) at its end, nothing new: caught up (librdkafka says -1001)
    ("at the end", 120, FakeConsumer(0, 120), 0),
    ("started behind", 100, FakeConsumer(0, 120), 20),
    # once it has read, librdkafka's position counts (it is past transaction markers)
    ("read since", 100, FakeConsumer(0, 120, position=120), 0),
    ("read some", 100, FakeConsumer(0, 120, position=110), 10),
    ("new records since", 120, FakeConsumer(0, 125), 5),
    ("from the start, nothing read", -2, FakeConsumer(40, 60), 20),
    ("from the start, empty", -2, FakeConsumer(0, 0), 0),
    ("no record: librdkafka's", None, FakeConsumer(0, 120, position=117), 3),
    ("no record, nothing read", None, FakeConsumer(10, 120), 110),
    ("ends not fetched yet", 120, FakeConsumer(-1001, -1001), None),
    ("broker errors", 120, FakeConsumer(0, 120, fail=True), None),
])
def test_behind(case: str, start: int | None, consumer: FakeConsumer,
                behind: int | None) -> None:
    positions = Positions()
    if start is not None:
        positions.start([TopicPartition(TP.topic, TP.partition, start)])
    assert positions.behind(consumer, TP) == behind, case


def test_dropped_and_cleared_partitions_fall_back_to_librdkafka() -> None:
    positions = Positions()
    positions.start([TopicPartition("clicks", 3, 120), TopicPartition("clicks", 4, 50)])
    positions.drop([("clicks", 3)])
    assert positions.behind(FakeConsumer(0, 120, position=110), TP) == 10
    assert positions.behind(FakeConsumer(0, 60), TopicPartition("clicks", 4)) == 10
    positions.clear()
    assert positions.behind(FakeConsumer(0, 60), TopicPartition("clicks", 4)) == 60
