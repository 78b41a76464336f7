"""Where consumed records must start, whatever Faust's committed offsets say.

Faust commits offsets a batch agent never made durable (``take_events`` acks a
batch in a ``finally``, also when it failed or was cancelled, and offsets are
committed on stop and rebalance), resumes fetching before its seek to the committed
offsets (records come twice, out of order), and now and then never delivers a
partition again after a restart. :class:`InputGuard` keeps every consumed partition
in offset order from the position stored with the state (records before it dropped,
a gap answered by a seek back) and unsticks partitions whose input stopped moving.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

from faust.types import TP

from streams.records import Counters, InputRecord, InputSequence

log = logging.getLogger(__name__)

#: Seconds without input progress, despite lag, after which stuck partitions are sought.
STALL_S = 3.0

#: (logical source, partition) -> the last offset known durably processed, or None
Resume = Callable[[str, int], "int | None"]


class InputGuard:
    """Offset order from durable positions for consumed partitions; a stall watchdog."""

    def __init__(self, app: Any, counters: Counters, source_of: Mapping[str, str]) -> None:
        self.app = app
        self.counters = counters
        self.source_of = source_of
        self.sequence = InputSequence()
        self._positions: dict[tuple[str, int], int] | None = None
        self._since = time.monotonic()

    async def in_order(self, batch: list[InputRecord], resume: Resume) -> list[InputRecord]:
        """The records of ``batch`` to process now; seeks back past any gap."""
        consumer = self.app.consumer
        for rec in batch:
            tp = (rec.topic, rec.partition)
            if not self.sequence.known(tp):
                done = resume(rec.source, rec.partition)
                if done is None:  # nothing durable yet: from the partition's first offset
                    ktp = TP(rec.topic, rec.partition)
                    done = (await consumer.earliest_offsets(ktp)).get(ktp, 0) - 1
                self.sequence.start(tp, done + 1)
        kept, seek = self.sequence.accept(batch)
        for (topic, partition), offset in seek.items():
            log.warning("%s[%d]: records from offset %d were not delivered; seeking back",
                        topic, partition, offset)
            await consumer.seek(TP(topic, partition), offset)
            self.counters.seeks += 1
        return kept

    def forget(self, tps: set[tuple[str, int]] | None = None) -> None:
        """Forget partitions (all: None); they start again from their durable position."""
        self.sequence.forget(tps)

    async def watchdog(self, positions: Mapping[tuple[str, int], int], resume: Resume,
                       sources: tuple[str, ...] = ("clicks", "predictions")) -> None:
        """Call every second: seek input partitions with lag that stopped moving.

        ``positions`` are the last offsets processed; when none moved for
        :data:`STALL_S` while a partition of ``sources`` has unread records, the
        consumer's flow state is logged and the partition is sought to the record
        after its last durable one.
        """
        app = self.app
        current = dict(positions)
        if current != self._positions or app.rebalancing \
                or not app.tables.recovery.completed.is_set():
            self._positions, self._since = current, time.monotonic()
            return
        idle_s = time.monotonic() - self._since
        if idle_s < STALL_S:
            return
        consumer = app.consumer
        stuck: dict[TP, int] = {}
        for tp in consumer.assignment():
            source = self.source_of.get(tp.topic)
            if source not in sources:
                continue
            highwater = consumer.highwater(tp)
            done = resume(source, tp.partition)
            if done is not None and highwater is not None and highwater > done + 1:
                stuck[tp] = done + 1
        if stuck:
            log.warning(
                "no input progress for %.0f s with lag on %s; rebalancing=%s flow_active=%s "
                "active=%s paused=%s buffered=%s: seeking them to the next unprocessed offset",
                idle_s, {f"{tp.topic}[{tp.partition}]": off for tp, off in stuck.items()},
                app.rebalancing, getattr(consumer, "flow_active", None),
                tps_text(getattr(consumer, "_active_partitions", None)),
                tps_text(getattr(consumer, "_paused_partitions", None)),
                tps_text(getattr(consumer, "_buffered_partitions", None)))
            for tp, offset in stuck.items():
                await consumer.seek(tp, offset)
            self.counters.seeks += len(stuck)
        self._since = time.monotonic()


def tps_text(tps: Any) -> str:
    """A set of topic partitions as ``{topic[p], ...}`` (for logs)."""
    if tps is None:
        return "None"
    return "{" + ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)) + "}"


def install_task_dump() -> None:
    """``kill -USR2 <worker pid>`` then logs every asyncio task's stack (stalls)."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, dump_tasks)


def dump_tasks() -> None:
    """Log the await chain of every asyncio task."""
    import gc
    import inspect

    for task in asyncio.all_tasks():
        frames = []
        obj: Any = task.get_coro()
        while obj is not None and len(frames) < 40:
            frame = getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None) \
                or getattr(obj, "gi_frame", None)
            if frame is not None:
                frames.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} "
                              f"{frame.f_code.co_name}")
            nxt = (getattr(obj, "cr_await", None) or getattr(obj, "ag_await", None)
                   or getattr(obj, "gi_yieldfrom", None))
            if nxt is None and frame is None:  # e.g. an async generator's asend()
                nxt = next((r for r in gc.get_referents(obj)
                            if inspect.isasyncgen(r) or inspect.iscoroutine(r)), None)
            obj = nxt
        log.warning("task %s awaiting:\n%s", task.get_name(), "\n".join(frames))
