"""The records the generator delivers: their topics, the features a prediction logs,
:class:`GeneratedRecord`, and the malformed copies of valid records (:data:`MALFORMED_KINDS`).

>>> TOPICS
('predictions', 'clicks')
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from events.contracts import MAX_ID_LEN, MAX_RECORD_BYTES

#: The logical topics the generator writes, in the order :func:`write_jsonl` counts them.
TOPICS: tuple[str, str] = ("predictions", "clicks")

#: The feature values a prediction logs in its ``features`` ("log and wait").
LOGGED_FEATURES: tuple[str, str] = ("user_ctr_prior", "item_popularity")

#: Every kind of damage a malformed record can carry, per topic.
MALFORMED_KINDS: dict[str, tuple[str, ...]] = {
    "predictions": (
        "not_json", "not_object", "missing_field", "bad_score", "bad_ts_type",
        "ts_out_of_range", "id_too_long", "empty_id", "bad_id_type", "bad_position",
        "bad_propensity", "bad_features", "too_large",
    ),
    "clicks": (
        "not_json", "not_object", "missing_field", "bad_ts_type", "ts_out_of_range",
        "id_too_long", "empty_id", "bad_id_type", "too_large",
    ),
}

_REQUIRED = {
    "predictions": ("prediction_id", "request_id", "user_id", "item_id", "model_id",
                    "score", "ts"),
    "clicks": ("user_id", "item_id", "ts"),
}
_ID_FIELDS = {
    "predictions": ("prediction_id", "request_id", "user_id", "item_id", "model_id"),
    "clicks": ("user_id", "item_id", "click_id"),
}


@dataclass(frozen=True, slots=True)
class GeneratedRecord:
    """One record to deliver: the exact value bytes, its key and its event time.

    >>> r = GeneratedRecord("clicks", b"u1", b'{"user_id":"u1"}', None, "missing_field")
    >>> r.valid
    False
    """

    #: Logical topic: ``"predictions"`` or ``"clicks"``.
    topic: str
    #: Record key: the user id in UTF-8 (malformed records may have none).
    key: bytes | None
    #: Exactly the bytes to produce.
    value: bytes
    #: Event time in epoch milliseconds, ``None`` for malformed records.
    ts: int | None
    #: ``None`` for a valid record, else the kind of damage (see :data:`MALFORMED_KINDS`).
    malformed: str | None = field(default=None)

    @property
    def valid(self) -> bool:
        """True when the record honours its topic's contract."""
        return self.malformed is None


def _dumps(obj: object) -> bytes:
    # orjson hands back bytes with ~4 KiB of spare capacity; a right-sized copy keeps
    # a million records in a few hundred MB instead of several GB.
    return bytes(memoryview(orjson.dumps(obj)))


def _corrupt(
    topic: str, template: dict[str, Any], kind: str, bad_id: str, prng: random.Random
) -> bytes:
    """Break ``template`` (a valid record, given a fresh id) in the way ``kind`` says."""
    obj = dict(template)
    obj["prediction_id" if topic == "predictions" else "click_id"] = bad_id
    if kind == "not_json":
        if prng.random() < 0.5:
            raw = _dumps(obj)
            return raw[: prng.randint(1, len(raw) - 1)]  # truncated: never valid JSON
        if prng.random() < 0.5:
            return b"\xff\xfe" + _dumps(obj)[1:-1]  # not UTF-8
        return f"user_id={obj['user_id']} item_id={obj['item_id']} ts={obj['ts']}".encode()
    if kind == "not_object":
        return prng.choice([_dumps([obj]), b"null", b"42", _dumps(str(obj.get("user_id")))])
    if kind == "missing_field":
        name = prng.choice(_REQUIRED[topic])
        if prng.random() < 0.5:
            del obj[name]
        else:
            obj[name] = None
    elif kind == "bad_score":
        obj["score"] = prng.choice([1.5, -0.25, 2, "0.7", True])
    elif kind == "bad_ts_type":
        ts = obj["ts"]
        obj["ts"] = prng.choice([str(ts), "2026-01-01T00:00:00Z", float(ts) + 0.5, True])
    elif kind == "ts_out_of_range":
        ts = obj["ts"]
        obj["ts"] = prng.choice([ts // 1000, ts * 1000, -1, 0])
    elif kind == "id_too_long":
        name = prng.choice(_ID_FIELDS[topic][:4] if topic == "predictions" else ("user_id",
                                                                                  "item_id"))
        obj[name] = str(obj[name]) + "-" + "x" * MAX_ID_LEN
    elif kind == "empty_id":
        obj[prng.choice(_ID_FIELDS[topic])] = ""
    elif kind == "bad_id_type":
        obj[prng.choice(_ID_FIELDS[topic])] = prng.choice([12345, ["u"], {"id": "u"}])
    elif kind == "bad_position":
        obj["position"] = prng.choice([-1, "1", 1.5])
    elif kind == "bad_propensity":
        obj["propensity"] = prng.choice([1.5, -0.1, "high"])
    elif kind == "bad_features":
        obj["features"] = prng.choice([[0.1, 0.2], "user_ctr_prior=0.05", 3])
    elif kind == "too_large":
        obj["debug_blob"] = "x" * (MAX_RECORD_BYTES + 1)
    else:  # pragma: no cover - MALFORMED_KINDS and this function move together
        raise AssertionError(f"unknown malformed kind {kind!r}")
    return _dumps(obj)
