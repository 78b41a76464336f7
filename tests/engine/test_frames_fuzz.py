"""Fuzzing the internal-topic decoders (frames) and the partitions that read Kafka bytes.

``frames.decode`` may raise nothing but FrameError on any bytes, and what it accepts
has the row count its header says. The partitions never raise on hostile records and
dead-letter each bad one exactly once: ``ItemPartition.process`` (items repartition),
``UserPartition.process_snapshots`` (item snapshots) and ``UserPartition.process``
(inputs; the verdict per record comes from the plain-Python ``contract_oracle``).
The worker's own frames, sent on by a user partition and answered by an item
partition, are never dead-lettered. Derandomized, bounded example counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine import InputBatch, ItemPartition, Result, UserPartition, frames
from engine.users import Counters
from features.catalog import default_catalog
from labels.config import LabelConfig
from tests.events import contract_oracle as oracle
from tests.events.test_decoders_fuzz import VALID_JSON, mutated, odd_records
from tests.streams.hostile_cases import (
    DEEP_META,
    OVERFLOWING,
    RANDOM_BYTES,
    frame,
    i64,
    nested,
    strings,
)

FUZZ = settings(derandomize=True, max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CATALOG = default_catalog()
TS = 1_767_225_600_000
INT64 = st.integers(-2**63, 2**63 - 1)
IDS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)


# -- frames ---------------------------------------------------------------------------

@st.composite
def frame_specs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    n = draw(st.integers(0, 6))
    def sized(values: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(values, min_size=n, max_size=n))

    kinds: dict[str, Callable[[], Any]] = {
        "i64": lambda: np.array(sized(INT64), np.int64),
        "f64": lambda: np.array(sized(st.floats()), np.float64),
        "i8": lambda: np.array(sized(st.integers(-128, 127)), np.int8),
        "str": lambda: sized(st.text(st.characters(codec="utf-8"))),
        "bytes": lambda: sized(st.binary(min_size=1))}
    names = draw(st.lists(st.text(max_size=5), max_size=4, unique=True))
    cols = {name: kinds[draw(st.sampled_from(sorted(kinds)))]() for name in names}
    return cols, draw(st.dictionaries(st.text(max_size=5), VALID_JSON, max_size=3))


@FUZZ
@given(spec=frame_specs())
def test_frames_round_trip(spec: tuple[dict[str, Any], dict[str, Any]]) -> None:
    cols, meta = spec
    got = frames.decode(frames.encode(frames.Frame(cols, meta)))
    assert list(got.columns) == list(cols) and got.meta == meta
    for name, want in cols.items():
        have = got.columns[name]
        if isinstance(want, np.ndarray) and len(want):
            assert have.dtype == want.dtype and np.array_equal(have, want, equal_nan=True)
        else:
            assert list(have) == list(want)


@st.composite
def damaged_frames(draw: st.DrawFn) -> bytes:
    """A valid frame's bytes with flips, cuts, inserts, or extreme int64s written over them."""
    data = bytearray(frames.encode(frames.Frame(*draw(frame_specs()))))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "cut", "insert", "int64"]))
        if op == "flip" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:i + draw(st.integers(1, 16))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=9))
        else:
            value = draw(st.sampled_from([0, 1, -1, 2**62, 2**63 - 1, -2**63, len(data)]))
            data[i:i + 8] = value.to_bytes(8, "little", signed=True)
    return bytes(data)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=64), st.binary(max_size=64).map(
    lambda b: b"FRF1" + b), damaged_frames(), st.none()))
def test_frames_decode_raises_only_frame_error(raw: bytes | None) -> None:
    try:
        frame = frames.decode(raw)
    except frames.FrameError as exc:
        assert str(exc)
        return
    assert raw is not None
    # accepted: it has the columns and the row count its header says (read with stdlib json)
    size = int.from_bytes(raw[4:8], "little")
    header = json.loads(raw[8:8 + size])
    assert list(frame.columns) == list(dict.fromkeys(name for name, _ in header["cols"]))
    assert all(len(values) == header["n"] for values in frame.columns.values())


