"""The label-order feed: maturity, label order, cross-topic gating, exact resume positions.

The oracle is written out independently: the examples applied are the final ones with
``prediction_ts`` below the last global label watermark, sorted by
``(prediction_ts, prediction_id, label_version)``; a crash at any point followed by a
resume from the last position gives that same sequence, no example lost or repeated.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.feed import Key, LabelOrderFeed, example_key


@dataclass
class World:
    """What the engine published: examples per partition, and label-watermark records."""

    parts: list[list[tuple[Key | None, bytes]]]
    #: label watermark records in publish order: (values per label partition, the
    #: examples' end offsets when it was published)
    watermarks: list[tuple[dict[int, int], list[int]]]
    final_watermark: int
    expected: list[bytes] = field(default_factory=list)
    late: set[bytes] = field(default_factory=set)


def make_world(rnd: random.Random, n: int, n_parts: int, label_parts: int,
               late_fraction: float = 0.0) -> World:
    """Examples published at their label time; watermarks that never pass an unpublished one.

    With ``late_fraction``, some examples are published only after a watermark passed
    them (late: what the engine must not do, but a trainer must survive), and a last
    watermark passes everything.
    """
    rows = []
    for i in range(n):
        ts = rnd.randrange(0, 400)
        final = rnd.random() > 0.15
        key = (ts, f"p{i:04d}", 1) if final else None
        late = final and rnd.random() < late_fraction
        rows.append((ts + rnd.randrange(0, 120), rnd.randrange(n_parts), key, f"v{i}".encode(),
                     late))
    rows.sort(key=lambda r: r[0])
    parts: list[list[tuple[Key | None, bytes]]] = [[] for _ in range(n_parts)]
    watermarks: list[tuple[dict[int, int], list[int]]] = []
    current = dict.fromkeys(range(label_parts), -1)
    delayed: list[tuple[int, Key | None, bytes]] = []
    for i, (_, part, key, value, late) in enumerate(rows):
        if late:
            delayed.append((part, key, value))
        else:
            parts[part].append((key, value))
        if rnd.random() < 0.12 or i == len(rows) - 1:
            rest = [r[2][0] for r in rows[i + 1:] if r[2] is not None and not r[4]]
            bound = min(rest) if rest else 10_000
            # every label partition reports a value <= bound (some stale), monotone
            for lp in range(label_parts):
                if rnd.random() < 0.7:
                    current[lp] = max(current[lp], bound - rnd.choice([0, 0, 3, 50]))
            watermarks.append((dict(current), [len(p) for p in parts]))
            for d_part, d_key, d_value in delayed:  # published after that watermark
                parts[d_part].append((d_key, d_value))
            delayed = []
    if late_fraction:
        watermarks.append((dict.fromkeys(range(label_parts), 20_000), [len(p) for p in parts]))
    final_t = min(watermarks[-1][0].values())
    all_rows = [kv for p in parts for kv in p]
    expected = sorted((k, v) for k, v in all_rows if k is not None and k[0] < final_t)
    return World(parts, watermarks, final_t, [v for _, v in expected],
                 {d for r in rows if r[4] for d in [r[3]]})


class Reader:
    """Reads a world in a random interleaving: examples by partition, watermarks in order."""

    def __init__(self, world: World, rnd: random.Random, feed: LabelOrderFeed) -> None:
        self.world, self.rnd, self.feed = world, rnd, feed
        self.next = [feed.consumed.get(p, 0) for p in range(len(world.parts))]
        self.wm = feed.watermark_offsets.get(0, 0)

    def done(self) -> bool:
        return self.wm >= len(self.world.watermarks) and all(
            n >= len(p) for n, p in zip(self.next, self.world.parts, strict=True))

    def step(self) -> None:
        """Read a few examples of one partition, or the next watermark record."""
        world, rnd = self.world, self.rnd
        if rnd.random() < 0.3 and self.wm < len(world.watermarks):
            values, published_ends = world.watermarks[self.wm]
            # the end offsets when we read it: at least those when it was published
            ends = [min(len(p), e + rnd.choice([0, 0, 2, 10]))
                    for p, e in zip(world.parts, published_ends, strict=True)]
            self.wm += 1
            self.feed.seen_watermark_offset(0, self.wm)
            self.feed.add_label_watermarks(values, dict(enumerate(ends)))
            return
        part = rnd.randrange(len(world.parts))
        for _ in range(rnd.randrange(1, 6)):
            if self.next[part] >= len(world.parts[part]):
                break
            key, value = world.parts[part][self.next[part]]
            if key is not None:
                self.feed.hold(part, self.next[part], key, value)
            self.next[part] += 1
            self.feed.seen(part, self.next[part])


def run(world: World, rnd: random.Random, crash_every: float) -> tuple[list[bytes], int]:
    """Read and mature to the end, crashing at random; the applied values, crashes."""
    feed = LabelOrderFeed(len(world.watermarks[0][0]))
    applied: list[bytes] = []
    reader = Reader(world, rnd, feed)
    crashes = 0
    checkpoint: tuple[dict[str, object], int] | None = None
    while True:
        crashed = False
        for value, position in feed.mature():
            applied.append(value)
            if rnd.random() < 0.3:
                checkpoint = (json.loads(json.dumps(position)), len(applied))
            if rnd.random() < crash_every:
                crashed = True
                break
        if not crashed and rnd.random() < 0.2:
            checkpoint = (json.loads(json.dumps(feed.position())), len(applied))
        if not crashed and rnd.random() < crash_every / 3:
            crashed = True
        if crashed:
            crashes += 1
            pos, kept = checkpoint if checkpoint else (None, 0)
            del applied[kept:]  # work after the checkpoint is lost
            feed = LabelOrderFeed(feed.label_partitions) if pos is None else \
                LabelOrderFeed.resume(pos)
            for part, (lo, hi) in feed.recovery_ranges().items():
                for off in range(lo, hi):
                    key, value = world.parts[part][off]
                    if key is not None:
                        assert feed.hold(part, off, key, value) in ("held", "skipped")
            feed.end_recovery()
            reader = Reader(world, rnd, feed)
            continue
        if reader.done():
            break
        reader.step()
    return applied, crashes


@settings(derandomize=True, max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 3))
def test_crashes_anywhere_lose_and_repeat_nothing(seed: int, n_parts: int,
                                                  label_parts: int) -> None:
    world = make_world(random.Random(seed), 150, n_parts, label_parts)
    straight, _ = run(world, random.Random(seed + 1), crash_every=0.0)
    assert straight == world.expected
    crashed, _ = run(world, random.Random(seed + 2), crash_every=0.02)
    assert crashed == world.expected


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 2))
def test_late_examples_are_neither_lost_nor_repeated_across_crashes(seed: int, n_parts: int,
                                                                    label_parts: int) -> None:
    world = make_world(random.Random(seed), 150, n_parts, label_parts, late_fraction=0.1)
    on_time = [v for v in world.expected if v not in world.late]
    for crash_every in (0.0, 0.02):
        applied, _ = run(world, random.Random(seed + 3), crash_every)
        assert sorted(applied) == sorted(world.expected)  # each exactly once
        assert [v for v in applied if v not in world.late] == on_time  # still in label order


def test_crashes_do_happen_in_the_property_test() -> None:
    counts = [run(make_world(random.Random(s), 150, 3, 2), random.Random(s), 0.02)[1]
              for s in range(10)]
    assert sum(counts) >= 10


def test_a_watermark_waits_for_the_examples_published_before_it() -> None:
    feed = LabelOrderFeed(1)
    feed.hold(0, 0, (5, "a", 1), b"a")
    feed.add_label_watermarks({0: 100}, required={0: 3, 1: 1})  # ends when it was read
    assert list(feed.mature()) == []  # partition 0 read to 1 of 3, partition 1 not at all
    feed.hold(0, 1, (7, "b", 1), b"b")
    feed.hold(0, 2, (3, "c", 1), b"c")
    assert list(feed.mature()) == []
    feed.hold(1, 0, (4, "d", 1), b"d")
    assert [v for v, _ in feed.mature()] == [b"c", b"d", b"a", b"b"]


def test_the_global_watermark_is_the_minimum_over_label_partitions() -> None:
    feed = LabelOrderFeed(3)
    for i, ts in enumerate([10, 20, 30, 40]):
        feed.hold(0, i, (ts, f"p{i}", 1), b"%d" % ts)
    feed.add_label_watermarks({0: 50, 2: 50}, {0: 4})
    assert feed.global_watermark() is None and list(feed.mature()) == []
    feed.add_label_watermarks({1: 25}, {0: 4})
    assert [v for v, _ in feed.mature()] == [b"10", b"20"]
    feed.add_label_watermarks({1: 20}, {0: 4})  # a watermark never goes back
    assert feed.global_watermark() == 25
    feed.add_label_watermarks({1: 60}, {0: 4})
    assert [v for v, _ in feed.mature()] == [b"30", b"40"]


def test_late_examples_are_counted_and_applied_first_at_the_next_maturation() -> None:
    feed = LabelOrderFeed(1)
    feed.hold(0, 0, (10, "a", 1), b"a")
    feed.add_label_watermarks({0: 20}, {0: 1})
    assert [v for v, _ in feed.mature()] == [b"a"]
    assert feed.hold(0, 1, (25, "b", 1), b"b") == "held"
    assert feed.hold(0, 2, (15, "late", 1), b"late") == "late"
    feed.add_label_watermarks({0: 30}, {0: 3})
    assert [v for v, _ in feed.mature()] == [b"late", b"b"]
    assert feed.counters["late"] == 1


def test_a_late_example_held_at_a_checkpoint_survives_the_restart() -> None:
    feed = LabelOrderFeed(1)
    feed.hold(0, 0, (10, "a", 1), b"a")
    feed.add_label_watermarks({0: 20}, {0: 1})
    assert [v for v, _ in feed.mature()] == [b"a"]
    feed.hold(0, 1, (25, "b", 1), b"b")
    feed.hold(0, 2, (15, "late", 1), b"late")  # below the watermark applied, not applied
    again = LabelOrderFeed.resume(json.loads(json.dumps(feed.position())))
    assert again.recovery_ranges() == {0: (1, 3)}
    assert [again.hold(0, 0 + off, key, v) for off, key, v in
            [(1, (25, "b", 1), b"b"), (2, (15, "late", 1), b"late")]] == ["held", "held"]
    again.end_recovery()
    again.add_label_watermarks({0: 30}, {0: 3})
    assert [v for v, _ in again.mature()] == [b"late", b"b"]


def test_a_repeated_key_is_applied_once() -> None:
    feed = LabelOrderFeed(1)
    for off, part in enumerate([0, 1]):
        feed.hold(part, off, (5, "same", 1), b"x")
    feed.add_label_watermarks({0: 9}, {0: 1, 1: 2})
    assert [v for v, _ in feed.mature()] == [b"x"]
    assert feed.counters["duplicates"] == 1


KEY_TABLE = [
    (b'{"prediction_id":"p","label_version":2,"prediction_ts":7,"final":true,"x":1}',
     (7, "p", 2)),
    (b'{"prediction_id":"p","label_version":1,"prediction_ts":7,"final":false}', None),
    (b'not json', ValueError),
    (b'', ValueError),
    (b'{"prediction_id":"p","label_version":"1","prediction_ts":7,"final":true}', ValueError),
    (b'[1, 2]', ValueError),
]


@pytest.mark.parametrize(("raw", "expected"), KEY_TABLE)
def test_example_key_table(raw: bytes, expected: object) -> None:
    if expected is ValueError:
        with pytest.raises(ValueError, match="not a training example"):
            example_key(raw)
    else:
        assert example_key(raw) == expected


POSITION_TABLE = [
    ({"label_partitions": 0}, "label_partitions must be an integer >= 1"),
    ({"consumed": [1]}, "position field 'consumed' must be an object"),
    ({"maturing": "soon"}, "position field 'maturing' must be an integer or null"),
]


@pytest.mark.parametrize(("change", "message"), POSITION_TABLE)
def test_resume_rejects_a_broken_position(change: dict[str, object], message: str) -> None:
    position = {**LabelOrderFeed(2).position(), **change}
    with pytest.raises(ValueError, match=message):
        LabelOrderFeed.resume(position)


def test_a_resumed_feed_refuses_input_past_its_recovery_range() -> None:
    feed = LabelOrderFeed(1)
    feed.hold(0, 0, (5, "a", 1), b"a")
    again = LabelOrderFeed.resume(feed.position())
    assert again.recovery_ranges() == {0: (0, 1)}
    with pytest.raises(ValueError, match="past the recovery range"):
        again.hold(0, 1, (6, "b", 1), b"b")
    with pytest.raises(RuntimeError, match="during recovery"):
        list(again.mature())
