"""The hostile-input table of ``test_hostile_input``: good logs and every class of bad record.

Each bad input topic case says how to damage a valid record of its topic and what the
dead letter's reason must say; each internal case is raw bytes for the items
repartition or item snapshots topic. Frames are spelled out byte by byte here (magic,
header length, JSON header, column buffers: README, engine/frames.py's layout) rather
than built with the engine's encoder, so the inputs do not depend on the code under
test.
"""

from __future__ import annotations

import json
import random
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

T0 = 1_767_225_600_000  # 2026-01-01, well inside the contract's [2000, 2100)
USERS = [f"user-{i}" for i in range(6)]
ITEMS = [f"item-{i}" for i in range(4)]
CLICKS, PREDICTIONS = "clicks", "predictions"
BOTH = (CLICKS, PREDICTIONS)

Body = dict[str, Any]


def dumps(obj: Any) -> bytes:
    """JSON as a hostile producer writes it: NaN/Infinity literals allowed."""
    return json.dumps(obj, allow_nan=True).encode()


@dataclass(frozen=True)
class Good:
    """A valid input record (key = its user_id)."""

    topic: str
    body: Body

    @property
    def key(self) -> bytes:
        return str(self.body["user_id"]).encode()

    @property
    def value(self) -> bytes:
        return dumps(self.body)


def prediction(k: int, user: str, item: str, ts: int, score: float) -> Body:
    return {"prediction_id": f"pred-{k}", "request_id": f"req-{k}", "user_id": user,
            "item_id": item, "model_id": "model-a", "score": score, "ts": ts}


def click(user: str, item: str, ts: int) -> Body:
    return {"user_id": user, "item_id": item, "ts": ts}


def good_log(n: int, start_ts: int, seed: int, tag: str) -> list[Good]:
    """``n`` predictions in event-time order, a click on about half of them 300 ms later.

    Event time grows with the log, so no good record is ever late: every dead letter
    the test sees must come from a bad record.
    """
    rng = random.Random(seed)
    out = []
    for k in range(n):
        ts = start_ts + 700 * k
        user, item = rng.choice(USERS), rng.choice(ITEMS)
        out.append(Good(PREDICTIONS, prediction(k, user, item, ts, round(rng.random(), 4))
                        | {"prediction_id": f"{tag}-pred-{k}", "request_id": f"{tag}-req-{k}"}))
        if rng.random() < 0.5:
            out.append(Good(CLICKS, click(user, item, ts + 300)))
    return out


# -- input topics ----------------------------------------------------------------------

Build = Callable[[Body], bytes | None]


def same(b: Body) -> bytes:
    return dumps(b)


def with_(**fields: Any) -> Build:
    return lambda b: dumps({**b, **fields})


def without(name: str) -> Build:
    return lambda b: dumps({k: v for k, v in b.items() if k != name})


def raw(value: bytes | None) -> Build:
    return lambda b: value


def append(text: bytes) -> Build:
    """The record with ``text`` spliced in before its closing brace (bytes json can't write)."""
    return lambda b: dumps(b)[:-1] + text + b"}"


def padded(size: int) -> Build:
    """A record of about ``size`` bytes: valid fields plus one big unknown field."""
    return lambda b: dumps({**b, "padding": "x" * size})


def nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b'{"a":1' + b"}" * depth


@dataclass(frozen=True)
class Case:
    """A bad input record: how it is made from a valid one, and the reason it must get."""

    name: str
    topics: tuple[str, ...]
    reason: str  # a regex the dead letter's reason must match
    build: Build
    #: "user": keyed by the record's user (as producers must), None: no key, else the key
    key: str | bytes | None = "user"


