"""Event contracts for the two input topics, decoded with orjson and validated.

`predictions` and `clicks` carry JSON objects; `ts` is the event time in integer
milliseconds (UTC). Unknown fields are tolerated and ignored. A record that breaks
the contract raises :class:`ContractError`, whose ``reason`` is a short, stable
message that goes with the raw bytes to the ``dead-letters`` topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

#: Version of every record freshet publishes (features, labels, dead letters...).
SCHEMA_VERSION = 1

#: Event times must fall in [2000-01-01, 2100-01-01) UTC, in milliseconds.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000

#: Longest accepted identifier (user, item, model, prediction, request, click ids).
MAX_ID_LEN = 256

#: Largest accepted raw record, in bytes.
MAX_RECORD_BYTES = 64 * 1024

#: Deepest accepted nesting of objects and arrays (the record itself is level 1).
#: Logged features are copied raw into outputs two levels deeper and into the label
#: changelog, whose readers (msgspec, orjson) stop near 1,000 levels or at the
#: interpreter's recursion limit: a deeper record would make outputs or state
#: unreadable, so it is a dead letter at the door.
MAX_DEPTH = 64


class ContractError(ValueError):
    """An input record that breaks its topic's contract.

    >>> str(ContractError("missing field 'ts'"))
    "missing field 'ts'"
    """

    @property
    def reason(self) -> str:
        """The human-readable reason, as written to ``dead-letters``."""
        return str(self.args[0]) if self.args else "invalid record"


@dataclass(frozen=True, slots=True)
class Prediction:
    """A served prediction (an impression) as published on ``predictions``.

    >>> p = Prediction("p1", "r1", "u1", "i1", "m1", 0.25, 1_700_000_000_000)
    >>> (p.user_id, p.score, p.position)
    ('u1', 0.25, None)
    """

    prediction_id: str
    request_id: str
    user_id: str
    item_id: str
    model_id: str
    score: float
    ts: int
    position: int | None = None
    propensity: float | None = None
    features: dict[str, Any] | None = None
    #: False for a shadow model's score of the same request and item (None: served)
    served: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict, optional fields omitted when unset.

        >>> Prediction("p1", "r1", "u1", "i1", "m1", 0.5, 1_700_000_000_000).to_dict()["ts"]
        1700000000000
        """
        out: dict[str, Any] = {
            "prediction_id": self.prediction_id,
            "request_id": self.request_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "model_id": self.model_id,
            "score": self.score,
            "ts": self.ts,
        }
        if self.position is not None:
            out["position"] = self.position
        if self.propensity is not None:
            out["propensity"] = self.propensity
        if self.features is not None:
            out["features"] = self.features
        if self.served is not None:
            out["served"] = self.served
        return out


