"""InputGuard's decisions (the consumer is a recording stand-in; no broker needed)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams import guard as guard_module
from streams.guard import InputGuard
from streams.records import Counters, InputRecord


class Consumer:
    """Records seeks; answers offsets and assignment like Faust's consumer."""

    def __init__(self, earliest: int = 0, highwater: int = 0) -> None:
        self.seeks: list[tuple[TP, int]] = []
        self.earliest, self.high = earliest, highwater

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest for tp in tps}

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))

    def assignment(self) -> set[TP]:
        return {TP("clicks", 0), TP("other", 0)}

    def highwater(self, tp: TP) -> int:
        return self.high


def app(consumer: Consumer) -> Any:
    recovery = SimpleNamespace(completed=asyncio.Event())
    recovery.completed.set()
    return SimpleNamespace(consumer=consumer, rebalancing=False,
                           tables=SimpleNamespace(recovery=recovery))


def recs(*offsets: int) -> list[InputRecord]:
    return [InputRecord("clicks", "clicks", 0, off, None, b"") for off in offsets]


def test_starts_after_the_durable_position_and_seeks_back_over_a_gap() -> None:
    consumer = Consumer()
    counters = Counters()
    guard = InputGuard(app(consumer), counters, {"clicks": "clicks"})

    async def run() -> list[list[int]]:
        kept1 = await guard.in_order(recs(3, 4, 5), lambda source, p: 3)  # 3 was durable
        kept2 = await guard.in_order(recs(8, 9), lambda source, p: 3)      # 6, 7 skipped
        kept3 = await guard.in_order(recs(6, 7, 8), lambda source, p: 3)
        return [[r.offset for r in k] for k in (kept1, kept2, kept3)]

    assert asyncio.run(run()) == [[4, 5], [], [6, 7, 8]]
    assert consumer.seeks == [(TP("clicks", 0), 6)] and counters.seeks == 1


def test_a_partition_never_processed_starts_at_its_first_offset() -> None:
    consumer = Consumer(earliest=10)
    guard = InputGuard(app(consumer), Counters(), {"clicks": "clicks"})
    kept = asyncio.run(guard.in_order(recs(12, 13), lambda source, p: None))
    assert kept == [] and consumer.seeks == [(TP("clicks", 0), 10)]


def test_watchdog_seeks_a_lagging_partition_that_stopped_moving(monkeypatch: Any) -> None:
    consumer = Consumer(highwater=50)
    counters = Counters()
    guard = InputGuard(app(consumer), counters, {"clicks": "clicks", "other": "other"})
    clock = [100.0]
    monkeypatch.setattr(guard_module.time, "monotonic", lambda: clock[0])
    positions = {("clicks", 0): 20}

    async def tick(dt: float) -> None:
        clock[0] += dt
        await guard.watchdog(positions, lambda source, p: positions[(source, p)])

    asyncio.run(tick(0))
    asyncio.run(tick(guard_module.STALL_S - 1))
    assert consumer.seeks == []  # not long enough
    asyncio.run(tick(2))
    assert consumer.seeks == [(TP("clicks", 0), 21)] and counters.seeks == 1
    positions[("clicks", 0)] = 49  # caught up to the highwater: nothing to do
    asyncio.run(tick(10))
    asyncio.run(tick(10))
    assert len(consumer.seeks) == 1