# Hand-made frames that once got past frames.decode or crashed it (see issue 9's report).
CRAFTED = {
    "int64-overflowing offsets (was IndexError)": OVERFLOWING,
    "meta 5,000 levels deep (was RecursionError)": DEEP_META,
    "offsets past the end": frame(1, [("s", "bytes", i64(0, 99) + b"ab")]),
    "decreasing offsets": frame(2, [("s", "str", i64(0, 2, 1) + b"ab")]),
    "offsets not starting at 0": frame(1, [("s", "str", i64(1, 2) + b"ab")]),
    "str column not UTF-8": frame(1, [("s", "str", strings(b"\xff"))]),
    # found by the fuzz test above: msgspec skipped the unknown key without checking it
    "header key not UTF-8": (b"FRF1%\x00\x00\x00" + b'{"n":0,"cols":[["","str"]],"aet\x82":{}}'
                             + bytes(8)),
    "expected column of another kind": frame(1, [("source", "i64", i64(0))]),
}


@pytest.mark.parametrize("raw", list(CRAFTED.values()), ids=list(CRAFTED))
def test_crafted_frames_are_frame_errors(raw: bytes) -> None:
    with pytest.raises(frames.FrameError):
        frames.decode(raw, {"source": "i8"} if b"source" in raw else None)


# -- item partitions: forward frames ---------------------------------------------------

@st.composite
def forward_spec(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """The columns and meta of a valid forward frame (what a user partition sends)."""
    n = draw(st.integers(1, 5))
    source = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    cols = {"source": np.array(source, np.int8),
            "offset": np.array(draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n))),
            "ts": np.array(draw(st.lists(st.integers(oracle.TS_MIN, oracle.TS_MAX - 1),
                                         min_size=n, max_size=n))),
            "item_id": draw(st.lists(IDS, min_size=n, max_size=n)),
            "user_id": draw(st.lists(IDS, min_size=n, max_size=n)),
            "prediction_id": [draw(IDS) if s else "" for s in source]}
    return cols, {"origin": draw(st.integers(0, 1)),
                  "wm": draw(st.one_of(st.none(), st.integers(oracle.TS_MIN, TS)))}


#: One broken part of a valid forward frame (each makes the frame foreign).
BREAKS: dict[str, Any] = {
    "source": st.sampled_from([2, 7, -1, 127]), "offset": st.just(-1),
    "ts": st.sampled_from([0, oracle.TS_MIN - 1, oracle.TS_MAX, -2**63]),
    "item_id": st.sampled_from(["", "x" * 257]), "user_id": st.sampled_from(["", "u" * 300]),
    "origin": st.sampled_from([2, -1, True, 0.0, "0", None]),
    "wm": st.sampled_from(["soon", 1.5, True, [1]]),
}


@st.composite
def broken_forward(draw: st.DrawFn) -> bytes:
    cols, meta = draw(forward_spec())
    part = draw(st.sampled_from([*BREAKS, "prediction_id", "kind", "missing"]))
    if part in meta:
        meta[part] = draw(BREAKS[part])
    elif part == "kind":
        name = draw(st.sampled_from(sorted(cols)))
        cols[name] = ([str(x) for x in cols[name]] if isinstance(cols[name], np.ndarray)
                      else np.zeros(len(cols[name]), np.int64))
    elif part == "missing":
        del cols[draw(st.sampled_from(sorted(cols)))]
    elif part == "prediction_id":
        cols["source"][0] = 1 - cols["source"][0]  # a click with an id or a prediction without
        cols["prediction_id"][0] = "" if cols["source"][0] else "p"
    else:
        values = cols[part]
        values[draw(st.integers(0, len(values) - 1))] = draw(BREAKS[part])
    return frames.encode(frames.Frame(cols, meta))


def dead_offsets(result: Result, topic: str) -> list[int]:
    out = []
    for o in result.outputs:
        if o.topic == "dead_letters":
            src = json.loads(o.value or b"")["source"]
            assert src["logical"] == topic
            out.append(src["offset"])
    return out


KIND = st.sampled_from(["good", "broken", "damaged", "garbage"])


@FUZZ
@given(kinds=st.lists(KIND, min_size=1, max_size=6), data=st.data())
def test_item_partition_dead_letters_each_foreign_frame_once(kinds: list[str],
                                                             data: st.DataObject) -> None:
    draw = data.draw
    make: dict[str, Callable[[], bytes | None]] = {
            "good": lambda: frames.encode(frames.Frame(*draw(forward_spec()))),
            "broken": lambda: draw(broken_forward()), "damaged": lambda: draw(damaged_frames()),
            "garbage": lambda: draw(st.sampled_from([None, b"", RANDOM_BYTES, nested(3000)]))}
    records = [(i, make[k]()) for i, k in enumerate(kinds)]
    counters = Counters()
    part = ItemPartition(0, CATALOG.item, 2, snapshots=True, counters=counters)
    dead = dead_offsets(part.process(records), "items_repartition")
    assert len(dead) == len(set(dead)) == counters.dead_letters
    assert {i for i, k in enumerate(kinds) if k in ("broken", "garbage")} <= set(dead)
    assert not {i for i, k in enumerate(kinds) if k == "good"} & set(dead)


