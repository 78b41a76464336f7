"""Restoring state from compacted changelog topics (committed records only).

Every state change of a batch is written to its state's changelog in the batch's
transaction (:mod:`streams.worker`), so the committed changelog is exactly the state
as of the committed input offsets. A partition assigned to a worker is rebuilt by
reading its changelog partitions from the start to their end: the latest value per
key (a null value deletes it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

log = logging.getLogger(__name__)


class RestoreError(RuntimeError):
    """A changelog could not be read to its end in time."""


def read_changelogs(config: dict[str, Any], parts: Sequence[tuple[str, int]],
                    timeout_s: float = 300.0) -> dict[tuple[str, int], dict[bytes, bytes]]:
    """The latest value per key of each (topic, partition), read to its end.

    ``config`` is a read_committed consumer configuration with
    ``enable.partition.eof`` (:func:`streams.kafka.restore_consumer`): the end of a
    partition is its last stable offset, so records of a transaction still open (a
    dead worker's) are not read.
    """
    latest: dict[tuple[str, int], dict[bytes, bytes]] = {tp: {} for tp in parts}
    if not parts:
        return latest
    consumer = Consumer(config)
    pending = set(parts)
    started = time.monotonic()
    records = 0
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in parts])
        while pending:
            if time.monotonic() - started > timeout_s:
                raise RestoreError(f"changelogs {sorted(pending)} not read to their end in "
                                   f"{timeout_s:.0f} s")
            for msg in consumer.consume(num_messages=20_000, timeout=0.5):
                err = msg.error()
                tp = (msg.topic(), msg.partition())
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(tp)
                    else:
                        log.warning("reading changelog %s[%s]: %s", *tp, err)
                    continue
                key = msg.key()
                if key is None:
                    continue
                value = msg.value()
                state = latest[tp]
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
                records += 1
    finally:
        consumer.close()
    log.info("restored %d keys of %s from %d changelog records in %.2f s",
             sum(len(v) for v in latest.values()), ", ".join(f"{t}[{p}]" for t, p in parts),
             records, time.monotonic() - started)
    return latest
