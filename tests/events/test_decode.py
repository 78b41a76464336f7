"""The fast decoders accept exactly what the precise contract accepts, on hostile input.

Inputs are generated records with every field mutated (wrong types, nulls, ranges,
NaN/Infinity literals, huge numbers, lone surrogates, deep nesting, duplicate keys,
extra fields) and raw bytes; the precise validator of events.contracts is the
oracle for both the verdict and the reason.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.contracts import ContractError, decode_click, decode_prediction
from events.decode import NULL_VALUE, decode_click_in, decode_prediction_in, encode

TS = 1_767_225_600_000
PRED = {"prediction_id": "p1", "request_id": "r1", "user_id": "u1", "item_id": "i1",
        "model_id": "m1", "score": 0.3, "ts": TS}
CLICK = {"user_id": "u1", "item_id": "i1", "ts": TS}

ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
    st.text(max_size=300), st.just("x" * 256), st.just("x" * 257), st.just(""),
    st.just("\ud800"), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    st.sampled_from([TS, TS - 1, 946_684_800_000, 946_684_799_999, 4_102_444_800_000, 0, 1.0,
                     0.0, -0.0, 1e400, 5, -1, 1.5]),
)


@st.composite
def records(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    rec: dict[str, Any] = dict(base)
    optional = (["position", "propensity", "features", "served"] if "score" in base
                else ["click_id", "request_id", "prediction_id"])
    for name in draw(st.lists(st.sampled_from([*base, *optional, "extra"]), max_size=4)):
        if draw(st.booleans()) and name in rec:
            del rec[name]
        else:
            rec[name] = draw(ODD_VALUES)
    text = json.dumps(rec, allow_nan=True)
    if draw(st.booleans()) and len(rec) > 1:  # a duplicate key: the last one wins
        first = next(iter(rec))
        text = text[:-1] + f', "{first}": ' + json.dumps(draw(ODD_VALUES), allow_nan=True) + "}"
    return text.encode("utf-8", "surrogatepass")


RAW = st.one_of(st.binary(max_size=80), st.just(b"null"), st.just(b"[]"), st.just(b" "),
                st.just(b"[" * 2000 + b"]" * 2000), st.just(b'{"a":' * 600 + b"1" + b"}" * 600))


def verdict(decode: Any, raw: bytes | None) -> tuple[bool, str]:
    try:
        decode(raw)
    except ContractError as exc:
        return False, exc.reason
    return True, ""


def same_prediction(raw: bytes) -> None:
    fast, precise = verdict(decode_prediction_in, raw), verdict(decode_prediction, raw)
    assert fast[0] == precise[0], (raw, fast, precise)
    if precise[0]:
        got = orjson.loads(encode(decode_prediction_in(raw)))
        assert got == decode_prediction(raw).to_dict()
    else:
        assert fast[1] == precise[1] or fast[1].startswith(("empty value", "field 'features'"))


def same_click(raw: bytes) -> None:
    fast, precise = verdict(decode_click_in, raw), verdict(decode_click, raw)
    assert fast[0] == precise[0], (raw, fast, precise)
    if precise[0]:
        assert decode_click_in(raw).to_click() == decode_click(raw)
    else:
        assert fast[1] == precise[1] or fast[1].startswith("empty value")


@settings(derandomize=True, max_examples=1500, deadline=None)
@given(raw=st.one_of(records(PRED), RAW))
def test_prediction_decoders_agree(raw: bytes) -> None:
    same_prediction(raw)


@settings(derandomize=True, max_examples=1500, deadline=None)
@given(raw=st.one_of(records(CLICK), RAW))
def test_click_decoders_agree(raw: bytes) -> None:
    same_click(raw)


@pytest.mark.parametrize("decode", [decode_prediction_in, decode_click_in])
@pytest.mark.parametrize(("raw", "reason"), [
    (None, NULL_VALUE),
    (b"", "empty value"),
    (b"  \n", "empty value"),
    (b"null", "expected a JSON object, got NoneType"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[" * 2000 + b"]" * 2000, "not valid JSON"),
])
def test_values_that_are_not_records(decode: Any, raw: bytes | None, reason: str) -> None:
    with pytest.raises(ContractError) as err:
        decode(raw)
    assert err.value.reason.startswith(reason)


def test_logged_features_stay_raw_and_null_features_are_absent() -> None:
    raw = orjson.dumps({**PRED, "features": {"x": [1, {"y": None}]}, "served": False})
    rec = decode_prediction_in(raw)
    assert bytes(rec.features) == b'{"x":[1,{"y":null}]}' and rec.served is False
    assert b"features" not in encode(decode_prediction_in(orjson.dumps({**PRED,
                                                                        "features": None})))
