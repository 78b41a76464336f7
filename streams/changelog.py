"""Restoring state from compacted changelog topics (committed records only).

Every state change of a batch is written to its state's changelog in the batch's
transaction (:mod:`streams.worker`), so the committed changelog is exactly the state
as of the committed input offsets. A partition assigned to a worker is rebuilt by
reading its changelog partitions from the start to their end: the latest value per
key (a null value deletes it).

"The end" is not simply where a ``read_committed`` consumer first reports one: right
after a transaction commits, the coordinator is still writing its markers, and until
they land the last stable offset sits *before* that transaction's records while the
group's committed offsets (fetched "stable") already include it. Reading to that early
end would rebuild a state without the batch whose input is marked done: its events
would be lost (seen in a 3-worker rebalance test). So each partition is read at least
to the high watermark it had when the restore began, asked of a read_uncommitted
client (a read_committed one answers the last stable offset: the same early end, in
93-96 of 200 queries right after a commit, ``bench/offsets_after_commit.py``); a
partition still short of it is read again after a short pause, until an open
transaction (a fenced worker's) is committed or aborted by the broker (within the
transaction timeout).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

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
                    | None = None, ends_client: Consumer | None = None) -> Restored:
    """The latest value per key of each (topic, partition), read to its end.

    ``config`` is a read_committed consumer configuration with
    ``enable.partition.eof`` (:func:`streams.kafka.restore_consumer`): the end of a
    partition is its last stable offset, so records of a transaction still open (a
    dead worker's) are not read. ``start`` gives, for some parts, a state to start
    from and the offset to read on from (the local store's). ``ends_client``: a
    read_uncommitted consumer for the ends (a connected one answers at once; by
    default one is made for this restore).
    """
    start = start or {}
    out = Restored({tp: dict(start[tp][0]) if tp in start else {} for tp in parts}, {},
                   {tp: set() for tp in parts}, 0)
    if not parts:
        return out
    consumer = Consumer(config)
    own_client = ends_client is None
    if ends_client is None:
        ends_client = Consumer({**config, "isolation.level": "read_uncommitted"})
    pending = set(parts)
    started = time.monotonic()
    short: dict[tuple[str, int], tuple[int, float]] = {}  # read again from, at
    try:
        # the ends to reach: every transaction committed before now is below them
        high = {tp: watermarks(ends_client, tp, started + timeout_s)[1] for tp in parts}
        # the reader learns the partitions' leaders first: else its first fetch backs
        # off (fetch.error.backoff.ms, 500 ms) before it starts (measured)
        for tp in parts:
            watermarks(consumer, tp, started + timeout_s)
        consumer.assign([TopicPartition(t, p, start[(t, p)][1] if (t, p) in start
                                        else OFFSET_BEGINNING) for t, p in parts])
        while pending:
            if time.monotonic() - started > timeout_s:
                raise RestoreError(f"changelogs {sorted(pending)} not read to their end in "
                                   f"{timeout_s:.0f} s (an open transaction holds them?)")
            now = time.monotonic()
            for tp, (offset, at) in list(short.items()):
                if now >= at:  # a seek makes the consumer report the (new) end again
                    del short[tp]
                    consumer.seek(TopicPartition(*tp, offset))
            for msg in consumer.consume(num_messages=20_000, timeout=0.05):
                err = msg.error()
                tp = (str(msg.topic()), int(msg.partition() or 0))
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        end = int(msg.offset() or 0)
                        if end < high[tp]:  # markers of a commit not written yet
                            short[tp] = (end, time.monotonic() + 0.02)
                            continue
                        pending.discard(tp)
                        out.ends[tp] = end
                    else:
                        log.warning("reading changelog %s[%s]: %s", *tp, err)
                    continue
                short.pop(tp, None)  # records came: it is being read on anyway
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
        if own_client:
            ends_client.close()
    log.info("restored %d keys of %d changelog partitions (%d from the local store) "
             "reading %d changelog records in %.2f s",
             sum(len(v) for v in out.states.values()), len(parts), len(start), out.records,
             time.monotonic() - started)
    return out


def watermarks(consumer: Consumer, tp: tuple[str, int], deadline: float) -> tuple[int, int]:
    """A partition's (low, high) watermarks, asked again while the broker does not answer
    (a restarting broker answers timeouts or, until its metadata is back, unknown
    partition); :class:`RestoreError` once ``deadline`` (monotonic) has passed."""
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10,
                                                       cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise RestoreError(f"no watermarks of {tp[0]}[{tp[1]}]: {exc}") from exc
            log.warning("watermarks of %s[%d] not available (%s); asking again", *tp,
                        exc.args[0].str())
            time.sleep(1.0)
