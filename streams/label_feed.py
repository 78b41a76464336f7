"""Read freshet's own label outputs consistently, for the evaluation stage.

The evaluator may advance to a global label watermark ``T`` only once it holds every
label with ``prediction_ts < T`` (:mod:`evaluation.evaluator`). A partition's
``label-watermarks`` record is committed in the same transaction as, or after, every
label it covers, but it may sit on another partition than those labels. So a round
reads in two steps: first ``label-watermarks`` to their end, then ``labels`` and
``training-examples`` to an end measured *after* that (a seek to the current
position makes librdkafka report the partition's end again: with ``read_committed``
that is the last stable offset, so every transaction committed before the
watermark records were read is inside). Only then is the new ``T`` usable.

Reads are bounded per call (``budget``), so a leader catching up on a long history
still serves its consumer group between calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from freshet.settings import Settings
from labels.maturity import combine_label_watermarks
from streams import kafka

log = logging.getLogger(__name__)

#: positions by (topic, partition): the next offset to read
Positions = dict[tuple[str, int], int]


def feed_consumer(settings: Settings) -> dict[str, Any]:
    """A read_committed consumer that never joins a group (partitions are assigned)."""
    return {**kafka.base(settings), "group.id": f"{settings.app_id}-evaluation-reader",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "enable.partition.eof": True, "isolation.level": "read_committed",
            "fetch.wait.max.ms": 50, "fetch.queue.backoff.ms": 10,
            "fetch.error.backoff.ms": 50}


class _Reader:
    """One consumer over every partition of some topics, read to its end on request."""

    def __init__(self, consumer: Consumer, parts: list[tuple[str, int]],
                 positions: Positions) -> None:
        self.consumer, self.parts = consumer, parts
        self.positions = {tp: positions.get(tp, OFFSET_BEGINNING) for tp in parts}
        self._at_end: set[tuple[str, int]] = set()
        consumer.assign([TopicPartition(t, p, self.positions[(t, p)]) for t, p in parts])

    def restart(self) -> None:
        """Forget where the ends were: the next :meth:`read` goes to the current ends."""
        self._at_end.clear()
        for (t, p), pos in self.positions.items():
            if pos < 0:  # not read yet (OFFSET_BEGINNING): its first end is still ahead
                continue
            try:
                self.consumer.seek(TopicPartition(t, p, pos))
            except KafkaException:  # not fetching yet: re-assigning has the same effect
                self.consumer.assign([TopicPartition(*tp, o)
                                      for tp, o in self.positions.items()])
                return

    def read(self, handle: Callable[[str, bytes | None], None], budget: int,
             timeout_s: float) -> bool:
        """Hand up to ``budget`` records to ``handle``; True once every end is reached."""
        deadline = time.monotonic() + timeout_s
        n = 0
        while len(self._at_end) < len(self.parts) and n < budget \
                and time.monotonic() < deadline:
            for msg in self.consumer.consume(min(10_000, budget - n), timeout=0.05):
                topic, part, offset = msg.topic(), msg.partition(), msg.offset()
                if topic is None or part is None or offset is None:
                    continue
                tp = (topic, part)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._at_end.add(tp)
                        self.positions[tp] = offset  # past any transaction markers
                    else:
                        log.warning("evaluation input %s[%d]: %s", *tp, err)
                    continue
                self._at_end.discard(tp)
                self.positions[tp] = offset + 1
                handle(topic, msg.value())
                n += 1
        return len(self._at_end) == len(self.parts)


class LabelFeed:
    """``labels`` and ``training-examples`` with the global label watermark they support.

    :meth:`step` runs a round in bounded pieces and returns the new global label
    watermark once a round completes (None while it does not, or nothing is known).
    """

    def __init__(self, settings: Settings, partitions: dict[str, int],
                 positions: Positions, watermarks: dict[int, int],
                 on_label: Callable[[dict[str, Any]], object],
                 on_example: Callable[[dict[str, Any]], object]) -> None:
        self.user_partitions = settings.partitions
        self.wm_topic = settings.topic("label_watermarks")
        self.labels_topic = settings.topic("labels")
        self.examples_topic = settings.topic("training_examples")
        self.watermarks = dict(watermarks)
        self.invalid = 0
        self._on_label, self._on_example = on_label, on_example
        self._consumers = [Consumer(feed_consumer(settings)) for _ in range(2)]
        self._wm = _Reader(self._consumers[0], _parts(self.wm_topic, partitions), positions)
        self._data = _Reader(self._consumers[1],
                             _parts(self.labels_topic, partitions)
                             + _parts(self.examples_topic, partitions), positions)
        self._phase: int = 0  # 0: watermarks, 1: labels and examples

    def positions(self) -> Positions:
        """Where each input partition is read to (with :attr:`watermarks`: a checkpoint)."""
        return {**self._wm.positions, **self._data.positions}

    def step(self, budget: int = 50_000, timeout_s: float = 2.0) -> int | None:
        """Read a bounded piece of the current round; the new global T when it completes."""
        if self._phase == 0:
            if not self._wm.read(self._watermark, budget, timeout_s):
                return None
            self._phase = 1
            self._data.restart()
        if not self._data.read(self._record, budget, timeout_s):
            return None
        self._phase = 0
        self._wm.restart()
        values = [self.watermarks.get(p) for p in range(self.user_partitions)]
        return combine_label_watermarks(values)

    def _decode(self, raw: bytes | None, what: str) -> dict[str, Any] | None:
        try:
            obj = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            self.invalid += 1
            log.warning("evaluation: a %s record is not a JSON object; skipped", what)
            return None
        return obj

    def _watermark(self, topic: str, raw: bytes | None) -> None:
        obj = self._decode(raw, "label-watermarks")
        if obj is None:
            return
        part, value = obj.get("partition"), obj.get("label_watermark_ms")
        if not isinstance(part, int) or not isinstance(value, int):
            self.invalid += 1
            return
        # a label watermark never goes backwards; a restarted owner may repeat a lower one
        self.watermarks[part] = max(value, self.watermarks.get(part, value))

    def _record(self, topic: str, raw: bytes | None) -> None:
        is_label = topic == self.labels_topic
        obj = self._decode(raw, "labels" if is_label else "training-examples")
        if obj is None:
            return
        try:
            (self._on_label if is_label else self._on_example)(obj)
        except ValueError as exc:
            self.invalid += 1
            log.warning("evaluation: skipped a record that breaks the label contract: %s", exc)

    def close(self) -> None:
        for consumer in self._consumers:
            consumer.close()


def _parts(topic: str, partitions: dict[str, int]) -> list[tuple[str, int]]:
    return [(topic, p) for p in range(partitions[topic])]


def topic_partitions(settings: Settings, topics: list[str]) -> dict[str, int]:
    """How many partitions each topic has (from the cluster's metadata).

    Topics just created (or a broker just restarted) may be missing from the metadata
    for a moment: asked again until ``FRESHET_BROKER_WAIT_MS`` has passed (seen: a
    worker started right after ``freshet topics`` on a busy broker stopped here).
    """
    consumer = Consumer(feed_consumer(settings))
    deadline = time.monotonic() + settings.broker_wait_ms / 1000
    try:
        while True:
            meta = consumer.list_topics(timeout=30).topics
            missing = [t for t in topics if t not in meta or meta[t].error is not None]
            if not missing:
                return {t: len(meta[t].partitions) for t in topics}
            if time.monotonic() > deadline:
                raise RuntimeError(f"evaluation: topics missing: {missing} "
                                   "(run `freshet topics`)")
            log.info("evaluation: waiting for topics %s to appear", missing)
            time.sleep(1.0)
    finally:
        consumer.close()