INPUT_CASES = [
    Case("tombstone", BOTH, r"^null value", raw(None)),
    Case("empty-value", BOTH, r"^empty value", raw(b"")),
    Case("blank-value", BOTH, r"^empty value", raw(b" \r\n\t ")),
    Case("null-key", BOTH, r"^null key", same, key=None),
    Case("key-is-another-user", BOTH, r"is not the record's user_id", same, key=b"user-x"),
    Case("huge-key", BOTH, r"is not the record's user_id", same, key=b"k" * 400_000),
    Case("non-utf8-bytes", BOTH, r"^not valid JSON", raw(b"\xff\xfe\xfd\x00junk")),
    Case("non-utf8-in-an-id", BOTH, r"^not valid JSON: .*UTF-8",
         lambda b: dumps(b).replace(b'"item-', b'"\xc3\x28item-')),
    Case("non-utf8-in-an-unknown-field", BOTH, r"^not valid JSON: .*UTF-8",
         append(b',"note":"caf\xe9"')),
    Case("lone-surrogate-id", BOTH, r"^not valid JSON: .*surrogate", with_(item_id="\ud800")),
    Case("not-json", BOTH, r"^not valid JSON", raw(b"user_id=user-1&item_id=item-1")),
    Case("truncated-json", BOTH, r"^not valid JSON", lambda b: dumps(b)[:-4]),
    Case("trailing-garbage", BOTH, r"^not valid JSON", lambda b: dumps(b) + b" }"),
    Case("json-array", BOTH, r"^expected a JSON object, got list", raw(b"[1, 2, 3]")),
    Case("json-string", BOTH, r"^expected a JSON object, got str", raw(b'"user-1"')),
    Case("json-integer", BOTH, r"^expected a JSON object, got int", raw(b"42")),
    Case("json-float", BOTH, r"^expected a JSON object, got float", raw(b"4.5")),
    Case("json-null", BOTH, r"^expected a JSON object, got NoneType", raw(b"null")),
    Case("json-true", BOTH, r"^expected a JSON object, got bool", raw(b"true")),
    Case("empty-object", BOTH, r"^missing field '", raw(b"{}")),
    Case("objects-10000-deep", BOTH, r"^not valid JSON: .*depth|nested deeper",
         raw(nested(10_000))),
    Case("arrays-10000-deep", BOTH, r"^not valid JSON: .*depth|nested deeper",
         raw(b"[" * 10_000 + b"]" * 10_000)),
    Case("unknown-field-100-deep", BOTH, r"nested deeper than 64 levels",
         append(b',"extra":' + nested(100))),
    Case("features-100-deep", (PREDICTIONS,), r"nested deeper than 64 levels",
         append(b',"features":' + nested(100))),
    Case("nan-score", (PREDICTIONS,), r"^not valid JSON", with_(score=float("nan"))),
    Case("nan-ts", BOTH, r"^not valid JSON", with_(ts=float("nan"))),
    Case("infinity-ts", BOTH, r"^not valid JSON", with_(ts=float("inf"))),
    Case("minus-infinity-propensity", (PREDICTIONS,), r"^not valid JSON",
         with_(propensity=float("-inf"))),
    Case("number-overflow-in-unknown-field", BOTH, r"^not valid JSON", append(b',"x":1e999')),
    Case("number-overflow-in-multiline-features", (PREDICTIONS,), r"^not valid JSON",
         append(b',"features":{\n"x": 1e999}')),
    Case("ts-as-string", BOTH, r"^field 'ts' must be an integer", with_(ts=str(T0))),
    Case("ts-as-float", BOTH, r"^field 'ts' must be an integer", with_(ts=T0 + 0.5)),
    Case("ts-as-bool", BOTH, r"^field 'ts' must be an integer", with_(ts=True)),
    Case("score-as-string", (PREDICTIONS,), r"^field 'score' must be a number",
         with_(score="0.5")),
    Case("user-id-as-number", BOTH, r"^field 'user_id' must be a string", with_(user_id=17)),
    Case("item-id-as-number", BOTH, r"^field 'item_id' must be a string", with_(item_id=3)),
    Case("click-id-as-object", (CLICKS,), r"^field 'click_id' must be a string",
         with_(click_id={"id": 1})),
    Case("served-as-string", (PREDICTIONS,), r"^field 'served' must be a boolean",
         with_(served="yes")),
    Case("features-as-list", (PREDICTIONS,), r"^field 'features' must be an object",
         with_(features=[1, 2])),
    Case("score-1.5", (PREDICTIONS,), r"^field 'score' 1.5 is outside \[0.0, 1.0\]",
         with_(score=1.5)),
    Case("score-negative", (PREDICTIONS,), r"^field 'score' -0.01 is outside",
         with_(score=-0.01)),
    Case("propensity-2", (PREDICTIONS,), r"^field 'propensity' 2 is outside",
         with_(propensity=2)),
    Case("position-negative", (PREDICTIONS,), r"^field 'position' must be a non-negative",
         with_(position=-1)),
    Case("position-2**64", (PREDICTIONS,), r"^field 'position' must be a non-negative",
         with_(position=2**64)),
    Case("ts-before-2000", BOTH, r"^field 'ts' 946684799999 is outside",
         with_(ts=946_684_799_999)),
    Case("ts-2100", BOTH, r"^field 'ts' 4102444800000 is outside", with_(ts=4_102_444_800_000)),
    Case("ts-negative", BOTH, r"^field 'ts' -1 is outside", with_(ts=-1)),
    Case("ts-huge-int", BOTH, r"^field 'ts' ", with_(ts=10**30)),
    Case("ts-int64-max", BOTH, r"^field 'ts' 9223372036854775807 is outside",
         with_(ts=2**63 - 1)),
    Case("user-id-257-chars", BOTH, r"^field 'user_id' is longer than 256",
         with_(user_id="u" * 257), key=b"u" * 257),
    Case("item-id-300-chars", BOTH, r"^field 'item_id' is longer than 256",
         with_(item_id="i" * 300)),
    Case("prediction-id-257-chars", (PREDICTIONS,), r"^field 'prediction_id' is longer",
         with_(prediction_id="p" * 257)),
    Case("empty-user-id", BOTH, r"^field 'user_id' must not be empty", with_(user_id=""), b""),
    Case("record-70-kib", BOTH, r"^record is \d+ bytes, more than 65536", padded(70_000)),
    Case("record-900-kb", BOTH, r"^record is \d+ bytes, more than 65536", padded(900_000)),
    Case("missing-ts", BOTH, r"^missing field 'ts'", without("ts")),
    Case("null-ts", BOTH, r"^missing field 'ts'", with_(ts=None)),
    Case("missing-user-id", BOTH, r"^missing field 'user_id'", without("user_id")),
    Case("missing-item-id", BOTH, r"^missing field 'item_id'", without("item_id")),
    Case("missing-prediction-id", (PREDICTIONS,), r"^missing field 'prediction_id'",
         without("prediction_id")),
    Case("missing-model-id", (PREDICTIONS,), r"^missing field 'model_id'", without("model_id")),
    Case("missing-score", (PREDICTIONS,), r"^missing field 'score'", without("score")),
    Case("repeated-ts-last-invalid", BOTH, r"^field 'ts' must be an integer",
         append(b',"ts":"later"')),
]