# -- user partitions: item snapshots and inputs ------------------------------------------

SNAPSHOT_BREAKS = [b"", b"not json", b"[1]", b"null", b'{"a":', b'{"a":"\xff"}', b'"x"']


@FUZZ
@given(kinds=st.lists(KIND, min_size=1, max_size=6), data=st.data())
def test_user_partition_dead_letters_each_foreign_snapshot_frame_once(
        kinds: list[str], data: st.DataObject) -> None:
    draw = data.draw

    def good() -> frames.Frame:
        n = draw(st.integers(1, 4))
        snaps = [json.dumps(draw(st.dictionaries(st.text(max_size=4), VALID_JSON,
                                                 max_size=2))).encode() for _ in range(n)]
        return frames.Frame({"prediction_id": draw(st.lists(IDS, min_size=n, max_size=n)),
                             "snapshot": snaps})

    def broken() -> bytes:
        f = good()
        if draw(st.booleans()):
            f.columns["snapshot"][0] = draw(st.sampled_from(SNAPSHOT_BREAKS))
        else:
            del f.columns[draw(st.sampled_from(["prediction_id", "snapshot"]))]
        return frames.encode(f)

    make: dict[str, Callable[[], bytes | None]] = {
            "good": lambda: frames.encode(good()), "broken": broken,
            "damaged": lambda: draw(damaged_frames()),
            "garbage": lambda: draw(st.sampled_from([None, b"", RANDOM_BYTES]))}
    records = [(i, make[k]()) for i, k in enumerate(kinds)]
    counters = Counters()
    user = UserPartition(0, CATALOG.user, LabelConfig(), 5_000, lambda item: 0, counters,
                         check_keys=True)
    dead = dead_offsets(user.process_snapshots(records), "item_snapshots")
    assert len(dead) == len(set(dead)) == counters.dead_letters
    assert {i for i, k in enumerate(kinds) if k in ("broken", "garbage")} <= set(dead)
    assert not {i for i, k in enumerate(kinds) if k == "good"} & set(dead)


VALUES = st.one_of(odd_records(), mutated(), st.binary(max_size=40), st.none())


@FUZZ
@given(inputs=st.lists(st.tuples(st.integers(0, 1), VALUES), min_size=1, max_size=8))
def test_user_partition_dead_letters_exactly_the_contracts_bad_records(
        inputs: list[tuple[int, bytes | None]]) -> None:
    verdicts: list[bool] = []
    keys: list[bytes | None] = []
    for src, raw in inputs:
        try:
            rec = (oracle.prediction if src else oracle.click)(raw)
            verdicts.append(True)
            keys.append(str(rec["user_id"]).encode())  # keyed as producers must
        except oracle.Invalid:
            verdicts.append(False)
            keys.append(b"some-key")
    batch = InputBatch(np.array([s for s, _ in inputs], np.int8),
                       np.arange(len(inputs), dtype=np.int64), keys, [v for _, v in inputs])
    counters = Counters()
    user = UserPartition(0, CATALOG.user, LabelConfig(), 5_000, lambda item: 0, counters,
                         check_keys=True)
    result = user.process(batch, now_wall_ms=0)
    letters = [json.loads(o.value or b"") for o in result.outputs if o.topic == "dead_letters"]
    offsets = [d["source"]["offset"] for d in letters]
    assert len(offsets) == len(set(offsets)), "a record dead-lettered twice"
    late = {d["source"]["offset"] for d in letters if d["reason"].startswith("late event")}
    assert set(offsets) - late == {i for i, ok in enumerate(verdicts) if not ok}
    assert all(verdicts[i] for i in late)

    # the worker's own frames from these records are never dead letters downstream
    item = ItemPartition(0, CATALOG.item, 1, snapshots=True, counters=counters)
    forwarded = [(i, o.value) for i, o in enumerate(result.outputs)
                 if o.topic == "items_repartition"]
    event(f"forwarded: {bool(forwarded)}")
    answers = item.process(forwarded)
    snapshots = [(i, o.value) for i, o in enumerate(answers.outputs)
                 if o.topic == "item_snapshots"]
    event(f"snapshots: {bool(snapshots)}")
    back = user.process_snapshots(snapshots)
    assert dead_offsets(answers, "items_repartition") == []
    assert dead_offsets(back, "item_snapshots") == []
    assert counters.dead_letters == len(offsets)
