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


def events_by_item(events: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        out[ev.body["item_id"]].append(ev)
    return out


def provenance(entity: str, ev: Event) -> str:
    """How a record's ``source`` names an event's input: topic (users), topic:partition."""
    return ev.source if entity == "user" else f"{ev.source}:{ev.partition}"


def included(entity: str, events: list[Event], source: dict[str, Any]) -> list[Event]:
    """The events a record says it includes: offsets up to its source offsets."""
    out = []
    for ev in events:
        top = source.get(provenance(entity, ev))
        if top is not None and ev.offset <= top:
            out.append(ev)
    return out


def final_sources(entity: str, events: list[Event]) -> dict[str, int]:
    """The ``source`` offsets of a key's last record once all its events are applied."""
    out: dict[str, int] = {}
    for ev in events:
        key = provenance(entity, ev)
        out[key] = max(out.get(key, -1), ev.offset)
    return out


def window_count(ts_list: list[int], as_of: int, window_ms: int, tile_ms: int) -> int:
    """Events with tile_start(as_of) - (window - tile) <= ts <= as_of."""
    low = as_of - as_of % tile_ms - (window_ms - tile_ms)
    return sum(1 for ts in ts_list if low <= ts <= as_of)


MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
# window -> tile: W/12, as documented (1m -> 5 s, 5m -> 25 s, 1h -> 5 min, 24h -> 2 h)
WINDOWS = {"1m": (MIN, 5_000), "5m": (5 * MIN, 25_000), "1h": (HOUR, 5 * MIN),
           "24h": (DAY, 2 * HOUR)}
CTR_A, CTR_B = 1.0, 19.0
SESSION_GAP = 30 * MIN


def decayed(ts_list: list[int], as_of: int, half_life_ms: int) -> float:
    return sum(2.0 ** (-(as_of - ts) / half_life_ms) for ts in ts_list if ts <= as_of)


def _counts(prefix: str, ts_list: list[int], as_of: int,
            windows: tuple[str, ...]) -> dict[str, int]:
    return {f"{prefix}_{w}": window_count(ts_list, as_of, *WINDOWS[w]) for w in windows}


def _ctr(clicks: int, impressions: int) -> float:
    return (clicks + CTR_A) / (impressions + CTR_A + CTR_B)


def user_features(events: list[Event]) -> tuple[int, dict[str, Any]]:
    """(as_of_ts, features) of a user after exactly these events."""
    as_of = max(ev.ts for ev in events)
    clicks = [ev for ev in events if ev.source == "clicks"]
    click_ts = [ev.ts for ev in clicks]
    imp_ts = [ev.ts for ev in events if ev.source == "predictions"]
    f: dict[str, Any] = {}
    f.update(_counts("clicks", click_ts, as_of, ("1m", "5m", "1h", "24h")))
    f.update(_counts("impressions", imp_ts, as_of, ("5m", "1h", "24h")))
    for w in ("1h", "24h"):
        f[f"ctr_{w}"] = _ctr(f[f"clicks_{w}"], f[f"impressions_{w}"])
    f["ms_since_last_click"] = as_of - max(click_ts) if click_ts else None
    window, tile = WINDOWS["1h"]
    low = as_of - as_of % tile - (window - tile)
    f["distinct_items_clicked_1h"] = len({ev.body["item_id"] for ev in clicks
                                          if low <= ev.ts <= as_of})
    times = sorted(ev.ts for ev in events)
    first = len(times) - 1
    while first > 0 and times[first] - times[first - 1] < SESSION_GAP:
        first -= 1
    f["session_events"] = len(times) - first
    f["session_duration_ms"] = times[-1] - times[first]
    f["clicks_decayed_10m"] = decayed(click_ts, as_of, 10 * MIN)
    return as_of, f


def item_features(events: list[Event]) -> tuple[int, dict[str, Any]]:
    """(as_of_ts, features) of an item after exactly these events."""
    as_of = max(ev.ts for ev in events)
    click_ts = [ev.ts for ev in events if ev.source == "clicks"]
    imp_ts = [ev.ts for ev in events if ev.source == "predictions"]
    f: dict[str, Any] = {}
    f.update(_counts("impressions", imp_ts, as_of, ("5m", "1h", "24h")))
    f.update(_counts("clicks", click_ts, as_of, ("5m", "1h", "24h")))
    for w in ("1h", "24h"):
        f[f"ctr_{w}"] = _ctr(f[f"clicks_{w}"], f[f"impressions_{w}"])
    short = decayed(click_ts, as_of, 15 * MIN)
    long = decayed(click_ts, as_of, DAY)
    f["clicks_decayed_15m"] = short
    f["trend_ratio"] = None if long == 0 else (short / (15 * MIN)) / (long / DAY)
    return as_of, f


def same_features(got: dict[str, Any], expected: dict[str, Any], rel: float = 1e-9) -> bool:
    """Equal names and values; floats within a relative tolerance."""
    if set(got) != set(expected):
        return False
    for name, want in expected.items():
        have = got[name]
        if isinstance(want, float) and isinstance(have, int | float):
            if abs(have - want) > rel * max(1.0, abs(want)):
                return False
        elif have != want:
            return False
    return True
