"""Independent plain-Python recomputation of freshet's outputs from the input log.

Nothing here imports freshet's features/, labels/ or streams/: it re-derives every
value from the raw JSON the generator produced, following the documented semantics.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson

from tests.streams.support import Produced

TS_MIN, TS_MAX = 946_684_800_000, 4_102_444_800_000


@dataclass(frozen=True)
class Event:
    """A valid input event with its position in the log."""

    source: str
    partition: int
    offset: int
    body: dict[str, Any]

    @property
    def ts(self) -> int:
        ts: int = self.body["ts"]
        return ts


def valid_events(log: list[Produced]) -> list[Event]:
    """The log's valid events (the generator tags the malformed ones)."""
    return [Event(p.record.topic, p.partition, p.offset, orjson.loads(p.record.value))
            for p in log if p.record.malformed is None]


def late_events(events: list[Event], allowed_lateness_ms: int) -> list[Event]:
    """Events behind their own topic-partition's max ts by more than the lateness.

    freshet's watermark is the minimum over the input topics, so such an event can
    only be late in freshet if it is late here; tests assert this list is empty so
    that the dead letters are exactly the malformed records.
    """
    seen: dict[tuple[str, int], int] = {}
    late = []
    for ev in sorted(events, key=lambda e: (e.source, e.partition, e.offset)):
        key = (ev.source, ev.partition)
        top = seen.get(key)
        if top is not None and ev.ts < top - allowed_lateness_ms:
            late.append(ev)
        seen[key] = ev.ts if top is None else max(top, ev.ts)
    return late


def events_by_user(events: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        out[ev.body["user_id"]].append(ev)
    return out


def included(events: list[Event], source_offsets: dict[str, int | None]) -> list[Event]:
    """The events a record says it includes: offsets up to its source offsets."""
    return [ev for ev in events
            if source_offsets.get(ev.source) is not None
            and ev.offset <= source_offsets[ev.source]]  # type: ignore[operator]


def window_count(ts_list: list[int], as_of: int, window_ms: int, tile_ms: int) -> int:
    """Events with tile_start(as_of) - (window - tile) <= ts <= as_of."""
    low = as_of - as_of % tile_ms - (window_ms - tile_ms)
    return sum(1 for ts in ts_list if low <= ts <= as_of)


def user_features(events: list[Event]) -> tuple[int, dict[str, Any]]:
    """(as_of_ts, features) of a user after exactly these events."""
    as_of = max(ev.ts for ev in events)
    clicks = [ev.ts for ev in events if ev.source == "clicks"]
    return as_of, {"clicks_5m": window_count(clicks, as_of, 300_000, 25_000)}
