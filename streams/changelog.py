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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

log = logging.getLogger(__name__)


class RestoreError(RuntimeError):
    """A changelog could not be read to its end in time."""


@dataclass
class Restored:
    """Changelog partitions read to their end."""

    #: latest value per key
    states: dict[tuple[str, int], dict[bytes, bytes]]
    #: the offset each partition was read to (its last stable offset then)
    ends: dict[tuple[str, int], int]
    #: keys whose value was read from the log (not from the given start state)
    changed: dict[tuple[str, int], set[bytes]]
    records: int


def read_changelogs(config: dict[str, Any], parts: Sequence[tuple[str, int]],
                    timeout_s: float = 300.0,
                    start: Mapping[tuple[str, int], tuple[dict[bytes, bytes], int]]
                    | None = None) -> Restored:
    """The latest value per key of each (topic, partition), read to its end.

    ``config`` is a read_committed consumer configuration with
    ``enable.partition.eof`` (:func:`streams.kafka.restore_consumer`): the end of a
    partition is its last stable offset, so records of a transaction still open (a
    dead worker's) are not read. ``start`` gives, for some parts, a state to start
    from and the offset to read on from (the local store's).
    """
    start = start or {}
    out = Restored({tp: dict(start[tp][0]) if tp in start else {} for tp in parts}, {},
                   {tp: set() for tp in parts}, 0)
    if not parts:
        return out
    consumer = Consumer(config)
    pending = set(parts)
    started = time.monotonic()
    try:
        consumer.assign([TopicPartition(t, p, start[(t, p)][1] if (t, p) in start
                                        else OFFSET_BEGINNING) for t, p in parts])
        while pending:
            if time.monotonic() - started > timeout_s:
                raise RestoreError(f"changelogs {sorted(pending)} not read to their end in "
                                   f"{timeout_s:.0f} s")
            for msg in consumer.consume(num_messages=20_000, timeout=0.1):
                err = msg.error()
                tp = (str(msg.topic()), int(msg.partition() or 0))
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(tp)
                        out.ends[tp] = int(msg.offset() or 0)
                    else:
                        log.warning("reading changelog %s[%s]: %s", *tp, err)
                    continue
                key = msg.key()
                if key is None:
                    continue
                value = msg.value()
                state = out.states[tp]
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
                out.changed[tp].add(key)
                out.records += 1
    finally:
        consumer.close()
    log.info("restored %d keys of %d changelog partitions (%d from the local store) "
             "reading %d changelog records in %.2f s",
             sum(len(v) for v in out.states.values()), len(parts), len(start), out.records,
             time.monotonic() - started)
    return out
