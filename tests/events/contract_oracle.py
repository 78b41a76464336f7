"""The input contract restated in plain Python (stdlib ``json``): the fuzz tests' oracle.

Nothing here imports freshet. It follows the README's topic contracts: a UTF-8 JSON
object of at most 64 KiB, nested at most 64 levels, with no NaN/Infinity, no number
beyond a double's range and no lone surrogate anywhere; ids are non-empty strings
of at most 256 characters; ``ts`` an integer in [2000-01-01, 2100-01-01) ms;
``score``/``propensity`` numbers in [0, 1]; ``position`` an integer >= 0 (JSON
integers are read up to 2**64 - 1, as the decoders' parser does); ``features`` an
object; ``served`` a boolean; null is the same as absent for optional fields;
unknown fields are ignored; of a repeated field the last one counts (but the text of
the others must be valid too).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_RECORD_BYTES = 64 * 1024
MAX_DEPTH = 64
MAX_ID = 256
TS_MIN, TS_MAX = 946_684_800_000, 4_102_444_800_000
PRED_IDS = ("prediction_id", "request_id", "user_id", "item_id", "model_id")
CLICK_IDS = ("user_id", "item_id")
CLICK_OPTIONAL_IDS = ("click_id", "request_id", "prediction_id")


class Invalid(Exception):
    """The oracle's verdict: the record breaks the contract."""


def _reject_constant(name: str) -> Any:
    raise Invalid(f"non-finite literal {name}")


def depth(text: str) -> int:
    """Deepest bracket nesting outside strings (exact for valid JSON).

    >>> depth('{"a": [1, {"b": "[[["}]}')
    3
    """
    deepest = level = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            level += 1
            deepest = max(deepest, level)
        elif ch in "]}":
            level -= 1
    return deepest


def _check_values(value: Any) -> None:
    """No infinite number, no number past a double, no lone surrogate, at any depth."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, float) and not math.isfinite(v):
            raise Invalid("number out of a double's range")
        elif isinstance(v, int) and not isinstance(v, bool):
            try:
                float(v)
            except OverflowError:
                raise Invalid("integer out of a double's range") from None
        elif isinstance(v, str):
            try:
                v.encode()
            except UnicodeEncodeError:
                raise Invalid("lone surrogate") from None


def load(raw: bytes | None) -> dict[str, Any]:
    """The record as a dict, or :class:`Invalid`."""
    if raw is None or len(raw) > MAX_RECORD_BYTES:
        raise Invalid("null or too large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("not UTF-8") from None
    if depth(text) > MAX_DEPTH:
        raise Invalid("too deep")
    shadowed: list[Any] = []  # values of repeated fields: checked although they lose

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                shadowed.append(out[k])
            out[k] = v
        return out

    try:
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=pairs)
    except ValueError:
        raise Invalid("not JSON") from None
    _check_values([obj, shadowed])
    if not isinstance(obj, dict):
        raise Invalid("not an object")
    return obj


def _id(obj: dict[str, Any], name: str, required: bool = True) -> str | None:
    v = obj.get(name)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not 1 <= len(v) <= MAX_ID:
        raise Invalid(name)
    return v


def _unit(obj: dict[str, Any], name: str, required: bool = True) -> float | None:
    v = obj.get(name)
    if v is None and not required:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        raise Invalid(name)
    return float(v)


def _ts(obj: dict[str, Any]) -> int:
    v = obj.get("ts")
    if isinstance(v, bool) or not isinstance(v, int) or not TS_MIN <= v < TS_MAX:
        raise Invalid("ts")
    return v


def prediction(raw: bytes | None) -> dict[str, Any]:
    """The fields a valid prediction decodes to (optional ones None when absent)."""
    obj = load(raw)
    out: dict[str, Any] = {name: _id(obj, name) for name in PRED_IDS}
    out["score"] = _unit(obj, "score")
    out["ts"] = _ts(obj)
    position = obj.get("position")
    if position is not None and (isinstance(position, bool) or not isinstance(position, int)
                                 or not 0 <= position < 2**64):
        raise Invalid("position")
    out["position"] = position
    out["propensity"] = _unit(obj, "propensity", required=False)
    features = obj.get("features")
    if features is not None and not isinstance(features, dict):
        raise Invalid("features")
    out["features"] = features
    served = obj.get("served")
    if served is not None and not isinstance(served, bool):
        raise Invalid("served")
    out["served"] = served
    return out


def click(raw: bytes | None) -> dict[str, Any]:
    """The fields a valid click decodes to."""
    obj = load(raw)
    out: dict[str, Any] = {name: _id(obj, name) for name in CLICK_IDS}
    out["ts"] = _ts(obj)
    out.update({name: _id(obj, name, required=False) for name in CLICK_OPTIONAL_IDS})
    return out
