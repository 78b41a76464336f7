"""Input contracts: every required field, type and range, table-driven."""

from __future__ import annotations

import orjson
import pytest

from events.contracts import (
    MAX_ID_LEN,
    Click,
    ContractError,
    Prediction,
    decode_click,
    decode_prediction,
)

TS = 1_767_225_600_000
PRED = {"prediction_id": "p1", "request_id": "r1", "user_id": "u1", "item_id": "i1",
        "model_id": "m1", "score": 0.3, "ts": TS}
CLICK = {"user_id": "u1", "item_id": "i1", "ts": TS}


def test_valid_prediction_round_trips() -> None:
    full = {**PRED, "position": 2, "propensity": 0.5, "features": {"x": 1}, "extra": "ignored"}
    p = decode_prediction(orjson.dumps(full))
    assert p == Prediction("p1", "r1", "u1", "i1", "m1", 0.3, TS, 2, 0.5, {"x": 1})
    assert decode_prediction(orjson.dumps(p.to_dict())) == p


def test_valid_click_round_trips() -> None:
    c = decode_click(orjson.dumps({**CLICK, "click_id": "c", "prediction_id": "p1"}))
    assert c == Click("u1", "i1", TS, click_id="c", prediction_id="p1")
    assert decode_click(orjson.dumps(c.to_dict())) == c


@pytest.mark.parametrize(("change", "reason"), [
    ({"score": 1.5}, "field 'score' 1.5 is outside [0.0, 1.0]"),
    ({"score": -0.1}, "field 'score' -0.1 is outside [0.0, 1.0]"),
    ({"score": "0.5"}, "field 'score' must be a number, got str"),
    ({"score": True}, "field 'score' must be a number, got bool"),
    ({"score": None}, "missing field 'score'"),
    ({"ts": 1.5e12}, "field 'ts' must be an integer (epoch milliseconds), got float"),
    ({"ts": 1_700_000_000}, "field 'ts' 1700000000 is outside"),
    ({"ts": 5_000_000_000_000}, "field 'ts' 5000000000000 is outside"),
    ({"ts": True}, "field 'ts' must be an integer"),
    ({"user_id": 7}, "field 'user_id' must be a string, got int"),
    ({"user_id": ""}, "field 'user_id' must not be empty"),
    ({"item_id": "x" * (MAX_ID_LEN + 1)}, "field 'item_id' is longer than 256 characters"),
    ({"prediction_id": None}, "missing field 'prediction_id'"),
    ({"model_id": None}, "missing field 'model_id'"),
    ({"position": -1}, "field 'position' must be a non-negative integer"),
    ({"propensity": 2}, "field 'propensity' 2 is outside [0.0, 1.0]"),
    ({"features": [1]}, "field 'features' must be an object"),
])
def test_invalid_predictions(change: dict[str, object], reason: str) -> None:
    with pytest.raises(ContractError) as err:
        decode_prediction(orjson.dumps({**PRED, **change}))
    assert err.value.reason.startswith(reason)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"not json", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'"text"', "expected a JSON object, got str"),
    (b"", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (orjson.dumps({**CLICK, "ts": "2026-01-01"}), "field 'ts' must be an integer"),
    (orjson.dumps({"item_id": "i", "ts": TS}), "missing field 'user_id'"),
    (orjson.dumps({**CLICK, "request_id": 3}), "field 'request_id' must be a string"),
    (b"{" + b" " * 70_000 + b"}", "record is 70002 bytes"),
])
def test_invalid_clicks(raw: bytes, reason: str) -> None:
    with pytest.raises(ContractError) as err:
        decode_click(raw)
    assert err.value.reason.startswith(reason)
