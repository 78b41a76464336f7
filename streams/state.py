"""Where a worker's partition state comes from and goes: changelogs and the local store.

A newly assigned partition is rebuilt from its changelog partitions
(:mod:`streams.changelog`), starting from the local store's copy where one is usable
(:mod:`streams.checkpoints`); after each committed transaction the batch's deltas
are mirrored to the local store, and marks record how far that copy is current.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from confluent_kafka import Consumer, KafkaException, TopicPartition

from engine.records import Delta
from freshet.settings import Settings
from streams import kafka
from streams.changelog import Restored, RestoreError, read_changelogs, watermarks
from streams.checkpoints import LocalStore, Part, now_ms

log = logging.getLogger(__name__)


class PartitionStates:
    """Restores changelog partitions and keeps the local store in step with commits."""

    def __init__(self, settings: Settings, changelogs: Mapping[str, str]) -> None:
        self.settings = settings
        self.changelogs = dict(changelogs)
        self.local = (LocalStore(settings.data_dir / "state" / settings.app_id)
                      if settings.store == "rocksdb" else None)
        # an idle client for offset queries (a consumer's connection is busy with
        # long-polling fetches, which delay any other request on it by up to 500 ms).
        # read_uncommitted: its ends are the logs' ends. A read_committed one answers the
        # last stable offset, which trails a just-committed transaction until the
        # coordinator has written its markers, so a mark right after a commit (the one
        # of a clean stop) fell one batch short and the next start read that batch again
        self.meta = Consumer({**kafka.restore_consumer(settings),
                              "isolation.level": "read_uncommitted"})
        #: changelog records written to the local store / read from the changelogs
        self.local_writes = 0
        self.records_read = 0
        #: changelog partitions restored from the local store (plus the log after it)
        self.local_restores = 0

    def restore(self, parts: list[Part]) -> Restored:
        """The latest state of each changelog partition; the local store catches up too."""
        start = self._usable(parts)
        restored = read_changelogs(kafka.restore_consumer(self.settings), parts, start=start,
                                  ends_client=self.meta)
        self.records_read += restored.records
        self.local_restores += len(start)
        if self.local is not None:
            now = now_ms()
            for part in parts:
                end = restored.ends.get(part)
                if end is None:
                    continue
                state = restored.states[part]
                if part in start:  # the store had it up to its mark: add what came since
                    self.local.apply((part, k, state.get(k)) for k in restored.changed[part])
                    self.local.mark({part: end}, now)
                else:
                    self.local.replace(part, state, end, now)
        return restored

    def _usable(self, parts: list[Part]) -> dict[Part, tuple[dict[bytes, bytes], int]]:
        """Usable local states: (state, changelog offset to read on from)."""
        if self.local is None:
            return {}
        out = {}
        for part in parts:
            found = self.local.load(part, now_ms())
            if found is None:
                continue
            low, high = watermarks(self.meta, part,
                                   time.monotonic() + self.settings.broker_wait_ms / 1000)
            if low <= found[1] <= high:
                out[part] = found
            else:
                log.info("the local state of %s[%d] (offset %d) is outside the log [%d, %d]: "
                         "rebuilt from the changelog", part[0], part[1], found[1], low, high)
        return out

    def committed(self, deltas: Iterable[Delta]) -> None:
        """Mirror a committed batch's changelog deltas to the local store."""
        if self.local is not None:
            topics = self.changelogs
            self.local_writes += self.local.apply(
                ((topics[d.state], d.partition), d.key, d.value) for d in deltas)

    def mark(self, parts: Iterable[Part]) -> None:
        """Mark changelog partitions' local state current up to their end now.

        Only with no transaction in flight: every committed delta is mirrored.
        """
        if self.local is None:
            return
        try:
            offsets = {part: self.meta.get_watermark_offsets(TopicPartition(*part),
                                                             timeout=10)[1]
                       for part in parts}
        except KafkaException as exc:
            # a mark only shortens the next restore: without one (the broker is away,
            # e.g. inside a rebalance callback during an outage) the next restore reads
            # from the older mark, which is as correct
            log.warning("local state not marked current (%s)", exc.args[0].str())
            return
        if offsets:
            self.local.mark(offsets, now_ms())

    def close(self) -> None:
        """Close the clients and the store."""
        self.meta.close()
        if self.local is not None:
            self.local.close()


@contextmanager
def readable(changelog: str, partition: int) -> Iterator[None]:
    """Turn an unreadable changelog record into one clear error (not a dead letter:
    the changelogs are the state, and a state restored without a record would be wrong)."""
    try:
        yield
    except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError) as exc:
        raise RestoreError(
            f"changelog {changelog}[{partition}] holds a record this worker cannot read "
            f"({type(exc).__name__}: {exc}); only this app's workers may write it: stop "
            "whatever else writes there; to start over, use a new FRESHET_APP_ID (a new "
            "group reads the inputs again from their start)") from exc