@dataclass(frozen=True, slots=True)
class Click:
    """A click as published on ``clicks``; attribution ids are optional.

    >>> Click("u1", "i1", 1_700_000_000_000, prediction_id="p1").request_id is None
    True
    """

    user_id: str
    item_id: str
    ts: int
    click_id: str | None = None
    request_id: str | None = None
    prediction_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict, optional ids omitted when unset.

        >>> Click("u1", "i1", 1_700_000_000_000).to_dict()
        {'user_id': 'u1', 'item_id': 'i1', 'ts': 1700000000000}
        """
        out: dict[str, Any] = {"user_id": self.user_id, "item_id": self.item_id, "ts": self.ts}
        if self.click_id is not None:
            out["click_id"] = self.click_id
        if self.request_id is not None:
            out["request_id"] = self.request_id
        if self.prediction_id is not None:
            out["prediction_id"] = self.prediction_id
        return out


def _load(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise ContractError("null value (a Kafka tombstone): expected a JSON object")
    if len(raw) > MAX_RECORD_BYTES:
        raise ContractError(f"record is {len(raw)} bytes, more than {MAX_RECORD_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ContractError(f"expected a JSON object, got {type(obj).__name__}")
    if _deeper_than(obj, MAX_DEPTH):
        raise ContractError(f"nested deeper than {MAX_DEPTH} levels")
    return obj


def _deeper_than(obj: dict[str, Any], limit: int) -> bool:
    """Whether objects/arrays nest more than ``limit`` levels (iterative: no recursion).

    >>> _deeper_than({"a": [{"b": 1}]}, 3), _deeper_than({"a": [{"b": 1}]}, 2)
    (False, True)
    """
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _id(obj: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ContractError(f"missing field '{name}'")
        return None
    if not isinstance(value, str):
        raise ContractError(f"field '{name}' must be a string, got {type(value).__name__}")
    if not value:
        raise ContractError(f"field '{name}' must not be empty")
    if len(value) > MAX_ID_LEN:
        raise ContractError(f"field '{name}' is longer than {MAX_ID_LEN} characters")
    return value


def _ts(obj: dict[str, Any]) -> int:
    value = obj.get("ts")
    if value is None:
        raise ContractError("missing field 'ts'")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(
            f"field 'ts' must be an integer (epoch milliseconds), got {type(value).__name__}"
        )
    if not MIN_TS_MS <= value < MAX_TS_MS:
        raise ContractError(
            f"field 'ts' {value} is outside [{MIN_TS_MS}, {MAX_TS_MS}) epoch milliseconds"
        )
    return value


def _number(obj: dict[str, Any], name: str, lo: float, hi: float) -> float:
    value = obj.get(name)
    if value is None:
        raise ContractError(f"missing field '{name}'")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"field '{name}' must be a number, got {type(value).__name__}")
    if not lo <= value <= hi:  # also rejects NaN
        raise ContractError(f"field '{name}' {value} is outside [{lo}, {hi}]")
    return float(value)


def _optional_number(obj: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    return None if obj.get(name) is None else _number(obj, name, lo, hi)


def parse_prediction(obj: dict[str, Any]) -> Prediction:
    """Validate a decoded ``predictions`` object.

    >>> parse_prediction({"prediction_id": "p", "request_id": "r", "user_id": "u",
    ...     "item_id": "i", "model_id": "m", "score": 1, "ts": 1_700_000_000_000}).score
    1.0
    """
    prediction_id = _id(obj, "prediction_id") or ""
    request_id = _id(obj, "request_id") or ""
    user_id = _id(obj, "user_id") or ""
    item_id = _id(obj, "item_id") or ""
    model_id = _id(obj, "model_id") or ""
    score = _number(obj, "score", 0.0, 1.0)
    ts = _ts(obj)
    position = obj.get("position")
    if position is not None and (
        isinstance(position, bool) or not isinstance(position, int) or position < 0
    ):
        raise ContractError("field 'position' must be a non-negative integer")
    propensity = _optional_number(obj, "propensity", 0.0, 1.0)
    features = obj.get("features")
    if features is not None and not isinstance(features, dict):
        raise ContractError("field 'features' must be an object")
    served = obj.get("served")
    if served is not None and not isinstance(served, bool):
        raise ContractError(f"field 'served' must be a boolean, got {type(served).__name__}")
    return Prediction(
        prediction_id, request_id, user_id, item_id, model_id, score, ts,
        position=position, propensity=propensity, features=features, served=served,
    )


def parse_click(obj: dict[str, Any]) -> Click:
    """Validate a decoded ``clicks`` object.

    >>> parse_click({"user_id": "u", "item_id": "i", "ts": 1_700_000_000_000, "x": 1}).item_id
    'i'
    """
    return Click(
        user_id=_id(obj, "user_id") or "",
        item_id=_id(obj, "item_id") or "",
        ts=_ts(obj),
        click_id=_id(obj, "click_id", required=False),
        request_id=_id(obj, "request_id", required=False),
        prediction_id=_id(obj, "prediction_id", required=False),
    )


def decode_prediction(raw: bytes | None) -> Prediction:
    """Decode and validate raw ``predictions`` bytes, or raise :class:`ContractError`.

    >>> decode_prediction(b'{"prediction_id":"p","request_id":"r","user_id":"u",'
    ...     b'"item_id":"i","model_id":"m","score":0.5,"ts":1700000000000}').model_id
    'm'
    >>> decode_prediction(b'{"score": 2}')
    Traceback (most recent call last):
    ...
    events.contracts.ContractError: missing field 'prediction_id'
    """
    return parse_prediction(_load(raw))


def decode_click(raw: bytes | None) -> Click:
    """Decode and validate raw ``clicks`` bytes, or raise :class:`ContractError`.

    >>> decode_click(b'{"user_id":"u","item_id":"i","ts":1700000000000}').ts
    1700000000000
    >>> decode_click(b'{"user_id":"u","item_id":"i","ts":"yesterday"}')
    Traceback (most recent call last):
    ...
    events.contracts.ContractError: field 'ts' must be an integer (epoch milliseconds), got str
    """
    return parse_click(_load(raw))