@dataclass(frozen=True)
class Bad:
    """A bad record as produced: its case, topic, key and value."""

    case: str
    topic: str
    key: bytes | None
    value: bytes | None
    reason: str


def bad_record(case: Case, topic: str, base: Body) -> Bad:
    key = (str(base["user_id"]).encode() if case.key == "user"
           else case.key.encode() if isinstance(case.key, str) else case.key)
    return Bad(case.name, topic, key, case.build(base), case.reason)


def hostile_log(goods: list[Good]) -> list[Good | Bad]:
    """Every bad case on each of its topics, each after two good records (same users)."""
    out: list[Good | Bad] = []
    it = iter(goods)
    pairs = [(case, topic) for case in INPUT_CASES for topic in case.topics]
    for i, (case, topic) in enumerate(pairs):
        out.extend(g for _, g in zip(range(2), it, strict=False))
        user, item = USERS[i % len(USERS)], ITEMS[i % len(ITEMS)]
        ts = T0 + 700 * i
        base = (prediction(i, user, item, ts, 0.5) | {"prediction_id": f"bad-{i}"}
                if topic == PREDICTIONS else click(user, item, ts))
        out.append(bad_record(case, topic, base))
    out.extend(it)
    return out


# -- internal topics -------------------------------------------------------------------

FRAME_MAGIC = b"FRF1"


def frame(n: int, cols: list[tuple[str, str, bytes]], meta: Body | None = None,
          header: bytes | None = None) -> bytes:
    """A frame's bytes: magic, header length (u32 LE), JSON header, column buffers."""
    head = header if header is not None else json.dumps(
        {"n": n, "cols": [[name, kind] for name, kind, _ in cols], "meta": meta or {}},
        separators=(",", ":")).encode()
    return FRAME_MAGIC + struct.pack("<I", len(head)) + head + b"".join(c[2] for c in cols)


def i64(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}q", *values)


def strings(*values: bytes) -> bytes:
    """A str/bytes column: n + 1 int64 offsets, then the blob."""
    cuts = [0]
    for v in values:
        cuts.append(cuts[-1] + len(v))
    return i64(*cuts) + b"".join(values)


def forward(source: bytes = b"\x00", ts: bytes = i64(T0), item: tuple[str, bytes] = (
        "str", strings(b"item-0")), meta: Body | None = None) -> bytes:
    """A one-row forward frame of the items repartition topic, with parts replaced."""
    return frame(1, [("source", "i8", source), ("offset", "i64", i64(3)), ("ts", "i64", ts),
                     ("item_id", item[0], item[1]), ("user_id", "str", strings(b"user-0")),
                     ("prediction_id", "str", strings(b""))],
                 {"origin": 0, "wm": None} if meta is None else meta)


def snapshot(pids: tuple[str, bytes], snaps: tuple[str, bytes]) -> bytes:
    return frame(1, [("prediction_id", *pids), ("snapshot", *snaps)])


_RNG = random.Random(20260101)
RANDOM_BYTES = bytes(_RNG.randrange(256) for _ in range(300))
#: offsets whose int64 differences overflow, so that a check of ``np.diff(offsets) >= 0``
#: passes and the next column is read from a negative position (IndexError, once)
OVERFLOWING = frame(2, [("s", "str", i64(0, 2**63 - 1, -(2**63))),
                        ("t", "str", i64(0, 1, 2) + b"ab")])
DEEP_META = frame(0, [], header=b'{"n":0,"cols":[],"meta":' + nested(5_000) + b"}")

#: (name, raw value) for both internal topics
INTERNAL_COMMON = [
    ("tombstone", None), ("empty", b""), ("random-bytes", RANDOM_BYTES),
    ("a-click-json", dumps(click("user-0", "item-0", T0))),
    ("bad-magic", b"FRF0" + RANDOM_BYTES[:40]), ("magic-only", FRAME_MAGIC),
    ("header-past-end", FRAME_MAGIC + struct.pack("<I", 10_000) + b'{"n":1}'),
    ("header-not-json", frame(0, [], header=b"\xff{oops")),
    ("header-negative-rows", frame(-3, [])), ("deep-header-meta", DEEP_META),
    ("column-past-end", frame(4, [("x", "i64", i64(1))])),
    ("overflowing-offsets", OVERFLOWING),
    ("unknown-kind", frame(1, [("x", "u128", b"\x00" * 16)])),
    ("trailing-bytes", frame(1, [("x", "i64", i64(1) + b"!!")])),
    ("no-columns", frame(0, [])),
]
REPARTITION_CASES = [*INTERNAL_COMMON,
    ("source-out-of-range", forward(source=b"\x07")),
    ("source-negative", forward(source=b"\xff")),
    ("item-id-as-i64", forward(item=("i64", i64(5)))),
    ("ts-as-string-column", frame(1, [("source", "i8", b"\x00"), ("offset", "i64", i64(3)),
                                      ("ts", "str", strings(b"x")),
                                      ("item_id", "str", strings(b"item-0")),
                                      ("user_id", "str", strings(b"user-0")),
                                      ("prediction_id", "str", strings(b""))],
                                 {"origin": 0, "wm": None})),
    ("ts-out-of-range", forward(ts=i64(5))),
    ("origin-out-of-range", forward(meta={"origin": 99, "wm": None})),
    ("origin-not-an-int", forward(meta={"origin": "zero", "wm": None})),
    ("origin-a-float", forward(meta={"origin": 0.5, "wm": None})),
    ("watermark-a-string", forward(meta={"origin": 0, "wm": "soon"})),
    ("missing-origin", forward(meta={"wm": None})),
]
SNAPSHOT_CASES = [*INTERNAL_COMMON,
    ("missing-snapshot-column", frame(1, [("prediction_id", "str", strings(b"pred-0"))])),
    ("prediction-id-as-i64", snapshot(("i64", i64(1)), ("bytes", strings(b"{}")))),
    ("snapshot-not-json", snapshot(("str", strings(b"good-pred-0")),
                                   ("bytes", strings(b"<html>oops")))),
    ("snapshot-not-an-object", snapshot(("str", strings(b"good-pred-1")),
                                        ("bytes", strings(b"[1,2]")))),
]
INTERNAL_REASONS = {"items_repartition": r"^not a forward frame: ",
                    "item_snapshots": r"^not an item snapshot frame: "}


@dataclass
class Expected:
    """One expected dead letter: where its input is, what it was, and why."""

    case: str
    logical: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    matched: list[Body] = field(default_factory=list)

    def reason_ok(self, reason: str) -> bool:
        return re.search(self.reason, reason) is not None
